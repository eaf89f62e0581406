"""fit(): the run folder, the exported model card, exact resume (also of a state and log of an earlier geosr), the
divergence guard in a run, atomic writes, content-only mode, the discriminator's logits in log.csv."""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import pytest
import torch

from geosr.checkpoint import init_from_model, load_generator, read_card, save_generator
from geosr.errors import DataError
from geosr.models import Generator
from geosr.training import build as buildmod
from geosr.training import guard as guardmod
from geosr.training import loop as loopmod
from geosr.training.config import ConfigError, TrainConfig
from geosr.training.configfile import resume_config
from geosr.training.loop import TrainingDiverged, fit, run_paths
from geosr.training.state import LOG_COLUMNS, load_state, read_log, save_state
from geosr.training.vgg import VGGFeatures


def tiny(data, out, **kw) -> TrainConfig:
    """A model and run small enough for a few CPU steps per second."""
    settings = dict(
        data=str(data),
        out=str(out),
        scale=2,
        channels=16,
        n_blocks=1,
        refiner_base=8,
        d_base=8,
        d_blocks=2,
        patch_size=32,
        batch_size=4,
        perceptual_weight=0.0,
        precision="fp32",
        val_every=0,
        val_images=2,
        device="cpu",
    )
    settings.update(kw)
    return TrainConfig(**settings).validate()


def test_a_run_writes_its_folder_and_a_model_file_with_a_full_card(scene_folder, tmp_path):
    cfg = tiny(scene_folder, tmp_path / "run", max_steps=3, val_every_steps=2)
    result = fit(cfg)
    paths = run_paths(tmp_path / "run")
    assert result.steps == 3 and result.stopped == "max_steps"
    assert all(paths[k].is_file() for k in ("config", "log", "state", "best", "last"))
    rows = read_log(paths["log"])
    assert [r["kind"] for r in rows] == ["train", "train", "val", "train", "val"]
    assert float(rows[2]["val_psnr_bicubic"]) > 15 and rows[2]["val_images"] == "2"
    model, card = load_generator(result.model)
    assert card.config == cfg.generator_config() and card.tile_size == 16 and card.overlap == 4
    t = card.training
    for key in ("data", "split", "steps", "epochs", "hardware", "wall_time_s", "losses", "precision", "device"):
        assert key in t, key
    vals = [r for r in rows if r["kind"] == "val"]
    best_step = int(max(vals, key=lambda r: float(r["val_psnr"]))["step"])
    assert t["steps"] == best_step and t["split"] == "train" and t["losses"]["adversarial"] == 0.1
    assert t["attention_dropout"] == 0.1
    assert {"val_psnr", "val_ssim", "val_psnr_bicubic", "val_ssim_bicubic"} <= set(card.metrics)
    assert read_card(paths["last"]).training["steps"] == 3
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_two_plus_two_steps_with_resume_equal_four_steps(scene_folder, tmp_path):
    common = dict(diffusion=True, ema=True, feature_matching_weight=0.5, lr_decay_steps=[3])
    straight = tiny(scene_folder, tmp_path / "a", max_steps=4, **common)
    fit(straight)
    first = tiny(scene_folder, tmp_path / "b", max_steps=2, **common)
    fit(first)
    fit(resume_config(first, {"max_steps": 4}), resume=True)
    a, b = load_state(run_paths(tmp_path / "a")["state"]), load_state(run_paths(tmp_path / "b")["state"])
    assert a["step"] == b["step"] == 4
    for net in ("g", "d"):
        for k, v in a[net].items():
            assert torch.equal(v, b[net][k]), (net, k)
    for k, v in a["ema"]["model"].items():
        assert torch.equal(v, b["ema"]["model"][k]), k
    assert a["opt_g"]["state"][0]["exp_avg"].equal(b["opt_g"]["state"][0]["exp_avg"])
    assert a["opt_g"]["param_groups"][0]["lr"] == b["opt_g"]["param_groups"][0]["lr"]
    rows_a = [r for r in read_log(run_paths(tmp_path / "a")["log"]) if r["kind"] == "train"]
    rows_b = [r for r in read_log(run_paths(tmp_path / "b")["log"]) if r["kind"] == "train"]
    assert [r["g_total"] for r in rows_a] == [r["g_total"] for r in rows_b]  # the same curve, no duplicate rows
    assert rows_b[-1]["lr_g"] == "1e-05"


def test_a_best_model_exported_after_the_resumed_state_is_replaced_only_by_a_better_one(scene_folder, tmp_path):
    """A run killed between a new best.safetensors and its next saved state: the steps run again after the resume
    validate anew, and a worse model of theirs must not replace the better one on disk."""
    first = tiny(scene_folder, tmp_path / "run", max_steps=2, val_every_steps=1)
    fit(first)
    paths = run_paths(tmp_path / "run")
    model, card = load_generator(paths["best"])
    later = replace(card, training={**card.training, "steps": 3}, metrics={**card.metrics, "val_psnr": 99.0})
    save_generator(paths["best"], model, later)  # what the killed stretch of steps 3.. exported
    resumed = fit(resume_config(first, {"max_steps": 4}), resume=True)
    assert read_card(paths["best"]).metrics["val_psnr"] == 99.0 and resumed.best_psnr == 99.0
    vals = [r for r in read_log(paths["log"]) if r["kind"] == "val"]
    assert [int(r["step"]) for r in vals] == [1, 2, 3, 4]  # validated anew, none of them beat 99 dB


def test_a_resume_on_other_validation_images_chooses_its_best_anew(scene_folder, tmp_path, caplog):
    first = tiny(scene_folder, tmp_path / "run", max_steps=1, val_every_steps=1, val_images=2)
    fit(first)
    paths = run_paths(tmp_path / "run")
    model, card = load_generator(paths["best"])
    save_generator(paths["best"], model, replace(card, metrics={**card.metrics, "val_psnr": 99.0}))
    state = load_state(paths["state"])
    state["best"]["val_psnr"] = 99.0  # a best no validation on other images could reach
    save_state(paths["state"], state)
    with caplog.at_level("WARNING", logger="geosr"):
        resumed = fit(resume_config(first, {"max_steps": 2, "val_images": 3}), resume=True)
    assert "val_images changed since the run chose its best model" in caplog.text
    assert resumed.best_psnr < 99.0 and read_card(paths["best"]).metrics["val_images"] == 3


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(scene_folder, tmp_path, monkeypatch):
    real_step = loopmod.generator_step
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        sr, terms = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms["mse"] = torch.tensor(float("nan"))
        return sr, terms

    monkeypatch.setattr(loopmod, "generator_step", poisoned)
    cfg = tiny(scene_folder, tmp_path / "run", max_steps=5, checkpoint_every_steps=2)
    with pytest.raises(TrainingDiverged, match=r"step 3: loss mse = nan.*last good checkpoint.*step 2"):
        fit(cfg)
    assert load_state(run_paths(tmp_path / "run")["state"])["step"] == 2


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "state.pt"
    save_state(path, {"format": 1, "step": 2})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_state(path, {"format": 1, "step": 4})
    assert load_state(path)["step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]  # no temporary file left behind


def test_content_only_mode_builds_no_discriminator(scene_folder, tmp_path, monkeypatch):
    def no_d(*args, **kwargs):
        raise AssertionError("the discriminator was built")

    monkeypatch.setattr(buildmod, "Discriminator", no_d)
    cfg = tiny(scene_folder, tmp_path / "run", max_steps=2, adversarial_weight=0.0, ema=False)
    fit(cfg)
    state = load_state(run_paths(tmp_path / "run")["state"])
    assert state["d"] is None and state["opt_d"] is None
    rows = [r for r in read_log(run_paths(tmp_path / "run")["log"]) if r["kind"] == "train"]
    assert rows[0]["adversarial"] == rows[0]["d_total"] == rows[0]["d_logit_real"] == rows[0]["d_logit_fake"] == ""


def test_perceptual_loss_with_an_explicit_test_vgg(scene_folder, tmp_path):
    cfg = tiny(scene_folder, tmp_path / "run", max_steps=1, perceptual_weight=0.5, vgg_layer="conv2_2")
    fit(cfg, vgg=VGGFeatures.random_for_tests("conv2_2"))
    rows = read_log(run_paths(tmp_path / "run")["log"])
    assert float(rows[0]["perceptual"]) > 0


def test_refusals(scene_folder, tmp_path):
    cfg = tiny(scene_folder, tmp_path / "run", max_steps=1)
    fit(cfg)
    with pytest.raises(ConfigError, match="already holds a training run; continue it with --resume"):
        fit(cfg)
    with pytest.raises(ConfigError, match="cannot change n_blocks"):
        resume_config(cfg, {"n_blocks": 3})
    edited = resume_config(replace(cfg, n_blocks=2, patch_size=48), {"max_steps": 2})  # config.toml edited by hand
    with pytest.raises(ConfigError, match=r"config.toml: patch_size = 48 \(the state: 32\); n_blocks = 2"):
        fit(edited, resume=True)
    with pytest.raises(DataError, match="train split is empty"):
        only_val = tmp_path / "only_val"
        (only_val / "a").mkdir(parents=True)
        for p in (scene_folder / "fields").glob("fields5*.tif"):
            (only_val / "a" / p.name.replace("fields", "a")).write_bytes(p.read_bytes())
        fit(tiny(only_val, tmp_path / "run2", max_steps=1))


def test_max_minutes_stops_and_still_saves(scene_folder, tmp_path):
    cfg = tiny(scene_folder, tmp_path / "run", max_minutes=1e-6, val_images=1)
    result = fit(cfg)
    assert result.stopped == "max_minutes" and result.steps == 1
    assert run_paths(tmp_path / "run")["best"].is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_with_a_gradient_scaler_on_cuda(scene_folder, tmp_path):
    cfg = tiny(scene_folder, tmp_path / "run", max_steps=2, precision="fp16", device="cuda")
    fit(cfg)
    state = load_state(run_paths(tmp_path / "run")["state"])
    assert state["scaler"]["scale"] > 0


def test_no_vgg_weights_offline_fails_before_training(scene_folder, tmp_path, monkeypatch):
    from geosr.training.vgg import VGGWeightsError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(buildmod, "PatchDataset", lambda *a, **k: pytest.fail("data decoded before the VGG check"))
    with pytest.raises(VGGWeightsError, match="--perceptual-weight 0"):
        fit(tiny(scene_folder, tmp_path / "run", max_steps=1, perceptual_weight=0.5))


def test_an_exploding_mse_stops_the_run_and_keeps_the_state_from_before(scene_folder, tmp_path, monkeypatch):
    real_step = loopmod.generator_step
    calls = {"n": 0}

    def exploding(*args, **kwargs):
        sr, terms = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 6:
            terms["mse"] = terms["mse"] * 10.0 ** calls["n"]
        return sr, terms

    monkeypatch.setattr(loopmod, "generator_step", exploding)
    monkeypatch.setattr(guardmod, "GUARD_WARMUP", 3)
    cfg = tiny(scene_folder, tmp_path / "run", max_steps=30, checkpoint_every_steps=2)
    with pytest.raises(TrainingDiverged, match=r"step 15: the MSE .* for 10 steps: the generator diverged.*step 4"):
        fit(cfg)
    assert load_state(run_paths(tmp_path / "run")["state"])["step"] == 4


def test_a_resumed_run_takes_the_new_learning_rate_and_milestones(scene_folder, tmp_path):
    first = tiny(scene_folder, tmp_path / "run", max_steps=2, lr_g=1e-4, adversarial_weight=0.0)
    fit(first)
    fit(resume_config(first, {"max_steps": 5, "lr_g": 4e-4, "lr_decay_steps": [4], "lr_gamma": 0.5}), resume=True)
    lrs = {
        int(r["step"]): float(r["lr_g"]) for r in read_log(run_paths(tmp_path / "run")["log"]) if r["kind"] == "train"
    }
    assert lrs[1] == lrs[2] == 1e-4  # before the resume, as saved
    assert lrs[3] == 4e-4 and lrs[5] == 2e-4  # the new rate, decayed at the new milestone (after step 4)


def test_a_cosine_schedule_warms_up_decays_to_its_floor_and_survives_a_resume(scene_folder, tmp_path):
    """A cosine run with a warm-up, stopped and resumed, logs the rates of the uninterrupted schedule: rising over
    the warm-up, then falling to lr * lr_min_factor at the last step; the L1 term is logged when it has a weight."""
    settings = dict(
        adversarial_weight=0.0,
        lr_g=1e-3,
        lr_schedule="cosine",
        lr_warmup_steps=2,
        lr_min_factor=0.1,
        l1_weight=1.0,
        mse_weight=0.0,
    )
    first = tiny(scene_folder, tmp_path / "run", max_steps=3, **settings)
    fit(first)
    fit(resume_config(first, {"max_steps": 6}), resume=True)
    rows = [r for r in read_log(run_paths(tmp_path / "run")["log"]) if r["kind"] == "train"]
    lrs = [float(r["lr_g"]) for r in rows]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[1] == pytest.approx(1e-3)  # warm-up: 1/2, 2/2
    assert lrs[1] == lrs[2] > lrs[3] > lrs[4] > lrs[5]  # the cosine starts at its top after the warm-up
    # max_steps 3 at first, 6 after the resume: the schedule is the resumed run's, over 6 steps, to its floor
    assert lrs[4] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 2 / 3))))
    assert lrs[5] == pytest.approx(1e-3 * 0.1)
    assert all(float(r["l1"]) > 0 for r in rows)


def test_init_from_copies_every_matching_weight_of_another_scale(scene_folder, tmp_path):
    x4 = fit(tiny(scene_folder, tmp_path / "x4", scale=4, max_steps=1, adversarial_weight=0.0))
    source, _ = load_generator(x4.model)
    cfg = tiny(scene_folder, tmp_path / "x2", scale=2, max_steps=1, adversarial_weight=0.0, init_from=str(x4.model))
    target = Generator(cfg.generator_config())
    report = init_from_model(target, x4.model)
    own, theirs = target.state_dict(), source.state_dict()
    same = [k for k in own if k in theirs and own[k].shape == theirs[k].shape]
    assert same and all(torch.equal(own[k], theirs[k]) for k in same)
    assert len(same) < len(theirs)  # the second x2 stage of the x4 upsampler has no place in an x2 model
    assert report["copied"] == len(same) and report["total"] == len(own)
    # the run records where it started from
    info = read_card(fit(cfg).model).training["initialised_from"]
    assert info == report


def test_log_csv_holds_the_discriminators_mean_logits_once_it_trains(scene_folder, tmp_path):
    """Warm-up epoch (5 steps: 20 train images, batch 4) without D, then GAN steps: D's mean logits on real and fake
    are logged from the first D step on, beside its losses."""
    cfg = tiny(scene_folder, tmp_path / "run", max_steps=7, pretrain_epochs=1)
    fit(cfg)
    rows = [r for r in read_log(run_paths(tmp_path / "run")["log"]) if r["kind"] == "train"]
    assert [int(r["step"]) for r in rows] == list(range(1, 8))
    for r in rows[:5]:
        assert r["d_logit_real"] == r["d_logit_fake"] == r["d_total"] == ""
    for r in rows[5:]:
        real, fake = float(r["d_logit_real"]), float(r["d_logit_fake"])
        assert abs(real) < 50 and abs(fake) < 50 and real != fake and r["d_total"] != ""


def test_a_state_and_log_of_an_earlier_geosr_resume_exactly(scene_folder, tmp_path):
    """A format-1 state without the keys added later (the guard's history, the last validation) and a log.csv
    without the logit columns: the run resumes to the same weights as an uninterrupted one, and the log gains the
    new columns, empty in the old rows."""
    straight = fit(tiny(scene_folder, tmp_path / "a", max_steps=4, val_every_steps=2))
    first = tiny(scene_folder, tmp_path / "b", max_steps=2, val_every_steps=2)
    fit(first)
    paths = run_paths(tmp_path / "b")
    state = load_state(paths["state"])
    del state["guard"], state["last_val"]
    save_state(paths["state"], state)
    old_columns = [c for c in LOG_COLUMNS if not c.startswith("d_logit")]
    rows = read_log(paths["log"])
    with paths["log"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    resumed = fit(resume_config(first, {"max_steps": 4}), resume=True)
    a, b = load_state(run_paths(tmp_path / "a")["state"]), load_state(paths["state"])
    assert b["step"] == 4 and all(torch.equal(v, b["g"][k]) for k, v in a["g"].items())
    assert all(torch.equal(v, b["d"][k]) for k, v in a["d"].items())
    assert resumed.best_psnr == straight.best_psnr
    with paths["log"].open(newline="") as f:
        assert next(csv.reader(f)) == list(LOG_COLUMNS)
    log_b = read_log(paths["log"])
    assert [r["kind"] for r in log_b] == ["train", "train", "val", "train", "train", "val"]
    assert log_b[0]["d_logit_real"] == "" and log_b[3]["d_logit_real"] != ""
    assert [r["g_total"] for r in log_b] == [r["g_total"] for r in read_log(run_paths(tmp_path / "a")["log"])]

"""The model card of a run's exported files: provenance from RunFacts, the config's settings, rounded metrics."""

from __future__ import annotations

from geosr.checkpoint import ModelCard
from geosr.training.card import METRICS_PROTOCOL, RunFacts, model_card
from geosr.training.config import TrainConfig

FACTS = RunFacts(
    data="/d",
    layout="folders",
    split_rule="per class",
    train_images=80,
    val_data="/d",
    val_images=10,
    steps_per_epoch=5,
    hardware="test CPU",
    device="cpu",
    processes=1,
    precision="bf16",
    lr_decay_steps=[250],
    discriminator=False,
    ema=True,
    initialised_from=None,
    run_dir="/runs/x",
    source_dtypes=["uint16", "uint8"],
    extra_data=[],
)


def test_the_card_carries_the_config_the_facts_and_the_rounded_metrics():
    cfg = TrainConfig(
        data="/d",
        scale=2,
        patch_size=64,
        adversarial_weight=0.0,
        perceptual_weight=0.0,
        band_names=["r", "g", "b"],
        overlap=4,
    ).validate()
    card = model_card(cfg, FACTS, step=12, wall_time_s=61.26, metrics={"val_psnr": 30.123456, "val_images": 10})
    assert isinstance(card, ModelCard) and card.config == cfg.generator_config()
    assert (card.name, card.bands, card.tile_size, card.overlap) == ("degan-x2", ["r", "g", "b"], 32, 4)
    assert card.metrics == {"val_psnr": 30.1235, "val_images": 10, "protocol": METRICS_PROTOCOL}
    t = card.training
    assert (t["steps"], t["epochs"], t["wall_time_s"], t["precision"]) == (12, 2.4, 61.3, "bf16")
    assert t["optimizer"]["lr_d"] is None and t["optimizer"]["lr_decay_steps"] == [250]  # no discriminator
    assert t["weights"] == "ema" and t["ema_decay"] == cfg.ema_decay
    assert "uint16, uint8: per image and band" in card.radiometry["training_data"]
    card.validate()


def test_no_metrics_before_the_first_validation_and_no_note_for_uint8_data():
    cfg = TrainConfig(data="/d", scale=2, patch_size=64).validate()
    facts = RunFacts(**{**FACTS.__dict__, "source_dtypes": ["uint8"], "discriminator": True})
    card = model_card(cfg, facts, step=0, wall_time_s=0.0, metrics=None)
    assert card.metrics == {} and "training_data" not in card.radiometry
    assert card.training["optimizer"]["lr_d"] == cfg.lr_d

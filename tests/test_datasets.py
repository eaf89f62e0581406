"""geosr.datasets: data set layouts, their deterministic splits, reading images, picking images evenly."""

from __future__ import annotations

import logging
import os
import shutil
import warnings

import numpy as np
import pytest
from testdata import smooth_image, write_image

from geosr.datasets import check_pairs, default_bands, find_images, read_image, split_of_index, spread
from geosr.errors import DataError


def test_folder_rule_is_80_10_10_with_train_taking_the_remainder():
    assert [split_of_index(i, 10) for i in range(10)] == ["train"] * 8 + ["val", "test"]
    counts = [split_of_index(i, 25) for i in range(25)]
    assert (counts.count("train"), counts.count("val"), counts.count("test")) == (21, 2, 2)
    assert {split_of_index(i, 7) for i in range(7)} == {"train"}


def test_ucmerced_layout_splits_by_number(scene_folder):
    train = find_images(scene_folder, "train")
    val = find_images(scene_folder, "val")
    assert train.layout == "ucmerced" and len(train) == 20 and len(val) == 4
    assert {it.name for it in val.items} == {"fields50", "fields51", "roofs50", "roofs51"}
    assert len(find_images(scene_folder, "test")) == 0
    assert len(find_images(scene_folder, "all")) == 24


def test_a_folder_given_through_dot_dot_or_a_hidden_folder_is_searched(scene_folder, tmp_path, monkeypatch):
    """Hidden files and folders are skipped below the data folder only: ``../data`` and ``~/.cache/x`` hold images."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    relative = os.path.relpath(scene_folder, work)
    assert relative.startswith("..")
    assert len(find_images(relative, "val")) == 4
    hidden = tmp_path / ".cache" / "scenes"
    shutil.copytree(scene_folder, hidden)
    (hidden / "fields" / ".fields52.tif").write_bytes((hidden / "fields" / "fields50.tif").read_bytes())
    assert len(find_images(hidden, "val")) == 4


def test_linked_class_folders_are_searched_once_each(scene_folder, tmp_path):
    """A data set of class folders linked from an archive: the links are followed; a link back up adds nothing."""
    view = tmp_path / "view"
    view.mkdir()
    (view / "fields").symlink_to(scene_folder / "fields", target_is_directory=True)
    shutil.copytree(scene_folder / "roofs", view / "roofs")
    (view / "roofs" / "loop").symlink_to(view, target_is_directory=True)
    found = find_images(view, "all")
    assert found.layout == "ucmerced" and len(found) == 24 and found.classes == ["fields", "roofs"]


def test_class_folders_and_flat_folders(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("Beach", "Port"):
        for i in range(10):
            image = smooth_image(3, 32, 32, seed=rng, look="scene")
            write_image(tmp_path / "aid" / cls / f"{cls.lower()}_{i + 1}.jpg", image)
    val = find_images(tmp_path / "aid", "val")
    assert val.layout == "folders" and [it.label for it in val.items] == ["Beach", "Port"]
    # names sorted as strings: _1, _10, _2, ..., _9 -> val is the 9th name, test the 10th
    assert [it.name for it in val.items] == ["beach_8", "port_8"]
    assert [it.name for it in find_images(tmp_path / "aid", "test").items] == ["beach_9", "port_9"]
    for i in range(3):
        write_image(tmp_path / "flat" / f"tile{i}.png", smooth_image(3, 32, 32, seed=rng, look="scene"))
    flat = find_images(tmp_path / "flat", "train")
    assert len(flat) == 3 and flat.classes == [""]


def test_paired_layout_with_split_folders_and_lr_names(tmp_path, caplog):
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for i in range(2):
            hr = smooth_image(3, 64, 64, seed=rng, look="scene")
            write_image(tmp_path / split / "HR" / f"{i:04d}.png", hr)
            write_image(tmp_path / split / "LR_x4" / f"{i:04d}x4.png", hr[:, ::4, ::4].copy())
            write_image(tmp_path / split / "LR_x2" / f"{i:04d}.png", hr[:, ::2, ::2].copy())
    val = find_images(tmp_path, "val")
    assert val.layout == "paired" and len(val) == 2
    item = val.items[0]
    assert item.lr_path(4).name == "0000x4.png" and item.lr_path(2).name == "0000.png"
    assert item.lr_path(3) is None
    assert len(find_images(tmp_path, "all")) == 4
    check_pairs(val.layout, val.items, 4)  # complete
    with caplog.at_level(logging.WARNING, logger="geosr"):
        check_pairs(val.layout, val.items, 3)  # no LR_x3 folder: bicubic LR, said once
    assert "no LR_x3 folder beside HR: the x3 LR images are made by bicubic downsampling" in caplog.text
    (tmp_path / "val" / "LR_x2" / "0001.png").rename(tmp_path / "val" / "LR_x2" / "0001_x2.png")
    val = find_images(tmp_path, "val")
    with pytest.raises(DataError, match=r"0001.png: no x2 LR image in .*LR_x2 \(looked for 0001\.\* and 0001x2\.\*"):
        check_pairs(val.layout, val.items, 2)


def test_a_ucmerced_folder_with_a_stray_file_is_split_by_the_folder_rule_with_a_warning(scene_folder, caplog):
    shutil.copy(scene_folder / "fields" / "fields00.tif", scene_folder / "fields" / "fields00 (copy).tif")
    with caplog.at_level(logging.WARNING, logger="geosr"):
        assert find_images(scene_folder, "train").layout == "folders"
        find_images(scene_folder, "val")
    assert caplog.text.count("not named as UC Merced names its images") == 1  # once per folder
    assert "fields00 (copy).tif is not named" in caplog.text and "not UC Merced's standard split" in caplog.text


def test_errors_name_the_folder_and_remedy(tmp_path):
    with pytest.raises(DataError, match="no such data folder"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        find_images(tmp_path / "empty")
    with pytest.raises(DataError, match="split 'dev'"):
        find_images(tmp_path, "dev")


def test_bands_are_checked_and_plain_images_raise_no_georeferencing_warning(tmp_path):
    rng = np.random.default_rng(3)
    rgba = np.concatenate([smooth_image(3, 32, 32, seed=rng, look="scene"), np.full((1, 32, 32), 255, np.uint8)])
    path = write_image(tmp_path / "rgba.png", rgba)
    assert default_bands(path, 3) == [1, 2, 3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_image(path, [1, 2, 3]).shape == (3, 32, 32)
    assert not caught
    with pytest.raises(DataError, match="has 4 bands; --bands takes 1-based indices up to 4"):
        read_image(path, [1, 5])
    fewer = "has 4 bands but the model takes 6, and training takes 6 bands of each image .*leave out"
    with pytest.raises(DataError, match=fewer):
        default_bands(path, 6)
    assert default_bands(path, 6, fewer=True) == [1, 2, 3, 4]  # evaluation: all of them, run as upscale runs them


def test_spread_picks_evenly():
    assert spread(list(range(10)), 0) == list(range(10))
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread(list(range(210)), 3) == [0, 70, 140]

"""--extra-data: the extra folders' images join the training items (each --extra-repeat times, read once), the
validation images stay the main data's, and the folders are checked before any decoding."""

from __future__ import annotations

import numpy as np
import pytest
from testdata import write_geotiff

from geosr.errors import DataError
from geosr.training.build import build_data
from geosr.training.config import ConfigError, TrainConfig
from geosr.training.distributed import DistContext


def tiles(root, n=3, bands=3):
    """``n`` small uint16 GeoTIFF tiles of ``bands`` bands, as another sensor's."""
    rng = np.random.default_rng(7)
    for i in range(n):
        write_geotiff(root / f"tile{i}.tif", rng.integers(0, 4000, size=(bands, 40, 40)).astype(np.uint16))
    return root


def config(data, **kw) -> TrainConfig:
    return TrainConfig(data=str(data), scale=2, patch_size=32, batch_size=4, **kw).validate()


def test_extra_images_join_the_train_items_repeated_and_are_read_once(scene_folder, tmp_path):
    extra = tiles(tmp_path / "sensor")
    data = build_data(config(scene_folder, extra_data=[str(extra)], extra_repeat=2), DistContext())
    assert len(data.train_set) == 20 and len(data.val_set) == 4  # the main data's splits, unchanged
    assert len(data.dataset) == 20 + 3 * 2
    assert len({id(s) for s in data.dataset.sources}) == 23  # a repeated image is described and cached once
    assert {s.dtype for s in data.dataset.sources} == {"uint8", "uint16"}
    assert data.extra_provenance() == [{"data": str(extra), "layout": "folders", "images": 3, "repeat": 2}]
    assert data.steps_per_epoch == 26 // 4


def test_extra_folders_are_absolute_and_may_not_repeat_or_overlap_the_data(scene_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiles(tmp_path / "sensor")
    assert config(scene_folder, extra_data=["sensor"]).extra_data == [str(tmp_path / "sensor")]
    with pytest.raises(ConfigError, match="sensor is given twice"):
        config(scene_folder, extra_data=["sensor", str(tmp_path / "sensor")])
    with pytest.raises(ConfigError, match="overlaps the --data folder"):
        config(scene_folder, extra_data=[str(scene_folder / "fields")])
    with pytest.raises(ConfigError, match="overlaps the --val-data folder"):
        config(scene_folder, extra_data=["sensor"], val_data=str(tmp_path / "sensor"))
    with pytest.raises(ConfigError, match="extra_repeat must be at least 1, got 0"):
        config(scene_folder, extra_repeat=0)


def test_an_extra_folder_without_images_or_bands_is_refused(scene_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"^--extra-data .*empty: no images found"):
        build_data(config(scene_folder, extra_data=[str(tmp_path / "empty")]), DistContext())
    one_band = tiles(tmp_path / "pan", bands=1)
    with pytest.raises(DataError, match="tile0.tif has 1 band, training takes bands 1,2,3: write 3-band tiles"):
        build_data(config(scene_folder, extra_data=[str(one_band)]), DistContext())

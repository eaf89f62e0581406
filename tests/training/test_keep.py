"""geosr.training.keep: what a cycle's record says about how it trained comes from its run folder."""

from __future__ import annotations

from geosr.training.config import TrainConfig
from geosr.training.keep import _content_loss


def test_a_cycle_records_the_content_loss_its_run_trained_with(tmp_path):
    """The run's config.toml, as geosr train writes it, decides; not the options of the invocation that ends it."""
    (tmp_path / "config.toml").write_text(TrainConfig(mse_weight=0.0, l1_weight=1.0).to_toml())
    assert _content_loss(tmp_path) == {"mse_weight": 0.0, "l1_weight": 1.0}

"""geosr.rowstream: the consistency projection of an image that arrives as rows, in blocks with a halo."""

import numpy as np
import pytest
import torch
from testdata import consistency_pair as _pair

from geosr.consistency import project
from geosr.rowstream import RowStream, project_rows


@pytest.mark.parametrize("chunk", [1, 5, 13, 200])
def test_row_stream_equals_the_whole_image(chunk):
    scale = 4
    hr, lr = _pair(scale, h=47, w=31)
    valid = np.ones(lr.shape, bool)
    valid[1, 30:, :4] = False
    whole = project(hr, lr, scale, valid)
    stream, parts = RowStream(scale, block=8), []
    for r0 in range(0, lr.shape[1], chunk):
        r1 = min(lr.shape[1], r0 + chunk)
        parts.append(stream.push(hr[:, scale * r0 : scale * r1], lr[:, r0:r1], valid[:, r0:r1]))
    parts.append(stream.finish())
    rows = np.concatenate(parts, axis=1)
    assert rows.shape == whole.shape
    np.testing.assert_allclose(rows, whole, atol=2e-5)  # 2e-5 of the model's range: 0.003 grey levels
    # the blocks do not depend on how the rows arrived: pushed whole, the same values bit for bit
    np.testing.assert_array_equal(rows, project_rows(hr, lr, scale, valid, block=8))


def test_wide_images_are_corrected_in_column_windows_that_match_the_whole_image():
    """Windows of equal width are stacked into one product; the result matches one projection of the whole image."""
    scale = 2
    hr, lr = _pair(scale, h=30, w=250)  # 250 columns: several 64-column blocks and two narrower edge windows
    whole = project(hr, lr, scale)
    rows = project_rows(hr, lr, scale)
    np.testing.assert_allclose(rows, whole, atol=2e-5)


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_the_projection_runs_on_the_models_device(device):
    hr, lr = _pair(4, h=70, w=90)
    valid = np.ones(lr.shape, bool)
    valid[2, :9, :9] = False
    on_cpu = project_rows(hr, lr, 4, valid)
    on_device = project_rows(hr, lr, 4, valid, device=device)
    assert isinstance(on_device, np.ndarray) and on_device.dtype == np.float32
    np.testing.assert_allclose(on_device, on_cpu, atol=2e-5)


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_windows_corrected_on_several_threads_give_the_same_values_bit_for_bit(workers):
    """The windows of a block are independent: corrected on helper threads beside the stream's, in any number of
    parts, the values are those of one thread, bit for bit (masked pixels and clipping included)."""
    scale = 4
    hr, lr = _pair(scale, h=40, w=420)  # 420 columns: five stacked 64-column windows and two narrower edge ones
    hr = hr * 1.6  # beyond the range in places: bands that need a second and third round
    valid = np.ones(lr.shape, bool)
    valid[0, 5:20, 100:180] = False
    one = project_rows(hr, lr, scale, valid)
    np.testing.assert_array_equal(project_rows(hr, lr, scale, valid, workers=workers), one)


def test_a_failure_on_a_helper_thread_reaches_the_stream_once_every_part_has_ended(monkeypatch):
    """A part that fails on a helper thread fails the stream with its error, and only once the part beside it on
    the stream's own thread has ended (nothing still writes into rows handed on)."""
    import threading
    import time

    import geosr.rowstream as rowstream

    events = []

    def project(ys, *args, **kwargs):
        if threading.current_thread().name.startswith("geosr-correction"):
            events.append("helper failed")
            raise RuntimeError("a helper's part fails")
        time.sleep(0.2)  # the stream's own part ends well after the helper's failure
        events.append("own part ended")
        return ys

    monkeypatch.setattr(rowstream, "_project", project)
    hr, lr = _pair(2, h=20, w=300)
    with pytest.raises(RuntimeError, match="a helper's part fails"):
        stream = RowStream(2, workers=2)
        stream.push(hr, lr)
        stream.finish()
    # the block's first window alone, on the stream's thread; then its three stacked windows in two parts; the last
    # (narrower) window is never reached
    assert sorted(events) == ["helper failed", "own part ended", "own part ended"]


def test_helper_threads_compute_on_one_intra_op_thread_whatever_the_process_sets():
    """The helpers correct on one intra-op thread each (more would share the cores with the threads beside them),
    also when the process sets another number after they started."""
    from geosr.rowstream import _helpers

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pool = _helpers(2)
        assert [f.result() for f in [pool.submit(torch.get_num_threads) for _ in range(4)]] == [1] * 4
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

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

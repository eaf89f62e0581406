"""geosr.consistency: the projection onto outputs whose degradation gives back the input."""

from pathlib import Path

import numpy as np
import pytest
import torch
from testdata import consistency_pair as _pair

from geosr.consistency import (
    _axis_operators,
    _degraded,
    _project,
    _window,
    degrade,
    project,
    residual,
)
from geosr.resize import downscale


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_degrade_is_the_training_degradation(scale):
    hr, _ = _pair(scale)
    expected = downscale(torch.from_numpy(hr)[None], scale).numpy()[0]
    np.testing.assert_allclose(degrade(hr, scale), expected, atol=1e-5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_one_projection_without_clipping_is_exact(scale):
    hr, lr = _pair(scale)
    assert residual(hr, lr, scale) > 0.02
    y = project(hr, lr, scale, value_range=None)
    assert residual(y, lr, scale) < 1e-5
    # the smallest change: the correction lies in the row space of D (orthogonal to D's null space)
    z = project(y + 0.0, lr, scale, value_range=None)
    np.testing.assert_allclose(z, y, atol=1e-5)


def test_clipped_projection_stays_in_range_and_converges():
    hr, lr = _pair(4)
    y = project(hr, lr, 4, iterations=10)
    assert y.min() >= -1 and y.max() <= 1
    assert residual(y, lr, 4) < 1e-4
    assert residual(project(hr, lr, 4, iterations=1), lr, 4) > residual(y, lr, 4)


def test_invalid_input_pixels_do_not_constrain_the_output():
    hr, lr = _pair(2)
    valid = np.ones(lr.shape, bool)
    valid[:, 10:20, 5:15] = False
    garbage = lr.copy()
    garbage[~valid] = 1.0  # a fill value that is not the scene
    y = project(hr, garbage, 2, valid=valid, value_range=None)
    assert residual(y, lr, 2, valid) < 1e-5
    # far from the invalid block the result is the one of the clean input
    clean = project(hr, lr, 2, value_range=None)
    np.testing.assert_allclose(y[:, :, 2 * 22 :], clean[:, :, 2 * 22 :], atol=1e-3)


def test_shapes_are_checked():
    hr, lr = _pair(2)
    with pytest.raises(ValueError, match="does not match"):
        project(hr[:, :-1], lr, 2)
    with pytest.raises(ValueError, match="multiple of the scale"):
        degrade(hr[:, :-1], 2)


def test_bands_that_need_no_clipping_stop_after_one_projection():
    """A band inside the range after its first projection is exact: further rounds would change nothing, and
    stopping it does not change the bands that go on."""
    hr, lr = _pair(4, bands=2)
    hr[0] = np.clip(hr[0], -0.5, 0.5)
    lr[0] = np.clip(degrade(hr[0][None], 4)[0] * 0.9, -0.5, 0.5)  # band 0 stays well inside [-1, 1]
    y = project(hr, lr, 4, iterations=3)
    np.testing.assert_allclose(y[0], project(hr[:1], lr[:1], 4, value_range=None)[0], atol=1e-6)
    np.testing.assert_array_equal(y[1], project(hr[1:], lr[1:], 4, iterations=3)[0])


# --- the shortcuts of a window: the values of the plain products, bit for bit --------------------------------------


def _plain(y, x, valid, scale: int, iterations: int = 3, value_range=(-1.0, 1.0)):
    """The projection of a window as whole matrix products, every value of every round (geosr before the shortcuts
    of ``_window``): what the shortcuts must give bit for bit."""
    (dh, ph), (dw, pw) = (tuple(torch.tensor(m) for m in _axis_operators(n, scale)) for n in x.shape[1:])
    bands = torch.arange(len(y))
    for _ in range(iterations):
        part = y[bands]
        r = x[bands] - dh @ part @ dw.T
        part += ph @ (r if valid is None else torch.where(valid[bands], r, 0.0)) @ pw.T
        clipped = (part.amin(dim=(1, 2)) < value_range[0]) | (part.amax(dim=(1, 2)) > value_range[1])
        y[bands] = part.clamp_(*value_range)
        bands = bands[clipped]
        if not len(bands):
            break
    return y


def _window_data(scale: int, h: int, w: int, seed: int):
    """Model values of a window: band 0 well inside the range (one round), band 1 saturated (every round), band 2
    with a hole of invalid input pixels, band 3 inside the range but in its top left corner (outside the block kept),
    which another round must correct; the input with some noise."""
    hr, lr = _pair(scale, h=h, w=w, bands=4, seed=seed)
    hr[[0, 3]] *= 0.3
    lr[[0, 3]] = np.clip(degrade(hr[[0, 3]], scale) + 0.01, -1, 1)
    hr[3, : 5 * scale, : 5 * scale], lr[3, :5, :5] = 0.99, 1.0
    hr[1] = np.clip(hr[1] * 3, -1, 1)
    lr[1] = np.clip(lr[1] * 3, -1, 1)
    valid = np.ones(lr.shape, bool)
    valid[2, h // 3 : h // 2, : w // 3] = False
    return torch.from_numpy(hr), torch.from_numpy(lr), torch.from_numpy(valid)


def _intel_cpu() -> bool:
    """Whether this machine's CPU is Intel's (Linux: /proc/cpuinfo's vendor_id)."""
    try:
        return "GenuineIntel" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.parametrize(
    "scale, rows, cols",
    [
        (4, (40, 296), (40, 296)),  # an inner window of RowStream: block 64, halo 10
        (4, (0, 256), (40, 296)),  # the first block of a panel: no ring above
        (2, (20, 148), (0, 128)),  # x2, the first block of a row: no ring on the left
        (3, (30, 222), (30, 222)),
    ],
)
def test_the_window_shortcuts_give_the_values_of_the_whole_products_bit_for_bit(scale, rows, cols):
    """D's products over its nonzero weights and P's products for the kept block (with the ring for the bands that
    go on only) give the kept values that whole products give: the values geosr wrote before, unchanged."""
    n = (rows[1] - rows[0]) // scale + (2 * 10 if rows[0] else 10)
    hr, lr, valid = _window_data(scale, n, n, seed=scale)
    for v in (None, valid):
        expected = _plain(hr.clone(), lr, v, scale)
        got = _project(hr.clone(), lr, v, scale, 3, (-1.0, 1.0), keep=(rows, cols))
        r, c = slice(*rows), slice(*cols)
        assert torch.equal(got[:, r, c], expected[:, r, c])
    if torch.backends.mkl.is_available() and _intel_cpu():  # where MKL runs the products, the shortcuts are taken
        # (on an AMD EPYC, Zen 3, MKL's kernels sum some of these windows' parts in another order than the whole
        # products: the check made once per window shape finds it, and those windows take the whole products)
        win = _window(n, n, scale, rows, cols, torch.device("cpu"))
        assert win.bands is not None and (win.rows, win.cols) == (slice(*rows), slice(*cols))


def test_a_non_finite_model_value_is_corrected_as_by_the_whole_products():
    """An infinity or NaN in the model's output (0 times it is not 0) takes the whole products, whose values the
    shortcut would not give there."""
    hr, lr, _ = _window_data(4, 84, 84, seed=1)
    hr[1, 100, 50], hr[2, 7, 300] = float("inf"), float("nan")
    win = _window(84, 84, 4, (40, 296), (40, 296), torch.device("cpu"))
    assert torch.equal(_degraded(hr, win).view(torch.int32), (win.dh @ hr @ win.dw.T).view(torch.int32))
    expected = _plain(hr.clone(), lr, None, 4)
    got = _project(hr.clone(), lr, None, 4, 3, (-1.0, 1.0), keep=((40, 296), (40, 296)))
    assert torch.equal(got[:, 40:296, 40:296].view(torch.int32), expected[:, 40:296, 40:296].view(torch.int32))


def test_the_ring_error_bound_holds_and_denormal_flushing_is_undone():
    """Two float32 evaluations of (ph @ r) @ pw.T (exact, and with denormal numbers flushed) differ by less than the
    bound _ring_inside allows them; the flushing is switched off again afterwards."""
    from geosr.consistency import _flush_denormals

    win = _window(84, 84, 4, None, None, torch.device("cpu"))
    r = torch.from_numpy(np.random.default_rng(5).normal(0, 0.3, (3, 84, 84)).astype(np.float32))
    exact = win.ph @ r @ win.pw.T
    with _flush_denormals(torch.device("cpu")):
        assert bool(torch.tensor(2.0**-140) * 1.0 == 0)
        flushed = win.ph @ r @ win.pw.T
    assert bool(torch.tensor(2.0**-140) * 1.0 != 0)
    g = 84 * 2.0**-24 / (1 - 84 * 2.0**-24)
    bound = 2 * (2 * g + g * g) * win.sums * r.abs().amax(dim=(1, 2))
    assert ((exact - flushed).abs().amax(dim=(1, 2)) <= bound).all()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("far", [False, True])
def test_the_ring_check_over_p_within_reach_stays_within_its_margin(scale, far):
    """The ring check computes P r over P's weights within RING_REACH of each part of the ring only: the whole
    products differ from it by less than the margin it keeps (its float error bound plus the weights left out),
    also for a residual that lies only out of reach of the ring, where the check sees nothing of it."""
    from geosr.consistency import RING_REACH, _ring_checks

    n, cpu = 84, torch.device("cpu")
    full = _window(n, n, scale, None, None, cpu)
    kept = full._replace(rows=slice(10 * scale, 74 * scale), cols=slice(10 * scale, 74 * scale))
    win = kept._replace(**_ring_checks(kept, scale))
    assert len(win.checks) == 4 and 0 < win.tail < 1e-5
    r = torch.from_numpy(np.random.default_rng(scale).normal(0, 0.3, (3, n, n)).astype(np.float32))
    if far:  # nothing within reach of the top rows and the left columns of the ring
        r[:, : 10 + RING_REACH], r[:, :, : 10 + RING_REACH] = 0, 0
    c = win.ph[win.rows] @ r
    whole = win.ph @ r @ win.pw.T
    g = n * 2.0**-24 / (1 - n * 2.0**-24)
    margin = (2 * (2 * g + g * g) * win.sums + (1 + g) * win.tail) * r.abs().amax(dim=(1, 2))
    for rs, cs, reach, weights in win.checks:
        v = weights @ (r[:, reach] @ win.pw.T) if cs == slice(None) else c[:, :, reach] @ weights
        assert ((v - whole[:, rs, cs]).abs().amax(dim=(1, 2)) <= margin).all()
        if far and rs.start == 0 and cs == slice(None):
            assert v.abs().max() == 0 and whole[:, rs, cs].abs().max() > 0  # the check sees none of it


def test_the_ring_check_says_inside_only_where_the_ring_is_inside():
    """Bands whose ring the check calls inside are inside by the whole products; a band pushed out of the range in
    its ring, beside its kept values, is not called inside."""
    from geosr.consistency import _ring_checks, _ring_inside

    n, scale, cpu = 84, 4, torch.device("cpu")
    full = _window(n, n, scale, None, None, cpu)
    kept = full._replace(rows=slice(40, 296), cols=slice(40, 296))
    win = kept._replace(**_ring_checks(kept, scale))
    rng = np.random.default_rng(3)
    y = torch.from_numpy(rng.uniform(-0.6, 0.6, (4, 336, 336)).astype(np.float32))
    r = torch.from_numpy(rng.normal(0, 0.02, (4, n, n)).astype(np.float32))
    y[1, 10, 20], y[2, 100, 320] = 1.2, -1.2  # in the ring (above; beside), out of the range whatever P r adds
    y[3, 100, 100] = 1.2  # in the kept values: not the ring check's business
    inside = _ring_inside(y, r, win.ph[win.rows] @ r, win, (-1.0, 1.0))
    assert inside.tolist() == [True, False, False, True]
    v = y + win.ph @ r @ win.pw.T
    ring = torch.ones(336, 336, dtype=torch.bool)
    ring[40:296, 40:296] = False
    assert [bool(v[b][ring].abs().max() < 1) for b in range(4)] == [True, False, False, True]

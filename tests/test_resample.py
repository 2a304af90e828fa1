"""models.resample: the Numba polyphase resampler against its NumPy reference and scipy's resample_poly."""
import numpy as np
import pytest
from scipy.signal import resample_poly as scipy_resample_poly

from models.resample import kaiser_window, output_length, resample_poly, resample_poly_reference

RATIOS = [(3, 2), (2, 3), (1, 2), (2, 1), (147, 160), (160, 147), (1000, 1001), (1001, 1000), (6, 4)]


@pytest.mark.parametrize("up, down", RATIOS)
@pytest.mark.parametrize("n", [1, 7, 500])
def test_kernel_equals_reference_and_scipy(up, down, n):
    x = np.random.default_rng(n + up).standard_normal(n)
    ours = resample_poly(x, up, down)
    np.testing.assert_allclose(ours, resample_poly_reference(x, up, down), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, scipy_resample_poly(x, up, down), rtol=0, atol=1e-10)
    assert ours.shape == (output_length(n, up, down),)


def test_rows_along_an_axis_keep_float32_and_match_scipy():
    rows = np.random.default_rng(0).standard_normal((3, 1600)).astype(np.float32)
    ours = resample_poly(rows, 3, 2, axis=1)
    assert ours.dtype == np.float32 and ours.shape == (3, 2400)
    np.testing.assert_allclose(ours, scipy_resample_poly(rows.astype(np.float64), 3, 2, axis=1), atol=1e-5)
    columns = resample_poly(rows.T, 3, 2, axis=0)
    np.testing.assert_array_equal(columns, ours.T)


def test_a_sine_below_the_cutoff_passes_at_unit_gain():
    t = np.arange(32000) / 32000
    out = resample_poly(np.sin(2 * np.pi * 1000 * t), 3, 2)
    expected = np.sin(2 * np.pi * 1000 * np.arange(out.shape[0]) / 48000)
    assert np.abs(out[500:-500] - expected[500:-500]).max() < 2e-3  # the Kaiser (beta 5) passband ripple


def test_equal_rates_copy_and_bad_ratios_are_refused():
    x = np.arange(5.0)
    out = resample_poly(x, 4, 4)
    assert out is not x and np.array_equal(out, x)
    with pytest.raises(ValueError, match="positive"):
        resample_poly(x, 0, 3)


@pytest.mark.parametrize("n_taps", [1, 2, 61, 20021])
def test_the_kaiser_window_equals_numpys(n_taps):
    np.testing.assert_allclose(kaiser_window(n_taps), np.kaiser(n_taps, 5.0), rtol=1e-12, atol=1e-15)

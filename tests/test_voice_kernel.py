"""Kernel pieces against their NumPy references and analytic signals."""
import numpy as np

from rt_engine.core import voice_kernel as vk
from rt_engine.core.commands import COMMAND_DTYPE, pending_order_ref


def test_interpolator_equals_its_numpy_reference():
    rng = np.random.default_rng(1)
    table = vk.make_sinc_table()
    row = rng.standard_normal(2000).astype(np.float32)
    positions = rng.uniform(4, 1990, 300)
    fast = vk.interpolate(row, positions, table)
    # float32 products inside the kernel, float64 in the reference
    np.testing.assert_allclose(fast, vk.interpolate_ref(row, positions, table), atol=1e-5)


def test_interpolator_reads_a_band_limited_sine_between_samples():
    table = vk.make_sinc_table()
    cycles_per_sample = 0.08  # 3.84 kHz at 48 kHz, the kind of content banks carry
    row = np.sin(2 * np.pi * cycles_per_sample * np.arange(4000)).astype(np.float32)
    positions = np.linspace(100.0, 3800.0, 5001)
    expected = np.sin(2 * np.pi * cycles_per_sample * positions)
    assert np.abs(vk.interpolate(row, positions, table) - expected).max() < 2e-3


def test_sinc_rows_have_unit_dc_gain():
    table = vk.make_sinc_table(n_phases=64, half_taps=4)
    np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-6)


def test_limiter_equals_its_numpy_reference():
    rng = np.random.default_rng(2)
    stereo = rng.standard_normal((2, 3000)) * np.linspace(0.1, 4.0, 3000)
    fast = vk.limit(stereo, 0.95, 0.999, np.ones(1))
    np.testing.assert_allclose(fast, vk.limit_ref(stereo, 0.95, 0.999, np.ones(1)), atol=1e-12)


def test_limiter_never_exceeds_its_ceiling_and_passes_quiet_signals():
    rng = np.random.default_rng(3)
    loud = rng.standard_normal((2, 5000)) * 20.0
    assert np.abs(vk.limit(loud, 0.97, 0.9995, np.ones(1))).max() <= 0.97 + 1e-12
    quiet = rng.uniform(-0.5, 0.5, (2, 5000))
    np.testing.assert_array_equal(vk.limit(quiet, 0.97, 0.9995, np.ones(1)), quiet)


def test_due_order_equals_its_numpy_reference():
    rng = np.random.default_rng(4)
    pending = np.zeros(64, dtype=COMMAND_DTYPE)
    pending["frame"] = rng.integers(-1, 600, size=64)
    pending["seq"] = rng.permutation(64)
    out = np.zeros(64, dtype=np.int64)
    n = vk.due_order(pending, 50, 200, 456, out)
    np.testing.assert_array_equal(out[:n], pending_order_ref(pending[:50], 200, 456))

"""Every Numba kernel in models.spectral_kernels equals its NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest

from models import spectral as sp
from models import spectral_kernels as kernels

N_FFT = 64
HOP = 16


def _window() -> np.ndarray:
    return sp.hann_window(N_FFT)


@pytest.mark.parametrize("n_samples", [16, 200, 257])
def test_frame_and_window_equals_reference(n_samples):
    audio = np.random.default_rng(0).standard_normal((3, n_samples)).astype(np.float32)
    n_frames = sp.n_frames_for(n_samples, HOP)
    expected = kernels.frame_and_window_ref(audio, _window(), HOP, n_frames)
    assert expected.shape == (3, n_frames, N_FFT)
    np.testing.assert_allclose(kernels.frame_and_window(audio, _window(), HOP, n_frames), expected, atol=1e-7)


@pytest.mark.parametrize("n_samples", [16, 200, 257])
def test_overlap_add_equals_reference(n_samples):
    n_frames = sp.n_frames_for(n_samples, HOP)
    frames = np.random.default_rng(1).standard_normal((3, n_frames, N_FFT)).astype(np.float32)
    expected = kernels.overlap_add_ref(frames, _window(), HOP, n_samples)
    assert expected.shape == (3, n_samples)
    np.testing.assert_allclose(kernels.overlap_add(frames, _window(), HOP, n_samples), expected, atol=1e-5)


def test_overlap_add_inverts_framing():
    audio = np.random.default_rng(2).standard_normal((2, 203)).astype(np.float32)
    frames = kernels.frame_and_window(audio, _window(), HOP, sp.n_frames_for(203, HOP))
    np.testing.assert_allclose(kernels.overlap_add(frames, _window(), HOP, 203), audio, atol=1e-5)


@pytest.mark.parametrize("n_samples", [200, 257])
def test_overlap_add_reframe_equals_reference(n_samples):
    n_frames = sp.n_frames_for(n_samples, HOP)
    frames = np.random.default_rng(3).standard_normal((3, n_frames, N_FFT)).astype(np.float32)
    expected = kernels.overlap_add_reframe_ref(frames, _window(), HOP, n_samples)
    np.testing.assert_allclose(kernels.overlap_add_reframe(frames, _window(), HOP, n_samples), expected, atol=1e-5)


def test_fgla_project_equals_reference():
    rng = np.random.default_rng(4)
    shape = (2, 5, 33)
    rebuilt = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    previous = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    target = rng.uniform(0, 2, shape).astype(np.float32)
    expected = kernels.fgla_project_ref(rebuilt, previous, target, 0.99)
    ours = kernels.fgla_project(rebuilt, previous, target, 0.99)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.abs(ours), target, rtol=1e-5, atol=1e-6)


def test_polar_from_instantaneous_frequency_equals_reference():
    rng = np.random.default_rng(5)
    log_mag = rng.uniform(-5, 2, (2, 9, 13)).astype(np.float32)
    inst_freq = rng.uniform(-1, 1, (2, 9, 13)).astype(np.float32)
    expected = kernels.polar_from_instantaneous_frequency_ref(log_mag, inst_freq)
    np.testing.assert_allclose(kernels.polar_from_instantaneous_frequency(log_mag, inst_freq), expected,
                               rtol=1e-5, atol=1e-6)


def test_polar_equals_reference():
    rng = np.random.default_rng(7)
    magnitude = rng.uniform(0, 3, (2, 9, 13)).astype(np.float32)
    phase = rng.uniform(-300, 300, (2, 9, 13)).astype(np.float32)
    np.testing.assert_allclose(kernels.polar(magnitude, phase), kernels.polar_ref(magnitude, phase),
                               rtol=1e-5, atol=1e-5)


def _tone_log_magnitude() -> np.ndarray:
    """Log-magnitudes of two short notes: partials over noise (islands above 1e-1, a floor below)."""
    rng = np.random.default_rng(6)
    t = np.arange(1200) / 8000.0
    tone = sum(np.sin(2 * np.pi * f * t) / h for h, f in enumerate((300.0, 600.0, 1210.0), 1))
    audio = np.stack([tone * np.exp(-3 * t), 0.01 * rng.standard_normal(t.size) + tone * (t > 0.05)])
    return sp.log_magnitude(sp.stft(audio.astype(np.float32), N_FFT, HOP), floor=1e-30)


def test_pghi_phase_gradients_equal_reference():
    log_mag = _tone_log_magnitude()
    gamma = sp.HANN_GAMMA_PER_SQUARED_LENGTH * N_FFT ** 2
    expected = kernels.pghi_phase_gradients_ref(log_mag, HOP, N_FFT, gamma)
    ours = kernels.pghi_phase_gradients(log_mag, HOP, N_FFT, gamma)
    for a, b in zip(ours, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("tolerances", [(1e-1, 1e-10), (1e-3,), (0.5, 1e-2, 1e-6)])
def test_heap_integrate_phase_equals_reference(tolerances):
    log_mag = _tone_log_magnitude()
    gamma = sp.HANN_GAMMA_PER_SQUARED_LENGTH * N_FFT ** 2
    dphase_time, dphase_freq = kernels.pghi_phase_gradients_ref(log_mag, HOP, N_FFT, gamma)
    tol = np.asarray(tolerances, dtype=np.float64)
    expected = kernels.heap_integrate_phase_ref(log_mag, dphase_time, dphase_freq, tol, 100.0)
    ours = kernels.heap_integrate_phase(log_mag, dphase_time, dphase_freq, tol, 100.0)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_heap_integration_of_exact_gradients_recovers_a_phase_ramp():
    # A phase with constant gradients (a chirp-free, click-free plane) is recovered exactly up to
    # the seed's phase, whatever order the heap visits the coefficients in.
    n_bins, n_frames = 17, 11
    slope_t, slope_k = 0.7, -1.3
    k, t = np.meshgrid(np.arange(n_bins), np.arange(n_frames), indexing="ij")
    truth = slope_t * t + slope_k * k
    log_mag = -((k - 8.0) ** 2 / 20.0 + (t - 5.0) ** 2 / 8.0)[None].astype(np.float32)
    dphase_time = np.full((1, n_bins, n_frames), slope_t, dtype=np.float32)
    dphase_freq = np.full((1, n_bins, n_frames), slope_k, dtype=np.float32)
    phase = kernels.heap_integrate_phase(log_mag, dphase_time, dphase_freq, np.array([1e-1, 1e-10]), 100.0)[0]
    offset = phase[8, 5] - truth[8, 5]  # the peak seeds the integration
    np.testing.assert_allclose(np.angle(np.exp(1j * (phase - truth - offset))), 0.0, atol=1e-5)


"""The pitch-informed mel -> linear step: its Numba kernel matches the NumPy/SciPy reference, and
the whole step fits the mel and keeps the harmonic support of the start."""
import numpy as np

from models.harmonic_inversion import (
    _harmonic_start,
    _sparse_filterbank,
    harmonic_comb,
    mel_inverter,
    mel_to_linear_harmonic,
    multiplicative_mel_updates,
    multiplicative_mel_updates_ref,
)
from models.model_config import GanConfig


def _notes(config, pitches, seed=0):
    """Mel magnitudes of random harmonic-ish spectra [len(pitches), n_mels, n_frames] and their f0 (Hz)."""
    rng = np.random.default_rng(seed)
    f0_hz = 440.0 * 2 ** ((np.asarray(pitches) - 69) / 12)
    linear = np.stack([harmonic_comb(f, config.n_fft, config.sample_rate, floor=0.01)[:, None]
                       * rng.random((config.n_fft // 2 + 1, 12)) for f in f0_hz]).astype(np.float32)
    mel = np.einsum("mf,bft->bmt", mel_inverter(config).filterbank, linear).astype(np.float32)
    mel[:, :, -2:] = 0.0  # silent frames stay silent
    return mel, f0_hz


def test_the_kernel_matches_the_reference():
    config = GanConfig()
    mel, f0_hz = _notes(config, [28, 45, 60, 96])
    by_band, by_bin, inverse_column_sums = _sparse_filterbank(config.sample_rate, config.n_fft, config.n_mels)
    arguments = (by_band.indptr, by_band.indices, by_band.data, by_bin.indptr, by_bin.indices, by_bin.data,
                 inverse_column_sums, 12)
    kernel, reference = _harmonic_start(mel, f0_hz, config), _harmonic_start(mel, f0_hz, config)
    multiplicative_mel_updates(kernel, mel, *arguments)
    multiplicative_mel_updates_ref(reference, mel, *arguments)
    assert kernel.dtype == np.float32 and kernel.shape == (4, config.n_fft // 2 + 1, mel.shape[2])
    np.testing.assert_allclose(kernel, reference, rtol=2e-4, atol=1e-9 * reference.max())
    assert np.all(kernel[:, :, -2:] == 0.0)


def test_the_step_fits_the_mel_from_the_harmonic_start():
    config = GanConfig()
    mel, f0_hz = _notes(config, [33, 57, 81], seed=1)
    linear = mel_to_linear_harmonic(mel, f0_hz, config)
    fitted = np.einsum("mf,bft->bmt", mel_inverter(config).filterbank, linear)
    assert np.linalg.norm(fitted - mel) / np.linalg.norm(mel) < 1e-2
    assert linear.dtype == np.float32 and np.all(linear >= 0.0)

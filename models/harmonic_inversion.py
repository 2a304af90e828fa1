"""Pitch-informed mel -> linear magnitude: the step of the bank renderer that restores the harmonics
128 mel bands cannot resolve (the low notes' harmonics share bands).

For a note of known fundamental f0, start from the pseudo-inverse solution (negatives clipped)
times the harmonic comb of f0, then fit the mel by multiplicative updates
    x <- x * F^T(mel / F x) / F^T 1
(they keep x >= 0 and its harmonic support while the mel projection converges to the target).
F is the mel filterbank [n_mels, n_bins], sparse: about two non-zeros per linear bin.

The updates run in one Numba kernel (`multiplicative_mel_updates`), note by note, with the note's
[n_bins, n_frames] estimate (260 kB at n_fft 2048) resident in cache through all iterations and the
frames as the vectorised inner loop; `multiplicative_mel_updates_ref` is the NumPy/SciPy reference
(whole-batch sparse products, as the renderer ran them before the kernel), and
`tests/test_harmonic_inversion.py` holds the two together.

Shapes: mel magnitudes float32 [batch, n_mels, n_frames]; linear magnitudes float32
[batch, n_bins, n_frames], n_bins = n_fft // 2 + 1; f0 in Hz [batch].

Public API:
    HARMONIC_PRIOR_ITERATIONS, HARMONIC_PRIOR_FLOOR
    mel_inverter(config) -> models.mel_inversion.MelInverter   (one per filterbank, cached)
    harmonic_comb(f0_hz, n_fft, sample_rate, floor) -> float32 [n_bins]
    mel_to_linear_harmonic(mel, f0_hz, config, n_iter) -> float32 [batch, n_bins, n_frames]
    multiplicative_mel_updates(x, mel, filterbank_csr, filterbank_csc, inverse_column_sums, n_iter)
    multiplicative_mel_updates_ref(...): the same, NumPy/SciPy
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.sparse
from numba import njit, prange

from models.mel_inversion import MelInverter
from models.spectral import mel_filterbank

HARMONIC_PRIOR_ITERATIONS = 20
"""Multiplicative updates of the pitch-informed mel -> linear solve in the bank renderer, a measured
choice beside its Fast Griffin-Lim iterations (`models.gan_bank.PHASE_ITERATIONS`): each update costs
about 4 ms of an 88-key bank on one core; 30 instead of 20 brings real notes taken through the
log-mel and back 0.01 dB closer to the originals (2.11 against 2.12 dB at 4 FGLA iterations)."""
HARMONIC_PRIOR_FLOOR = 0.05
"""Relative weight the harmonic prior leaves between harmonics (noise, inharmonic partials)."""
TINY = 1e-12
"""Added to the mel projection before dividing by it, and to the filterbank's column sums."""


@functools.lru_cache(maxsize=8)
def _inverter(sample_rate: int, n_fft: int, n_mels: int) -> MelInverter:
    return MelInverter(mel_filterbank(sample_rate, n_fft, n_mels))


def mel_inverter(config) -> MelInverter:
    """The MelInverter (pseudo-inverse, projected gradient) of `config`'s mel filterbank, built once
    per (sample_rate, n_fft, n_mels) in a process."""
    return _inverter(int(config.sample_rate), int(config.n_fft), int(config.n_mels))


@functools.lru_cache(maxsize=8)
def _sparse_filterbank(sample_rate: int, n_fft: int, n_mels: int):
    """(CSR by mel band, CSC by linear bin as a CSR of F^T, 1 / (F^T 1 + TINY)) of the filterbank."""
    filterbank = _inverter(sample_rate, n_fft, n_mels).filterbank
    by_band = scipy.sparse.csr_matrix(filterbank)
    by_bin = scipy.sparse.csr_matrix(filterbank.T)
    column_sums = np.asarray(by_band.sum(axis=0), dtype=np.float32).ravel() + np.float32(TINY)
    return by_band, by_bin, (np.float32(1.0) / column_sums).astype(np.float32)


@functools.lru_cache(maxsize=512)
def _cached_comb(f0_hz: float, n_fft: int, sample_rate: int) -> np.ndarray:
    """`harmonic_comb` with the default floor, computed once per pitch (read-only float32 [n_bins])."""
    comb = harmonic_comb(f0_hz, n_fft, sample_rate)
    comb.flags.writeable = False
    return comb


def harmonic_comb(f0_hz: float, n_fft: int, sample_rate: int, floor: float = HARMONIC_PRIOR_FLOOR) -> np.ndarray:
    """Prior weights `float32 [n_fft // 2 + 1]` on the linear STFT axis: 1 + floor at the harmonics
    k * f0_hz (Gaussians of half a bin), `floor` between them."""
    bin_hz = sample_rate / n_fft
    freqs_hz = np.arange(n_fft // 2 + 1) * bin_hz
    harmonics_hz = f0_hz * np.arange(1, int(sample_rate / 2 // f0_hz) + 1)
    comb = np.zeros_like(freqs_hz)
    for harmonic_hz in harmonics_hz:
        comb += np.exp(-0.5 * ((freqs_hz - harmonic_hz) / (0.5 * bin_hz)) ** 2)
    return (np.minimum(comb, 1.0) + floor).astype(np.float32)


def _harmonic_start(mel: np.ndarray, f0_hz, config) -> np.ndarray:
    """max(pinv(F) mel, 0) + 1e-7, times each note's harmonic comb: float32 [batch, n_bins, n_frames]."""
    import torch  # heavy: loaded with the networks (models.gan_bank); its matmul, not NumPy's: OpenBLAS's
    # own threads would keep spinning and slow the phase step

    inverse = mel_inverter(config).inverse
    comb = np.stack([_cached_comb(float(f), config.n_fft, config.sample_rate) for f in np.atleast_1d(f0_hz)])
    start = (torch.from_numpy(inverse) @ torch.from_numpy(mel)).clamp_(min=0.0).numpy()  # [batch, n_bins, n_frames]
    start += np.float32(1e-7)
    start *= comb[:, :, None]
    return start


def mel_to_linear_harmonic(mel: np.ndarray, f0_hz, config, n_iter: int = HARMONIC_PRIOR_ITERATIONS) -> np.ndarray:
    """Linear magnitudes of notes of known pitch whose mel projection matches `mel` (see the module
    docstring). mel: float [batch, n_mels, n_frames] (magnitude); f0_hz: [batch] (Hz); config:
    sample_rate, n_fft, n_mels. Returns float32 [batch, n_fft // 2 + 1, n_frames]."""
    mel = np.ascontiguousarray(mel, dtype=np.float32)
    x = _harmonic_start(mel, f0_hz, config)
    by_band, by_bin, inverse_column_sums = _sparse_filterbank(int(config.sample_rate), int(config.n_fft),
                                                              int(config.n_mels))
    multiplicative_mel_updates(x, mel, by_band.indptr, by_band.indices, by_band.data,
                               by_bin.indptr, by_bin.indices, by_bin.data, inverse_column_sums, int(n_iter))
    return x


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def multiplicative_mel_updates(x, mel, band_ptr, band_bins, band_weights, bin_ptr, bin_bands, bin_weights,
                               inverse_column_sums, n_iter):
    """`n_iter` updates x <- x * F^T(mel / (F x + TINY)) * inverse_column_sums, in place, one note
    per thread. x: float32 [batch, n_bins, n_frames] (> 0); mel: float32 [batch, n_mels, n_frames];
    F as CSR by band (band_ptr [n_mels + 1], band_bins, band_weights) and by bin (bin_ptr
    [n_bins + 1], bin_bands, bin_weights); inverse_column_sums: float32 [n_bins], 1 / (F^T 1 + TINY)."""
    batch, n_bins, n_frames = x.shape
    n_mels = mel.shape[1]
    for b in prange(batch):
        ratio = np.empty((n_mels, n_frames), dtype=np.float32)
        back = np.empty(n_frames, dtype=np.float32)
        for _ in range(n_iter):
            for m in range(n_mels):
                for t in range(n_frames):
                    ratio[m, t] = 0.0
                for j in range(band_ptr[m], band_ptr[m + 1]):
                    k, w = band_bins[j], band_weights[j]
                    for t in range(n_frames):
                        ratio[m, t] += w * x[b, k, t]
                for t in range(n_frames):
                    ratio[m, t] = mel[b, m, t] / (ratio[m, t] + np.float32(TINY))
            for k in range(n_bins):
                for t in range(n_frames):
                    back[t] = 0.0
                for j in range(bin_ptr[k], bin_ptr[k + 1]):
                    m, w = bin_bands[j], bin_weights[j]
                    for t in range(n_frames):
                        back[t] += w * ratio[m, t]
                scale = inverse_column_sums[k]
                for t in range(n_frames):
                    x[b, k, t] *= back[t] * scale


def multiplicative_mel_updates_ref(x, mel, band_ptr, band_bins, band_weights, bin_ptr, bin_bands, bin_weights,
                                   inverse_column_sums, n_iter):
    """NumPy/SciPy reference of `multiplicative_mel_updates` (same arguments, x updated in place):
    the whole batch's frames as columns of two sparse products per update."""
    batch, n_bins, n_frames = x.shape
    n_mels = mel.shape[1]
    by_band = scipy.sparse.csr_matrix((band_weights, band_bins, band_ptr), shape=(n_mels, n_bins))
    by_bin = scipy.sparse.csr_matrix((bin_weights, bin_bands, bin_ptr), shape=(n_bins, n_mels))
    columns = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(n_bins, -1)
    target = np.ascontiguousarray(mel.transpose(1, 0, 2)).reshape(n_mels, -1)
    for _ in range(n_iter):
        columns *= (by_bin @ (target / (by_band @ columns + np.float32(TINY)))) * inverse_column_sums[:, None]
    x[:] = columns.reshape(n_bins, batch, n_frames).transpose(1, 0, 2)

"""Phase reconstruction from STFT magnitudes: PGHI, Griffin-Lim and Fast Griffin-Lim.

Magnitudes are float `[batch, n_bins, n_frames]` in the convention of `models.spectral.stft`
(centered periodic Hann frames, n_fft = 2 * (n_bins - 1)); waveforms float32 `[batch, n_samples]`.

- PGHI (Prusa, Balazs, Sondergaard 2017): phase gradients from the log-magnitude (the Hann window
  treated as a Gaussian with time-frequency ratio gamma = 0.25645 * n_fft^2), integrated by a
  max-heap from the largest coefficient, one pass per tolerance (1e-1 then 1e-10 of the peak).
  Non-iterative; the heap loop is a Numba kernel (`spectral_kernels.heap_integrate_phase`) whose
  heap is a bucket queue ordering log-magnitudes to 0.087 dB: O(1) per coefficient, 3.5x faster
  than a binary heap here, same spectral convergence to 0.02 dB.
- Griffin-Lim / Fast Griffin-Lim (Perraudin, Balazs, Sondergaard 2013, momentum 0.99), started
  from random phase, zero phase or PGHI's phase. Inner loop: batched float32 FFTs (`spectral.rfft_frames`) and the
  fused Numba kernels `overlap_add_reframe` and `fgla_project`, on cache-sized slices of the batch
  shared among one thread per core (`spectral.map_note_chunks`).

Public API:
    PGHI_TOLERANCES, PGHI_BUCKETS_PER_NEPER, FGLA_MOMENTUM, FGLA_NOTES_PER_CHUNK
    pghi_phase(magnitude, hop_length, tolerances, gamma) -> float32 [batch, n_bins, n_frames] (radians)
    pghi(magnitude, n_samples, hop_length, tolerances) -> float32 [batch, n_samples]
    griffin_lim(magnitude, n_samples, n_iter, momentum, init, hop_length, seed) -> float32 [batch, n_samples]
    spectral_convergence_db(magnitude, audio, hop_length) -> float64 [batch] (dB)
"""
from __future__ import annotations

import numpy as np

from models.spectral import (
    HANN_GAMMA_PER_SQUARED_LENGTH,
    HOP_LENGTH,
    hann_window,
    irfft_frames,
    istft_frame_major,
    log_magnitude,
    map_note_chunks,
    n_frames_for,
    rfft_frames,
    stft,
)
from models.spectral_kernels import (
    fgla_project,
    heap_integrate_phase,
    overlap_add_reframe,
    pghi_phase_gradients,
    polar,
)

PGHI_TOLERANCES = (1e-1, 1e-10)
"""PGHI's integration passes: relative magnitude thresholds, coarse then fine."""
PGHI_BUCKETS_PER_NEPER = 100.0
"""Resolution of PGHI's max-heap (a bucket queue): 100 buckets per neper, 0.087 dB."""
FGLA_MOMENTUM = 0.99
"""Fast Griffin-Lim's momentum alpha (0 gives the classic Griffin-Lim)."""
FGLA_NOTES_PER_CHUNK = 4
"""Griffin-Lim iterates on slices of this many notes, whose working set (~5 MB) stays in cache:
1.8x less CPU than iterating on all 88 notes at once."""
_INITS = ("random", "zero", "pghi")


def _check_magnitude(magnitude: np.ndarray) -> np.ndarray:
    magnitude = np.asarray(magnitude)
    if magnitude.ndim != 3:
        raise ValueError(f"magnitude must be [batch, n_bins, n_frames], got shape {magnitude.shape}")
    if magnitude.shape[1] < 2:
        raise ValueError(f"magnitude needs at least 2 frequency bins, got {magnitude.shape[1]}")
    if not np.all(np.isfinite(magnitude)) or np.any(magnitude < 0):
        raise ValueError("magnitude must be finite and non-negative")
    return np.ascontiguousarray(magnitude, dtype=np.float32)


def _check_length(magnitude: np.ndarray, n_samples: int, hop_length: int) -> None:
    if n_frames_for(n_samples, hop_length) != magnitude.shape[2]:
        raise ValueError(f"n_samples={n_samples} at hop_length={hop_length} gives "
                         f"{n_frames_for(n_samples, hop_length)} frames, magnitude has {magnitude.shape[2]}")


def pghi_phase(magnitude: np.ndarray, hop_length: int = HOP_LENGTH,
               tolerances: tuple[float, ...] = PGHI_TOLERANCES, gamma: float | None = None) -> np.ndarray:
    """Phase Gradient Heap Integration.

    magnitude: float [batch, n_bins, n_frames] (linear); hop_length (samples); tolerances: relative
    magnitude thresholds of the passes, decreasing; gamma: window time-frequency ratio (samples^2),
    default Hann's 0.25645 * n_fft^2. Returns float32 phase [batch, n_bins, n_frames] (radians).
    """
    magnitude = _check_magnitude(magnitude)
    tol = np.asarray(tolerances, dtype=np.float64)
    if tol.ndim != 1 or tol.size == 0 or np.any(tol <= 0) or np.any(tol >= 1) or np.any(np.diff(tol) >= 0):
        raise ValueError(f"tolerances must be decreasing values in (0, 1), got {tolerances}")
    n_fft = 2 * (magnitude.shape[1] - 1)
    gamma = HANN_GAMMA_PER_SQUARED_LENGTH * n_fft ** 2 if gamma is None else float(gamma)
    log_mag = log_magnitude(magnitude, floor=np.finfo(np.float32).tiny)
    dphase_time, dphase_freq = pghi_phase_gradients(log_mag, hop_length, n_fft, gamma)
    return heap_integrate_phase(log_mag, dphase_time, dphase_freq, tol, PGHI_BUCKETS_PER_NEPER)


def pghi(magnitude: np.ndarray, n_samples: int, hop_length: int = HOP_LENGTH,
         tolerances: tuple[float, ...] = PGHI_TOLERANCES) -> np.ndarray:
    """Waveforms from magnitudes by PGHI, without iterations (one thread per slice of the batch).

    magnitude: float [batch, n_bins, n_frames]; n_samples (samples) of each output note.
    Returns float32 [batch, n_samples].
    """
    magnitude = _check_magnitude(magnitude)
    _check_length(magnitude, n_samples, hop_length)

    def invert(mag: np.ndarray) -> np.ndarray:
        spectrogram = polar(mag, pghi_phase(mag, hop_length, tolerances))
        return istft_frame_major(spectrogram.transpose(0, 2, 1), n_samples, hop_length)

    return map_note_chunks(invert, magnitude)


def griffin_lim(magnitude: np.ndarray, n_samples: int, n_iter: int = 32, momentum: float = FGLA_MOMENTUM,
                init: str = "random", hop_length: int = HOP_LENGTH, seed: int = 0) -> np.ndarray:
    """(Fast) Griffin-Lim: alternate projections on consistent spectrograms and on the target magnitude.

    magnitude: float [batch, n_bins, n_frames]; n_samples (samples) per note; n_iter: iterations;
    momentum: FGLA's alpha (0.99), 0 for classic Griffin-Lim; init: "random" (uniform phase from
    `seed`, drawn as `librosa.griffinlim(random_state=seed)` draws it), "zero" or "pghi".
    Iterates on slices of `FGLA_NOTES_PER_CHUNK` notes, one thread per core. Returns float32 [batch, n_samples].
    """
    magnitude = _check_magnitude(magnitude)
    _check_length(magnitude, n_samples, hop_length)
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if init == "random":
        phase = (2.0 * np.pi * np.random.default_rng(seed).random(magnitude.shape)).astype(np.float32)
    elif init == "zero":
        phase = np.zeros_like(magnitude)
    else:
        phase = pghi_phase(magnitude, hop_length)
    n_fft = 2 * (magnitude.shape[1] - 1)
    window = hann_window(n_fft)

    def iterate(mag: np.ndarray, initial_phase: np.ndarray) -> np.ndarray:
        target = np.ascontiguousarray(mag.transpose(0, 2, 1))  # [batch, n_frames, n_bins]
        estimate = np.ascontiguousarray(polar(mag, initial_phase).transpose(0, 2, 1))
        previous = np.zeros_like(estimate)
        for _ in range(n_iter):
            frames = overlap_add_reframe(irfft_frames(estimate, n_fft), window, hop_length, n_samples)
            rebuilt = rfft_frames(frames)
            estimate = fgla_project(rebuilt, previous, target, momentum)
            previous = rebuilt
        return istft_frame_major(estimate, n_samples, hop_length)

    return map_note_chunks(iterate, magnitude, phase, notes_per_chunk=FGLA_NOTES_PER_CHUNK)


def spectral_convergence_db(magnitude: np.ndarray, audio: np.ndarray, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Spectral convergence 20 log10(|| |STFT(audio)| - magnitude ||_F / || magnitude ||_F) per note.

    magnitude: float [batch, n_bins, n_frames]; audio: float [batch, n_samples].
    Returns float64 [batch] (dB); lower is better.
    """
    magnitude = _check_magnitude(magnitude)
    rebuilt = np.abs(stft(audio, 2 * (magnitude.shape[1] - 1), hop_length))
    if rebuilt.shape != magnitude.shape:
        raise ValueError(f"audio gives a spectrogram of shape {rebuilt.shape}, magnitude is {magnitude.shape}")
    error = np.linalg.norm((rebuilt - magnitude).reshape(len(magnitude), -1).astype(np.float64), axis=1)
    norm = np.linalg.norm(magnitude.reshape(len(magnitude), -1).astype(np.float64), axis=1)
    return 20.0 * np.log10(np.maximum(error, 1e-300) / np.maximum(norm, 1e-300))

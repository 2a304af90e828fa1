"""Spectral representations of notes: STFT, log-magnitude, mel, and GANSynth's instantaneous frequency.

Pure functions, batched over notes. Audio is float32 `[batch, n_samples]` at `SAMPLE_RATE` (16 kHz);
spectrograms are `[batch, n_bins, n_frames]` with `n_bins = n_fft // 2 + 1` and
`n_frames = 1 + n_samples // hop_length` (centered frames, zero padding, periodic Hann window), so a
1 s note is 513 bins x 63 frames. The STFT is unnormalised (a full-scale sinusoid peaks near
sum(window) / 2 = 256) and each frame's phase is referenced to the frame's first sample, as in
librosa and TensorFlow: `stft` equals `librosa.stft(center=True, pad_mode="constant")`.

Public API:
    SAMPLE_RATE, N_FFT, HOP_LENGTH, N_BINS, N_MELS, LOG_MAGNITUDE_FLOOR, HANN_GAMMA_PER_SQUARED_LENGTH
    hann_window(n_fft) -> float32 [n_fft]
    n_frames_for(n_samples, hop_length) -> int
    stft(audio, n_fft, hop_length) -> complex64 [batch, n_bins, n_frames]
    istft(spectrogram, n_samples, hop_length) -> float32 [batch, n_samples]
    stft_frame_major / istft_frame_major: the same with spectrograms [batch, n_frames, n_bins]
    log_magnitude(magnitude, floor) -> [batch, n_bins, n_frames] (nepers);  magnitude_from_log(...)
    hz_to_mel(f_hz, htk), mel_to_hz(mels, htk), mel_frequencies(n_mels, f_min_hz, f_max_hz, htk)
    mel_filterbank(sample_rate, n_fft, n_mels, f_min_hz, f_max_hz, htk, norm) -> float32 [n_mels, n_bins]
    mel_pseudo_inverse(filterbank) -> float32 [n_bins, n_mels]
    instantaneous_frequency(phase) -> [batch, n_bins, n_frames] in [-1, 1]
    phase_from_instantaneous_frequency(inst_freq) -> [batch, n_bins, n_frames] (radians)
    magnitude_and_if(spectrogram, floor) -> (log_magnitude, inst_freq)
    spectrogram_from_magnitude_and_if(log_magnitude, inst_freq) -> complex64 [batch, n_bins, n_frames]
    audio_to_magnitude_and_if(audio, n_fft, hop_length) / magnitude_and_if_to_audio(log_magnitude,
        inst_freq, n_samples, hop_length): waveform <-> GANSynth "IF" representation
    linear_to_mel_if(log_magnitude, inst_freq, filterbank) -> (log_mel_magnitude, mel_inst_freq)
    mel_to_linear_if(log_mel_magnitude, mel_inst_freq, filterbank, inverse) -> (log_magnitude, inst_freq)
    map_note_chunks(fn, *batched, n_threads, notes_per_chunk) -> fn over slices of the batch, in threads

Threads: `stft` / `istft` use one FFT thread and Numba's threads for framing. Whole pipelines over a
batch (`magnitude_and_if_to_audio`, `phase_reconstruction.pghi`, `griffin_lim`) instead split the
batch into one slice per core (`map_note_chunks`), each slice running single-threaded: FFTs and
Numba kernels then never wait on each other's idle, spinning OpenMP threads.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba
import numpy as np
import scipy.fft
import scipy.linalg

from models.spectral_kernels import (
    frame_and_window,
    overlap_add,
    polar_from_instantaneous_frequency,
)

SAMPLE_RATE = 16_000
"""Model sample rate (Hz)."""
N_FFT = 1024
"""FFT and window length (samples)."""
HOP_LENGTH = 256
"""Frame hop (samples): 75 % overlap."""
N_BINS = N_FFT // 2 + 1
"""Frequency bins of a spectrogram."""
N_MELS = 128
"""Default mel bands (the models' `SpectralConfig.n_mels`)."""
LOG_MAGNITUDE_FLOOR = 1e-4
"""Magnitude floor before the log (linear amplitude; -80 dB, the models' `SpectralConfig.log_floor`):
log_magnitude >= log(1e-4) = -9.2."""
HANN_GAMMA_PER_SQUARED_LENGTH = 0.25645
"""PGHI's Gaussian time-frequency ratio of a Hann window of length L is this times L^2 (samples^2)."""


def _check_audio(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise ValueError(f"{name} must be [batch, n_samples], got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError(f"{name} contains NaN or infinite samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _check_spectrogram(spectrogram: np.ndarray, name: str) -> np.ndarray:
    spectrogram = np.asarray(spectrogram)
    if spectrogram.ndim != 3:
        raise ValueError(f"{name} must be [batch, n_bins, n_frames], got shape {spectrogram.shape}")
    return spectrogram


def hann_window(n_fft: int = N_FFT) -> np.ndarray:
    """Periodic Hann window (librosa's and TensorFlow's default). Returns float32 [n_fft]."""
    if n_fft < 2:
        raise ValueError(f"n_fft must be >= 2, got {n_fft}")
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)  # periodic Hann


def n_frames_for(n_samples: int, hop_length: int = HOP_LENGTH) -> int:
    """Frames of a centered STFT of `n_samples` samples with hop `hop_length` (samples)."""
    if n_samples < 1 or hop_length < 1:
        raise ValueError(f"n_samples and hop_length must be >= 1, got {n_samples}, {hop_length}")
    return 1 + n_samples // hop_length


@functools.cache
def _torch_or_none():
    """torch, when it is installed: its FFT (MKL's) is 2-3x scipy's pocketfft for batches of
    2048-point frames on one core (`python3 bench/inversion.py`, "fft_2048"). None: scipy.fft serves."""
    try:
        import torch  # heavy, optional: the bank worker and training have it loaded for the networks
    except ImportError:
        return None
    return torch


def rfft_frames(frames: np.ndarray) -> np.ndarray:
    """Real FFT over the last axis: float32 [..., n_fft] -> complex64 [..., n_fft // 2 + 1]
    (torch's FFT when installed, else scipy.fft; the same unnormalised forward transform)."""
    torch = _torch_or_none()
    if torch is None:
        return scipy.fft.rfft(frames, axis=-1)
    return torch.fft.rfft(torch.from_numpy(frames), dim=-1).numpy()


def irfft_frames(spectra: np.ndarray, n_fft: int) -> np.ndarray:
    """Inverse of `rfft_frames`: complex64 [..., n_fft // 2 + 1] -> float32 [..., n_fft]."""
    torch = _torch_or_none()
    if torch is None:
        return scipy.fft.irfft(spectra, n=n_fft, axis=-1)
    return torch.fft.irfft(torch.from_numpy(spectra), n=n_fft, dim=-1).numpy()


def stft_frame_major(audio: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """STFT, frame-major. audio: float [batch, n_samples]. Returns complex64 [batch, n_frames, n_bins]."""
    audio = _check_audio(audio)
    frames = frame_and_window(audio, hann_window(n_fft), hop_length, n_frames_for(audio.shape[1], hop_length))
    return rfft_frames(frames)


def stft(audio: np.ndarray, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Short-time Fourier transform (centered, zero-padded, periodic Hann).

    audio: float [batch, n_samples]; n_fft, hop_length (samples).
    Returns complex64 [batch, n_bins, n_frames], n_bins = n_fft // 2 + 1, n_frames = 1 + n_samples // hop.
    """
    return np.ascontiguousarray(stft_frame_major(audio, n_fft, hop_length).transpose(0, 2, 1))


def istft_frame_major(spectrogram: np.ndarray, n_samples: int, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Inverse of `stft_frame_major`. spectrogram: complex [batch, n_frames, n_bins]; n_samples
    (samples) of the output. Returns float32 [batch, n_samples]."""
    spectrogram = _check_spectrogram(spectrogram, "spectrogram")
    n_fft = 2 * (spectrogram.shape[2] - 1)
    frames = irfft_frames(spectrogram.astype(np.complex64, copy=False), n_fft)
    return overlap_add(np.ascontiguousarray(frames, dtype=np.float32), hann_window(n_fft), hop_length,
                       n_samples)


def istft(spectrogram: np.ndarray, n_samples: int, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """Inverse STFT by least-squares overlap-add: `istft(stft(x), n) == x` to float32 precision.

    spectrogram: complex [batch, n_bins, n_frames] (n_fft = 2 * (n_bins - 1)); n_samples (samples).
    Returns float32 [batch, n_samples].
    """
    spectrogram = _check_spectrogram(spectrogram, "spectrogram")
    return istft_frame_major(spectrogram.transpose(0, 2, 1), n_samples, hop_length)


def log_magnitude(magnitude: np.ndarray, floor: float = LOG_MAGNITUDE_FLOOR) -> np.ndarray:
    """log(max(|magnitude|, floor)) (nepers). magnitude: real or complex [...]. Returns float32 [...]."""
    if floor <= 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    return np.log(np.maximum(np.abs(magnitude), floor)).astype(np.float32)


def magnitude_from_log(log_mag: np.ndarray) -> np.ndarray:
    """exp(log_mag): inverse of `log_magnitude` above its floor. Returns float32 [...]."""
    return np.exp(log_mag).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Mel scale (librosa's conventions: `librosa.filters.mel`)

_F_SP = 200.0 / 3  # Slaney: Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(f_hz: np.ndarray, htk: bool = False) -> np.ndarray:
    """Frequencies (Hz) to mels: HTK 2595 log10(1 + f/700), or Slaney (linear below 1 kHz, log above)."""
    f_hz = np.asarray(f_hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f_hz / 700.0)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(f_hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(f_hz >= _MIN_LOG_HZ, log_part, f_hz / _F_SP)


def mel_to_hz(mels: np.ndarray, htk: bool = False) -> np.ndarray:
    """Mels to frequencies (Hz): inverse of `hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mels - _MIN_LOG_MEL))
    return np.where(mels >= _MIN_LOG_MEL, log_part, _F_SP * mels)


def mel_frequencies(n_mels: int, f_min_hz: float, f_max_hz: float, htk: bool = False) -> np.ndarray:
    """`n_mels` frequencies (Hz) equally spaced in mels from f_min_hz to f_max_hz. float64 [n_mels]."""
    return mel_to_hz(np.linspace(hz_to_mel(f_min_hz, htk), hz_to_mel(f_max_hz, htk), n_mels), htk)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   f_min_hz: float = 0.0, f_max_hz: float | None = None, htk: bool = False,
                   norm: str | None = "slaney") -> np.ndarray:
    """Triangular mel filterbank, equal to `librosa.filters.mel` with the same arguments.

    sample_rate (Hz); n_fft (samples); f_min_hz, f_max_hz (Hz, default Nyquist); htk: HTK mel formula
    instead of Slaney's; norm: "slaney" (each triangle has unit area in Hz / 2) or None (peak 1).
    Returns float32 [n_mels, n_fft // 2 + 1]; `mel = filterbank @ magnitude`.
    """
    f_max_hz = sample_rate / 2.0 if f_max_hz is None else float(f_max_hz)
    if n_mels < 1:
        raise ValueError(f"n_mels must be >= 1, got {n_mels}")
    if not 0.0 <= f_min_hz < f_max_hz <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= f_min_hz < f_max_hz <= Nyquist, got {f_min_hz}, {f_max_hz}")
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_hz = mel_frequencies(n_mels + 2, f_min_hz, f_max_hz, htk)
    widths_hz = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths_hz[:-1, None]
    upper = ramps[2:] / widths_hz[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (edges_hz[2:n_mels + 2] - edges_hz[:n_mels]))[:, None]
    return weights.astype(np.float32)


def mel_pseudo_inverse(filterbank: np.ndarray) -> np.ndarray:
    """Moore-Penrose pseudo-inverse of a mel filterbank by SVD (LAPACK gesdd, divide and conquer).

    filterbank: [n_mels, n_bins]. Returns float32 [n_bins, n_mels]: the minimum-norm least-squares
    solution of `filterbank @ x = mel` is `inverse @ mel`.
    """
    filterbank = np.asarray(filterbank, dtype=np.float64)
    if filterbank.ndim != 2:
        raise ValueError(f"filterbank must be [n_mels, n_bins], got shape {filterbank.shape}")
    u, sigma, vt = scipy.linalg.svd(filterbank, full_matrices=False, lapack_driver="gesdd")
    cutoff = sigma.max() * max(filterbank.shape) * np.finfo(np.float32).eps
    inv_sigma = np.where(sigma > cutoff, 1.0 / np.where(sigma > cutoff, sigma, 1.0), 0.0)
    return ((vt.T * inv_sigma) @ u.T).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Instantaneous frequency (GANSynth)


def instantaneous_frequency(phase: np.ndarray) -> np.ndarray:
    """GANSynth's instantaneous frequency: the phase unwrapped along time, finite-differenced
    (the first frame keeps its phase) and divided by pi.

    phase: [batch, n_bins, n_frames] (radians). Returns float32 [batch, n_bins, n_frames] in [-1, 1]
    (phase advance per hop / pi).
    """
    phase = _check_spectrogram(phase, "phase").astype(np.float64)
    unwrapped = np.unwrap(phase, axis=-1)
    dphase = np.concatenate([unwrapped[..., :1], np.diff(unwrapped, axis=-1)], axis=-1)
    return (np.clip(dphase / np.pi, -1.0, 1.0)).astype(np.float32)


def phase_from_instantaneous_frequency(inst_freq: np.ndarray) -> np.ndarray:
    """Inverse of `instantaneous_frequency` by cumulative sum: pi * cumsum_t(inst_freq).

    inst_freq: [batch, n_bins, n_frames] in [-1, 1]. Returns float64 unwrapped phase (radians), same shape.
    """
    return np.pi * np.cumsum(np.asarray(inst_freq, dtype=np.float64), axis=-1)


def magnitude_and_if(spectrogram: np.ndarray, floor: float = LOG_MAGNITUDE_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Complex spectrogram [batch, n_bins, n_frames] -> (log_magnitude (nepers), inst_freq in [-1, 1]),
    both float32 [batch, n_bins, n_frames]."""
    spectrogram = _check_spectrogram(spectrogram, "spectrogram")
    return log_magnitude(spectrogram, floor), instantaneous_frequency(np.angle(spectrogram))


def spectrogram_from_magnitude_and_if(log_mag: np.ndarray, inst_freq: np.ndarray) -> np.ndarray:
    """(log_magnitude (nepers), inst_freq) float [batch, n_bins, n_frames] -> complex64 spectrogram.
    Numba kernel; reference: `spectral_kernels.polar_from_instantaneous_frequency_ref`."""
    log_mag = _check_spectrogram(log_mag, "log_magnitude")
    inst_freq = _check_spectrogram(inst_freq, "inst_freq")
    if log_mag.shape != inst_freq.shape:
        raise ValueError(f"log_magnitude {log_mag.shape} and inst_freq {inst_freq.shape} differ in shape")
    return polar_from_instantaneous_frequency(np.ascontiguousarray(log_mag, dtype=np.float32),
                                              np.ascontiguousarray(inst_freq, dtype=np.float32))


def audio_to_magnitude_and_if(audio: np.ndarray, n_fft: int = N_FFT,
                              hop_length: int = HOP_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms float [batch, n_samples] -> GANSynth IF representation: (log_magnitude (nepers),
    inst_freq in [-1, 1]), float32 [batch, n_bins, n_frames]."""
    return magnitude_and_if(stft(audio, n_fft, hop_length))


def magnitude_and_if_to_audio(log_mag: np.ndarray, inst_freq: np.ndarray, n_samples: int,
                              hop_length: int = HOP_LENGTH) -> np.ndarray:
    """GANSynth IF representation float [batch, n_bins, n_frames] -> waveforms float32
    [batch, n_samples]: phase by cumulative sum, then `istft` (one thread per slice of the batch)."""
    log_mag = _check_spectrogram(log_mag, "log_magnitude")
    inst_freq = _check_spectrogram(inst_freq, "inst_freq")
    return map_note_chunks(
        lambda lm, f: istft(spectrogram_from_magnitude_and_if(lm, f), n_samples, hop_length), log_mag, inst_freq)


@functools.cache
def _threading_layer_is_threadsafe() -> bool:
    """Whether Numba's threading layer lets several threads launch parallel kernels at once
    (tbb and omp do; workqueue, the fallback when neither library is found, aborts the process)."""
    frame_and_window(np.zeros((1, 1), np.float32), np.ones(2, np.float32), 1, 1)  # selects the layer
    return numba.threading_layer() != "workqueue"


def map_note_chunks(fn: Callable[..., np.ndarray], *batched: np.ndarray, n_threads: int | None = None,
                    notes_per_chunk: int | None = None) -> np.ndarray:
    """fn(*slices) over contiguous slices of the batch axis, results concatenated along it.

    Slices of `notes_per_chunk` notes (default: batch / n_threads) are shared among `n_threads`
    threads (default `numba.get_num_threads()`, so a process that set it to 1 stays on one core),
    each running Numba kernels on one thread and scipy.fft with
    one worker, so the slices use the cores without oversubscribing them; small slices keep an
    iterative method's working set in cache. batched: arrays sharing their first (batch) axis;
    fn returns an array whose first axis is its inputs' batch.
    """
    batch = len(batched[0])
    if any(len(a) != batch for a in batched):
        raise ValueError(f"batched arrays differ in batch size: {[len(a) for a in batched]}")
    n_threads = min(n_threads or numba.get_num_threads(), batch)
    size = notes_per_chunk or -(-batch // n_threads)
    if size < 1:
        raise ValueError(f"notes_per_chunk must be >= 1, got {notes_per_chunk}")
    starts = list(range(0, batch, size))

    def run(start: int) -> np.ndarray:
        return fn(*(a[start:start + size] for a in batched))

    if len(starts) == 1:
        return fn(*batched)
    if n_threads <= 1 or not _threading_layer_is_threadsafe():
        return np.concatenate([run(start) for start in starts], axis=0)

    def run_single_threaded(start: int) -> np.ndarray:
        numba.set_num_threads(1)  # thread-local
        with scipy.fft.set_workers(1):
            return run(start)

    with ThreadPoolExecutor(n_threads) as pool:
        return np.concatenate(list(pool.map(run_single_threaded, starts)), axis=0)


def linear_to_mel_if(log_mag: np.ndarray, inst_freq: np.ndarray, filterbank: np.ndarray,
                     floor: float = LOG_MAGNITUDE_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """GANSynth's IF-Mel: magnitudes and unwrapped phases mapped to mel bands, then IF again.

    log_mag (nepers), inst_freq: float [batch, n_bins, n_frames]; filterbank: [n_mels, n_bins].
    Returns (log_mel_magnitude = log(filterbank @ magnitude) (nepers), mel_inst_freq =
    instantaneous_frequency(filterbank @ unwrapped phase)), float32 [batch, n_mels, n_frames].
    """
    filterbank = _check_filterbank_pair(filterbank, log_mag, inst_freq, axis_size=1,
                                        names=("log_magnitude", "inst_freq"))
    mel_mag = np.einsum("mk,bkt->bmt", filterbank, magnitude_from_log(log_mag))
    mel_phase = np.einsum("mk,bkt->bmt", filterbank.astype(np.float64), phase_from_instantaneous_frequency(inst_freq))
    return log_magnitude(mel_mag, floor), _if_of_unwrapped(mel_phase)


def mel_to_linear_if(log_mel_mag: np.ndarray, mel_inst_freq: np.ndarray, filterbank: np.ndarray,
                     inverse: np.ndarray | None = None,
                     floor: float = LOG_MAGNITUDE_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `linear_to_mel_if` by the filterbank's pseudo-inverse (GANSynth's approximate
    inverse; negative magnitudes are clipped to `floor`). Exact for magnitudes and phases in the
    filterbank's row space. For better magnitudes use `models.mel_inversion.mel_to_linear`.

    log_mel_mag (nepers), mel_inst_freq: float [batch, n_mels, n_frames]; filterbank [n_mels, n_bins];
    inverse: its pseudo-inverse [n_bins, n_mels] (computed if None).
    Returns (log_magnitude (nepers), inst_freq), float32 [batch, n_bins, n_frames].
    """
    filterbank = _check_filterbank_pair(filterbank, log_mel_mag, mel_inst_freq, axis_size=0,
                                        names=("log_mel_magnitude", "mel_inst_freq"))
    inverse = mel_pseudo_inverse(filterbank) if inverse is None else np.asarray(inverse, dtype=np.float32)
    if inverse.shape != filterbank.shape[::-1]:
        raise ValueError(f"inverse must be [n_bins, n_mels] = {filterbank.shape[::-1]}, got {inverse.shape}")
    mag = np.einsum("km,bmt->bkt", inverse, magnitude_from_log(log_mel_mag))
    phase = np.einsum("km,bmt->bkt", inverse.astype(np.float64), phase_from_instantaneous_frequency(mel_inst_freq))
    return log_magnitude(np.maximum(mag, 0.0), floor), _if_of_unwrapped(phase)


def _check_filterbank_pair(filterbank: np.ndarray, first: np.ndarray, second: np.ndarray, axis_size: int,
                           names: tuple[str, str]) -> np.ndarray:
    """Check a [n_mels, n_bins] filterbank against two [batch, n, n_frames] arrays of one shape, where
    n is the filterbank's dimension `axis_size` (0: mels, 1: bins). Returns the filterbank as float32."""
    filterbank = np.asarray(filterbank, dtype=np.float32)
    if filterbank.ndim != 2:
        raise ValueError(f"filterbank must be [n_mels, n_bins], got shape {filterbank.shape}")
    for name, array in zip(names, (first, second)):
        array = _check_spectrogram(array, name)
        if array.shape[1] != filterbank.shape[axis_size] or array.shape != np.shape(first):
            raise ValueError(f"{name} must be [batch, {filterbank.shape[axis_size]}, n_frames] like "
                             f"{names[0]}, got shape {array.shape}")
    return filterbank


def _if_of_unwrapped(phase: np.ndarray) -> np.ndarray:
    """IF of a phase that need not be wrapped: first frame's phase wrapped, then wrapped differences
    (the same as `instantaneous_frequency` of the wrapped phase). Returns float32 in [-1, 1]."""
    dphase = np.concatenate([phase[..., :1], np.diff(phase, axis=-1)], axis=-1)
    wrapped = dphase - 2.0 * np.pi * np.floor(dphase / (2.0 * np.pi) + 0.5)
    return (wrapped / np.pi).astype(np.float32)

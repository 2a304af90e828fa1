"""One-shot notes as the models see them: the training data's preprocessing and a sound file read into it.

Public API:
    exponential_fade(n_samples, sample_rate, fade_seconds, decay) -> float32 [n_samples] gain curve
    preprocess_note(audio [n_samples], sample_rate, fade_seconds, decay) -> float32 [n_samples]
        GANStrument's preprocessing: peak normalisation (peak 1.0), then the exponential fade-out
    read_sound_file(path, what) -> (float32 [n_samples, n_channels], rate Hz), clear errors naming the file
    load_one_shot(path, sample_rate, n_samples) -> float32 [n_samples] (a sound file, preprocessed)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from models.resample import resample_poly


def exponential_fade(n_samples: int, sample_rate: int, fade_seconds: float, decay: float) -> np.ndarray:
    """Gain curve `float32 [n_samples]`: 1 until the last `fade_seconds` (s), then exp(-decay * t)
    with t going 0 -> 1 over the fade, ending at exp(-decay)."""
    gain = np.ones(n_samples, dtype=np.float32)
    n_fade = min(n_samples, int(round(fade_seconds * sample_rate)))
    if n_fade > 0:
        ramp = np.arange(1, n_fade + 1, dtype=np.float32) / n_fade
        gain[n_samples - n_fade:] = np.exp(-decay * ramp)
    return gain


def preprocess_note(audio: np.ndarray, sample_rate: int, fade_seconds: float, decay: float) -> np.ndarray:
    """GANStrument preprocessing of one note `[n_samples]`: divide by the peak (so peak = 1.0),
    then apply the exponential fade-out. Returns float32 `[n_samples]`."""
    peak = float(np.max(np.abs(audio)))
    if peak <= 0.0:
        raise ValueError("cannot normalise a silent note")
    faded = (audio / peak).astype(np.float32) * exponential_fade(audio.shape[-1], sample_rate, fade_seconds, decay)
    return faded


def read_sound_file(path: str | Path, what: str = "audio") -> tuple[np.ndarray, int]:
    """Samples of the sound file at `path`: (float32 [n_samples, n_channels], rate (Hz)). A missing
    file raises FileNotFoundError, an unreadable one ValueError, each naming `what` and the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for bad files
        raise ValueError(f"cannot read {what} file {path}: {error}") from error
    return audio, int(rate)


def load_one_shot(path: str | Path, sample_rate: int, n_samples: int) -> np.ndarray:
    """A one-shot sound file -> float32 [n_samples] at `sample_rate` (Hz): mono, resampled, leading
    silence (below -60 dB of the peak) trimmed, cut or zero-padded, then the training data's
    preprocessing (peak normalisation, exponential fade-out)."""
    path = Path(path)
    audio, rate = read_sound_file(path, "timbre audio")
    mono = audio.mean(axis=1)
    if mono.size == 0 or not np.all(np.isfinite(mono)) or np.abs(mono).max() <= 0:
        raise ValueError(f"audio file {path} is empty, silent or holds non-finite samples")
    if rate != sample_rate:
        divisor = np.gcd(int(rate), int(sample_rate))
        mono = resample_poly(mono, sample_rate // divisor, int(rate) // divisor).astype(np.float32)
    start = int(np.argmax(np.abs(mono) > 1e-3 * np.abs(mono).max()))
    mono = mono[start:start + n_samples]
    mono = np.pad(mono, (0, n_samples - mono.size))
    return preprocess_note(mono, sample_rate, fade_seconds=0.1, decay=5.0)

"""`ProceduralBankSource`: additive tones whose spectrum the grid point shapes (no model needed).

The stand-in behind `models.bank_source.BankSource` when no trained model is installed; tests and
benchmarks use it for banks that need no torch. Registered as "procedural" in `models.timbre_sources`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile

from models.bank_source import TimbreRequest
from models.pitch import midi_to_hz
from models.spectral import log_magnitude, stft

PROCEDURAL_SAMPLE_RATE = 16_000
"""Rate of the procedural banks (Hz)."""

PROCEDURAL_PRESETS: dict[str, tuple[float, float]] = {
    "sine": (0.0, 0.0),
    "flute": (0.2, 0.3),
    "clarinet": (0.5, 0.1),
    "organ": (0.3, 0.8),
    "brass": (0.8, 0.5),
    "saw": (1.0, 1.0),
}
PROCEDURAL_ENVELOPES: dict[str, tuple[float, float, float, float]] = {
    "organ": (0.01, 0.1, 1.0, 0.08),
    "flute": (0.04, 0.3, 0.9, 0.2),
    "brass": (0.03, 0.4, 0.8, 0.2),
    "clarinet": (0.02, 0.3, 0.9, 0.15),
    "sine": (0.005, 0.2, 1.0, 0.3),
    "saw": (0.003, 0.2, 0.9, 0.15),
}
"""(attack s, decay s, sustain, release s) of each preset: the procedural tones are steady, so the
envelope shapes them entirely."""


class ProceduralBankSource:
    """Additive-synthesis banks: x sets spectral brightness (harmonic roll-off), y the even/odd
    balance and decay. Stands in for the GAN behind the same interface; as a conditioning space
    (the grid's and the GRU dataset's view) h = (x, y)."""

    sample_rate = PROCEDURAL_SAMPLE_RATE
    conditioning_dim = 2
    refines_one_shots = False

    def __init__(self, n_samples: int = PROCEDURAL_SAMPLE_RATE):
        self.n_samples = n_samples

    def preset_names(self) -> list[str]:
        return list(PROCEDURAL_PRESETS)

    def preset_envelopes(self) -> dict[str, tuple]:
        """Preset name -> (attack s, decay s, sustain, release s)."""
        return dict(PROCEDURAL_ENVELOPES)

    def warm(self) -> None:
        """Nothing to load: the procedural source is NumPy."""

    def conditioning_for(self, timbre: TimbreRequest) -> np.ndarray:
        """The timbre point h = (x, y) that shapes the spectrum: float32 [2] (rendering clips it
        to [0, 1]^2)."""
        if timbre.kind == "preset":
            if timbre.name not in PROCEDURAL_PRESETS:
                raise KeyError(f"unknown preset {timbre.name!r}; known: {', '.join(PROCEDURAL_PRESETS)}")
            return np.array(PROCEDURAL_PRESETS[timbre.name], dtype=np.float32)
        if timbre.kind == "audio":
            return np.array(_xy_from_audio(timbre.path), dtype=np.float32)
        return np.array([timbre.x, timbre.y], dtype=np.float32)

    def render_bank(self, timbre: TimbreRequest, pitches: Sequence[int]) -> np.ndarray:
        return self.render_pitches(self.conditioning_for(timbre), pitches)

    def render_pitches(self, conditioning: np.ndarray, pitches: Sequence[int]) -> np.ndarray:
        """Notes float32 [len(pitches), n_samples] at the point `conditioning` (x, y)."""
        x, y = (float(np.clip(value, 0.0, 1.0)) for value in conditioning[:2])
        time_s = np.arange(self.n_samples) / self.sample_rate
        bank = np.zeros((len(pitches), self.n_samples), dtype=np.float32)
        for row, pitch in enumerate(pitches):
            f0_hz = float(midi_to_hz(pitch))
            n_harmonics = max(1, int((self.sample_rate / 2 - 100) // f0_hz))
            harmonic = np.arange(1, n_harmonics + 1)
            rolloff = 1.0 + 3.0 * (1.0 - x)                     # steeper roll-off = darker
            amplitude = harmonic ** -rolloff
            amplitude[1::2] *= 1.0 - 0.9 * y * (harmonic[1::2] > 1)  # y thins even harmonics
            decay_s = 0.4 + 2.0 * (1.0 - y)
            phases = 2 * np.pi * f0_hz * np.outer(harmonic, time_s)
            note = (amplitude[:, None] * np.sin(phases)).sum(axis=0)
            attack = np.minimum(time_s / 0.005, 1.0)
            note *= attack * np.exp(-time_s / decay_s)
            bank[row] = note / (np.abs(note).max() + 1e-9)
        return bank

    def render_conditioning(self, h: np.ndarray, pitches, seed: int = 0) -> np.ndarray:
        """h float [batch, 2], MIDI pitches int [batch] -> float32 [batch, n_samples] (the grid
        and the GRU dataset's call; `seed` unused: the source is deterministic)."""
        h = np.asarray(h, dtype=np.float64)
        if not len(h):
            return np.zeros((0, self.n_samples), dtype=np.float32)
        return np.concatenate([self.render_pitches(row, [int(pitch)]) for row, pitch in zip(h, pitches)])

    def render_spectrogram(self, h: np.ndarray, pitches, seed: int = 0) -> np.ndarray:
        """Log-magnitude spectrograms of `render_conditioning`: float32 [batch, n_bins, n_frames]."""
        return log_magnitude(np.abs(stft(self.render_conditioning(h, pitches, seed)))).astype(np.float32)


def _xy_from_audio(path: str) -> tuple[float, float]:
    """A crude timbre point for the procedural source: spectral centroid -> x, flatness -> y."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"timbre audio file not found: {path}")
    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for bad files
        raise ValueError(f"cannot read audio file {path}: {error}") from error
    mono = audio.mean(axis=1)
    if mono.size == 0:
        raise ValueError(f"audio file {path} is empty")
    spectrum = np.abs(np.fft.rfft(mono)) + 1e-12
    freqs = np.fft.rfftfreq(mono.size, 1.0 / rate)
    centroid = float((spectrum * freqs).sum() / spectrum.sum())
    flatness = float(np.exp(np.mean(np.log(spectrum))) / spectrum.mean())
    return float(np.clip(centroid / 4000.0, 0, 1)), float(np.clip(flatness * 10, 0, 1))


def load_source(model_dir: Path | None) -> ProceduralBankSource:
    """The registry's entry point: a procedural model folder holds nothing to load."""
    return ProceduralBankSource()

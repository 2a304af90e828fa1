"""Where per-pitch sample banks come from: the seam between the engine and the models.

A bank is a set of one-shot notes of one timbre, one per MIDI pitch, at the model rate:
`float32 [n_pitches, n_samples]` at `sample_rate` (16 kHz), peak-normalised to <= 1.0.
The engine's bank manager (a worker process) owns a `BankSource` and calls `render_bank`;
the GAN (`GanBankSource`) and the procedural stand-in (`ProceduralBankSource`) both fill it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence

import numpy as np

MODEL_SAMPLE_RATE = 16_000
KEYBOARD_PITCHES = tuple(range(21, 109))  # A0..C8, the 88 keys


@dataclass(frozen=True)
class TimbreRequest:
    """A timbre to render: a point on the 2-D grid, a named preset, or a one-shot sound file."""

    kind: Literal["xy", "preset", "audio"]
    x: float = 0.5
    y: float = 0.5
    name: str = ""
    path: str = ""

    def key(self) -> str:
        """A stable cache key for this timbre."""
        if self.kind == "xy":
            return f"xy:{self.x:.4f},{self.y:.4f}"
        if self.kind == "preset":
            return f"preset:{self.name}"
        return f"audio:{self.path}"


class BankSource(Protocol):
    sample_rate: int
    """Rate of rendered buffers (Hz)."""
    n_samples: int
    """Length of each rendered note (samples)."""

    def preset_names(self) -> list[str]:
        """Preset names, in program-change order."""

    def render_bank(self, timbre: TimbreRequest, pitches: Sequence[int]) -> np.ndarray:
        """Render `timbre` at MIDI `pitches`: float32 [len(pitches), n_samples], rows in the
        order asked. Raises ValueError/FileNotFoundError/KeyError naming the bad input."""


# Procedural stand-in: additive tones whose spectrum the grid point shapes.
PROCEDURAL_PRESETS: dict[str, tuple[float, float]] = {
    "sine": (0.0, 0.0),
    "flute": (0.2, 0.3),
    "clarinet": (0.5, 0.1),
    "organ": (0.3, 0.8),
    "brass": (0.8, 0.5),
    "saw": (1.0, 1.0),
}


class ProceduralBankSource:
    """Additive-synthesis banks: x sets spectral brightness (harmonic roll-off), y the even/odd
    balance and decay. Stands in for the GAN behind the same interface."""

    sample_rate = MODEL_SAMPLE_RATE

    def __init__(self, n_samples: int = MODEL_SAMPLE_RATE):
        self.n_samples = n_samples

    def preset_names(self) -> list[str]:
        return list(PROCEDURAL_PRESETS)

    def render_bank(self, timbre: TimbreRequest, pitches: Sequence[int]) -> np.ndarray:
        if timbre.kind == "preset":
            if timbre.name not in PROCEDURAL_PRESETS:
                raise KeyError(f"unknown preset {timbre.name!r}; known: {', '.join(PROCEDURAL_PRESETS)}")
            x, y = PROCEDURAL_PRESETS[timbre.name]
        elif timbre.kind == "xy":
            x, y = float(np.clip(timbre.x, 0, 1)), float(np.clip(timbre.y, 0, 1))
        else:
            x, y = _xy_from_audio(timbre.path)
        time_s = np.arange(self.n_samples) / self.sample_rate
        bank = np.zeros((len(pitches), self.n_samples), dtype=np.float32)
        for row, pitch in enumerate(pitches):
            f0_hz = 440.0 * 2.0 ** ((pitch - 69) / 12)
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


def _xy_from_audio(path: str) -> tuple[float, float]:
    """A crude timbre point for the procedural source: spectral centroid -> x, flatness -> y."""
    import soundfile

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


def load_bank_source(model_dir: str | Path | None) -> BankSource:
    """The bank source for a model folder: the GAN when `model_dir/gan/config.json` exists,
    else the procedural stand-in. A folder that exists but holds a bad model is an error."""
    if model_dir is None:
        return ProceduralBankSource()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    if (model_dir / "gan" / "config.json").is_file():
        from models.gan_bank import GanBankSource  # imported lazily: pulls in torch

        return GanBankSource.from_dir(model_dir)
    manifest = model_dir / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("bank_source") == "procedural":
        return ProceduralBankSource()
    raise ValueError(f"{model_dir} holds no GAN (gan/config.json) and is not a procedural model")

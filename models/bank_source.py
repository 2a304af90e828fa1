"""Where per-pitch sample banks come from: the seam between the engine and the models.

A bank is a set of one-shot notes of one timbre, one per MIDI pitch, at the source's own rate:
`float32 [n_pitches, n_samples]` at `sample_rate` (Hz), peak-normalised to <= 1.0.
The engine's bank manager (a worker process) owns a `BankSource` and calls `render_bank`;
`models.timbre_sources` names the implementations (the GAN, the procedural stand-in) and picks
one from a model folder's manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import numpy as np

KEYBOARD_PITCHES = tuple(range(21, 109))  # A0..C8, the 88 keys


@dataclass(frozen=True)
class TimbreRequest:
    """A timbre to render: a point on the 2-D grid, a named preset, or a one-shot sound file.
    `refine` (a sound file): with the source's test-time refinement (`refines_one_shots`); False
    asks for the unrefined bank, which the live path plays while the refined one renders."""

    kind: Literal["xy", "preset", "audio"]
    x: float = 0.5
    y: float = 0.5
    name: str = ""
    path: str = ""
    refine: bool = True

    def key(self) -> str:
        """A stable cache key for this timbre."""
        if self.kind == "xy":
            return f"xy:{self.x:.4f},{self.y:.4f}"
        if self.kind == "preset":
            return f"preset:{self.name}"
        return f"audio:{self.path}" if self.refine else f"audio-unrefined:{self.path}"


class BankSource(Protocol):
    sample_rate: int
    """Rate of rendered buffers (Hz)."""
    n_samples: int
    """Length of each rendered note (samples)."""
    refines_one_shots: bool
    """Whether a sound file's bank differs with `TimbreRequest.refine` (test-time refinement)."""

    def preset_names(self) -> list[str]:
        """Preset names, in program-change order."""

    def preset_envelopes(self) -> dict[str, tuple]:
        """Preset name -> (attack s, decay s, sustain level, release s) for the presets that have
        their own envelope; the others play the engine's default."""

    def conditioning_for(self, timbre: TimbreRequest) -> np.ndarray:
        """What the source renders `timbre` from (the GAN's h; the procedural point), computed
        once per request: reading a sound file or running a network happens here. Raises
        ValueError/FileNotFoundError/KeyError naming the bad input."""

    def render_pitches(self, conditioning: np.ndarray, pitches: Sequence[int]) -> np.ndarray:
        """Notes of `conditioning` at MIDI `pitches`: float32 [len(pitches), n_samples], rows in
        the order asked (a bank renders in chunks, each a call with the same conditioning)."""

    def render_bank(self, timbre: TimbreRequest, pitches: Sequence[int]) -> np.ndarray:
        """`render_pitches(conditioning_for(timbre), pitches)`."""

    def warm(self) -> None:
        """Load whatever the first render would load (networks), so it is not paid then."""

"""The GRU layer's voices (rt_engine.gru.gru_layer): one recurrent state, control smoothers and note each,
the allocation of a new note to a voice, and the hand-over of a cut note to a fading tail voice.

A voice is free when its envelope and envelope target are 0. A new note takes (as the sampler does)
the voice already holding that note id, else a free voice, else the quietest released one, else the
oldest held one (a steal: it restarts from a fresh recurrent state). A stolen or retriggered note is
not cut: `hand_over` copies its recurrent state and controls to a tail voice, which plays on and fades
it out linearly over `FADE_S`, while the voice starts the new note.
"""
from __future__ import annotations

import numpy as np

from models.gru_stream import new_state
from models.mu_law import mu_law_zero

FADE_S = 0.003
"""Seconds over which a stolen or retriggered note fades out on a tail voice."""

# control-state fields (float64 [N_CONTROL])
(C_PITCH, C_PITCH_STEP, C_PITCH_LEFT, C_PITCH_TARGET, C_X, C_X_STEP, C_X_LEFT, C_X_TARGET,
 C_Y, C_Y_STEP, C_Y_LEFT, C_Y_TARGET, C_BEND, C_BEND_TARGET, C_BEND_COEFF,
 C_ENV, C_ENV_TARGET, C_ENV_UP, C_ENV_DOWN) = range(19)
N_CONTROL = 19
GLIDES = ((C_PITCH, C_PITCH_STEP, C_PITCH_LEFT, C_PITCH_TARGET), (C_X, C_X_STEP, C_X_LEFT, C_X_TARGET),
          (C_Y, C_Y_STEP, C_Y_LEFT, C_Y_TARGET))
"""(value, step, samples left, target) fields of the pitch, x and y glides."""


class GruVoice:
    """One voice: `gru` (models.gru_stream.GruStreamState), `control` float64 [N_CONTROL] smoothers,
    the `note_id` it plays (the engine's held-note id; None when free), whether that note is `held`,
    its note `order` (larger = newer) and `stale` (samples were skipped while it sounded: restart
    before computing)."""

    def __init__(self, weights, seed: int, model_rate_hz: int, attack_s: float, release_s: float,
                 smooth_s: float):
        self.gru = new_state(weights, seed=seed)
        self._silence = mu_law_zero(weights.table.shape[0])
        self.control = np.zeros(N_CONTROL, np.float64)
        self.control[[C_PITCH, C_PITCH_TARGET]] = 60.0
        self.control[[C_X, C_X_TARGET, C_Y, C_Y_TARGET]] = 0.5
        self.control[C_BEND_COEFF] = np.exp(-1.0 / max(smooth_s * model_rate_hz, 1e-9))
        self.control[C_ENV_UP] = 1.0 / max(attack_s * model_rate_hz, 1.0)
        self.control[C_ENV_DOWN] = 1.0 / max(release_s * model_rate_hz, 1.0)
        self.note_id: int | None = None
        self.slot = 0  # channel slot of the note (rt_engine.core.commands.channel_slot): whose bend applies
        self.held = False
        self.order = 0
        self.stale = False

    def sounding(self) -> bool:
        return self.control[C_ENV] > 0.0 or self.control[C_ENV_TARGET] > 0.0

    def reset(self) -> None:
        """Fresh recurrent state (hidden, held conditioning, oscillator phase, previous sample =
        silence, note age 0); the RNG runs on."""
        self.gru.hidden[:] = 0.0
        self.gru.phase[0] = 0.0
        self.gru.cond_gates[:] = 0.0
        self.gru.counters[0] = self._silence
        self.gru.counters[1] = 0
        self.gru.counters[2] = 0
        self.stale = False

    def take_over(self, other: "GruVoice", model_rate_hz: int) -> None:
        """Play on `other`'s note from its current recurrent state and controls, fading it out
        linearly over FADE_S (in place: nothing is allocated)."""
        for mine, theirs in ((self.gru.hidden, other.gru.hidden), (self.gru.cond_gates, other.gru.cond_gates),
                             (self.gru.counters, other.gru.counters), (self.gru.phase, other.gru.phase),
                             (self.gru.rng, other.gru.rng), (self.control, other.control)):
            mine[:] = theirs
        self.stale = other.stale
        self.note_id, self.held, self.order = None, False, other.order
        self.control[C_ENV_TARGET] = 0.0
        self.control[C_ENV_DOWN] = max(self.control[C_ENV], 1e-9) / max(FADE_S * model_rate_hz, 1.0)

    def glide(self, fields: tuple, target: float, n_samples: int) -> None:
        """Move a control (one of GLIDES) to `target` linearly over `n_samples` (< 1: at once)."""
        value, step, left, goal = fields
        self.control[goal] = target
        if n_samples < 1:
            self.control[value], self.control[left] = target, 0.0
        else:
            self.control[step] = (target - self.control[value]) / n_samples
            self.control[left] = float(n_samples)


def allocate(voices: list[GruVoice], note_id: int) -> tuple[GruVoice, bool]:
    """The voice for a new note `note_id` and whether it was stolen from a held note (see the module
    docstring)."""
    for voice in voices:
        if voice.held and voice.note_id == note_id:
            return voice, False
    free = [voice for voice in voices if not voice.sounding()]
    if free:
        return free[0], False
    released = [voice for voice in voices if not voice.held]
    if released:
        return min(released, key=lambda voice: voice.control[C_ENV]), False
    return min(voices, key=lambda voice: voice.order), True


def hand_over(tails: list[GruVoice], voice: GruVoice, model_rate_hz: int) -> None:
    """`voice`'s sounding note moves to the quietest tail voice, which fades it out; `voice` is left
    silent (envelope 0), ready to start a note from a fresh state."""
    if voice.control[C_ENV] > 0.0:
        min(tails, key=lambda tail: tail.control[C_ENV]).take_over(voice, model_rate_hz)
    voice.control[C_ENV] = 0.0

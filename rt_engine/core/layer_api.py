"""The seam between the engine and a streaming layer that renders ahead of the audio callback
(the GRU voices).

A streaming layer runs in its own thread (its heavy work is a `nogil` Numba kernel, so it does not
hold the GIL), writes mono audio at the device rate into a ring buffer the engine owns, and the
engine's block kernel mixes it in with the layer's gain (`/mix/gru`). The layer's declared
`latency_frames` is how far ahead of the callback it renders; the engine reports it in
`/status.reply` and delays the layer's events by it, so parameter changes stay sample-accurate.

Ring protocol (single producer = layer thread, single consumer = audio callback):
`ring` float32 [capacity], `positions` int64 [2] = (frames written, frames read), both monotonic;
the layer writes only while `written - read < capacity`, the callback reads only
`min(block, written - read)` frames and counts a shortfall as a layer underrun.

Events: the layer follows the engine's one event stream (`rt_engine.core.commands.EventFollower`, given
to `start`) and applies each record through its own event methods below, at the record's frame (or
the block it was published for) plus `latency_frames`. The event methods take the absolute output
frame `at_frame` at which they take effect (`None` = as soon as possible); they are the layer's
vocabulary for the stream (and for tests) and must not block.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from rt_engine.core.commands import GAIN_GRU, RELEASES, CommandKind, EventFollower


class StreamLayer(Protocol):
    latency_frames: int
    """Frames the layer renders ahead of the callback (declared latency)."""

    def start(self, sample_rate: int, ring: np.ndarray, positions: np.ndarray,
              events: EventFollower | None = None) -> None:
        """Begin rendering into `ring` (float32 [capacity]) at `sample_rate` (Hz), following the
        engine's event stream `events`."""

    def follow_events(self) -> int:
        """Apply the records published since the last call (the layer's thread calls it before each
        block it renders); returns how many were read."""

    def stop(self) -> None:
        """Stop the rendering thread and join it."""

    def note_on(self, note_id: int, pitch: float, velocity: float, at_frame: int | None = None,
                channel: int = -1) -> None:
        """Start note `note_id` (the engine's held-note table's key, `rt_engine.core.held_notes`) on MIDI
        `channel` (-1: none; its bend applies): on a free (or stolen) voice; with one voice last-note
        priority (gliding if a note is held)."""

    def note_off(self, note_id: int, at_frame: int | None = None,
                 fallback: tuple[int, float, int] | None = None) -> None:
        """Release note `note_id`. `fallback` is (id, pitch, MIDI channel) of the newest note still
        held in the engine's table (None: none), which a monophonic layer falls back to."""

    def note_off_pitch(self, pitch: float, at_frame: int | None = None, channel: int = -1,
                       fallback: tuple[int, float, int] | None = None) -> None:
        """Release the held notes at MIDI `pitch` on `channel` (-1: any); `fallback` as for `note_off`."""

    def release_channel(self, at_frame: int | None = None, channel: int = -1,
                        fallback: tuple[int, float, int] | None = None) -> None:
        """Release every held note on MIDI `channel` (-1: all); `fallback` as for `note_off`."""

    def note_pitch(self, note_id: int, pitch: float, glide_s: float, at_frame: int | None = None) -> None:
        """Glide note `note_id` to MIDI `pitch` over `glide_s` seconds."""

    def pitch_bend(self, semitones: float, at_frame: int | None = None, channel: int = -1) -> None:
        """Bend the notes of MIDI `channel` (-1: every channel) by `semitones` (MPE: per channel)."""

    def timbre_xy(self, x: float, y: float, glide_s: float, at_frame: int | None = None) -> None:
        """Move the timbre to grid point (x, y) in [0, 1]^2 over `glide_s` seconds."""

    def set_glide(self, seconds: float) -> None:
        """Portamento time between legato notes (`/gru/glide`)."""

    def set_temperature(self, temperature: float, at_frame: int | None = None) -> None:
        """Sampling temperature (>= 0, 0 = argmax) from `at_frame` on (`/gru/temperature`)."""

    def set_voices(self, n_voices: int) -> None:
        """Play up to `n_voices` notes at once (`/gru/voices`)."""

    def set_mix_gain(self, gain: float, at_frame: int | None = None) -> None:
        """The engine's gain for this layer (`/mix/gru`) from `at_frame` on; a layer may skip its
        work while it is 0."""

    kernel_path: str
    """Which kernel the layer runs (reported as `gru_kernel` in `/status.reply`)."""
    shed_voices: int
    """Voices stopped early because the layer fell behind real time (`gru_shed_voices` in `/status.reply`)."""

    def panic(self) -> None:
        """Silence at once (short fade) and reset the recurrent state."""

    def is_active(self) -> bool:
        """True while a note sounds (reported as `gru_active`)."""


def apply_event(layer, record) -> None:
    """One record of the engine's event stream (`rt_engine.core.commands.COMMAND_DTYPE`) as a call of
    `layer`'s event methods, at the record's frame (or the block it was published for) plus the
    layer's `latency_frames`. Kinds a stream layer has no part in (sustain, bank selection, the
    sampler's and master gains) are ignored."""
    kind, channel = int(record["kind"]), int(record["channel"])
    frame = int(record["frame"]) if record["frame"] >= 0 else int(record["posted"])
    at_frame = None if frame < 0 else frame + layer.latency_frames
    fallback = None
    if kind in RELEASES and np.isfinite(record["b"]):
        fallback = (int(record["held_id"]), float(record["b"]), int(record["c"]))
    if kind == CommandKind.NOTE_ON:
        layer.note_on(int(record["held_id"]), float(record["a"]), float(record["b"]), at_frame, channel)
    elif kind == CommandKind.NOTE_OFF_ID:
        layer.note_off(int(record["note_id"]), at_frame, fallback)
    elif kind == CommandKind.NOTE_OFF_PITCH:
        layer.note_off_pitch(float(record["a"]), at_frame, channel, fallback)
    elif kind in (CommandKind.ALL_NOTES_OFF, CommandKind.ALL_SOUND_OFF):
        layer.release_channel(at_frame, channel, fallback)
    elif kind == CommandKind.PANIC:
        layer.panic()
    elif kind == CommandKind.NOTE_PITCH:
        layer.note_pitch(int(record["note_id"]), float(record["a"]), float(record["b"]), at_frame)
    elif kind == CommandKind.PITCH_BEND:
        layer.pitch_bend(float(record["a"]), at_frame, channel)
    elif kind == CommandKind.RESET_CONTROLLERS:
        layer.pitch_bend(0.0, at_frame, channel)
    elif kind == CommandKind.TIMBRE_XY:
        layer.timbre_xy(float(record["a"]), float(record["b"]), float(record["c"]), at_frame)
    elif kind == CommandKind.SET_GAIN and channel == GAIN_GRU:
        layer.set_mix_gain(float(record["a"]), at_frame)
    elif kind == CommandKind.GRU_TEMPERATURE:
        layer.set_temperature(float(record["a"]), at_frame)

"""The seam between control (OSC server, MIDI input, score player) and the engine.

Control code parses and validates messages, then calls these methods; it never touches engine
state directly. The engine implements them by pushing fixed-size command records into its bounded
lock-free queue (`rt_engine.core.commands`) or, for actions that allocate (timbre changes), by handing a
request to the bank manager process. Every method is called from a control thread, never from the
audio callback, and never blocks for long.

Timing: `at_frame` is an absolute output frame (device rate) at which the action takes effect,
sample-accurately; `None` means "at the start of the next block". Control code turns OSC timetags
into frames with `frame_for_time`. A frame in the past plays at the next block and is counted late.
"""
from __future__ import annotations

from typing import Callable, Literal, Protocol

GainLayer = Literal["sampler", "gru", "master"]


class EngineControl(Protocol):
    """What the engine offers to control code. Numbers are validated and clamped by the caller."""

    sample_rate: int
    """Output rate of the engine (Hz)."""

    def frame_for_time(self, unix_time_s: float) -> int:
        """Absolute output frame at which wall-clock `unix_time_s` (seconds since the epoch) plays."""

    def note_on(self, pitch: float, velocity: float, note_id: int = -1, channel: int = -1,
                at_frame: int | None = None) -> bool:
        """Start a note. `pitch` is a MIDI number (fractional allowed), `velocity` 1..127.
        `note_id` -1 lets the engine derive one from the pitch; `channel` -1 is "no MIDI channel"
        (MPE bends apply per channel). Returns False when the command queue was full (dropped)."""

    def note_off(self, pitch: float | None = None, note_id: int | None = None, channel: int = -1,
                 at_frame: int | None = None) -> bool:
        """Release the note(s) matching `pitch` or `note_id` (exactly one is given)."""

    def note_pitch(self, note_id: int, pitch: float, glide_s: float = 0.0,
                   at_frame: int | None = None) -> bool:
        """Glide held note `note_id` to MIDI `pitch` over `glide_s` seconds."""

    def pitch_bend(self, channel: int, semitones: float, at_frame: int | None = None) -> bool:
        """Bend every note on MIDI `channel` (-1: all channels) by `semitones` (smoothed per sample)."""

    def sustain(self, channel: int, down: bool, at_frame: int | None = None) -> bool:
        """Sustain pedal (CC64) on `channel`."""

    def all_notes_off(self, channel: int = -1, at_frame: int | None = None) -> bool:
        """Release all notes (CC123): respects the sustain pedal."""

    def all_sound_off(self, channel: int = -1, at_frame: int | None = None) -> bool:
        """Silence all voices at once with a short fade (CC120)."""

    def reset_controllers(self, channel: int = -1, at_frame: int | None = None) -> bool:
        """CC121: pitch bend to 0, sustain up."""

    def timbre_xy(self, x: float, y: float, glide_s: float = 0.0, at_frame: int | None = None) -> bool:
        """Move to point (x, y) in [0, 1]^2 of the 2-D timbre grid over `glide_s` seconds."""

    def timbre_preset(self, name: str) -> None:
        """Switch to a named preset. Raises KeyError with a clear message for an unknown name."""

    def timbre_audio(self, path: str, on_done: Callable[[], None],
                     on_fail: Callable[[str], None]) -> None:
        """Derive a timbre from a one-shot sound file. Returns at once; calls `on_done` (from
        another thread) once the held pitches play in the new timbre, or `on_fail(reason)` (e.g.
        missing or unreadable file)."""

    def gru_glide(self, seconds: float, at_frame: int | None = None) -> bool:
        """Portamento time of the monophonic GRU voice (seconds)."""

    def gru_temperature(self, value: float, at_frame: int | None = None) -> bool:
        """Sampling temperature of the GRU voice, 0..2 (0 = argmax: cleanest; 1 = the trained
        distribution; higher = breathier), applied at `at_frame` sample-accurately."""

    def gru_voices(self, n_voices: int) -> bool:
        """How many notes the GRU layer plays at once (1..16; sounding GRU notes are released)."""

    def set_gain(self, layer: GainLayer, gain: float, at_frame: int | None = None) -> bool:
        """Linear gain of a layer; 0 skips rendering that layer."""

    def set_polyphony(self, n_voices: int) -> None:
        """Change the sampler's voice-pool size live (staged: allocated off the audio thread)."""

    def panic(self) -> None:
        """Stop everything now: all voices fade out, pending scheduled commands are dropped."""

    def status(self) -> dict:
        """Snapshot for /status.reply: voices, gru_active, cpu, xruns, sample_rate, block,
        latency_s, bank_state, plus counters (commands, dropped, late)."""

    def preset_names(self) -> list[str]:
        """Names accepted by `timbre_preset`, in program-change order."""

"""MIDI messages -> EngineControl calls, configured by a JSON map file. No I/O besides loading
the map: `MidiMapper.handle(bytes)` is fed raw MIDI messages (as rtmidi delivers them) and calls the
engine, so it is tested without any MIDI system.

The default map (`rt_engine/io/midi_map_default.json`, DESIGN.md):
- note on / note off (note on with velocity 0 is a note off); each note gets the id
  `MIDI_NOTE_ID_BASE + 128 * channel + note` (channel 0-based), so equal pitches on different
  channels (MPE) are separate notes and never collide with OSC ids;
- pitch bend, ±2 semitones by default, set per channel by RPN 0 (CC 101 = 0, CC 100 = 0, then
  CC 6 = semitones, CC 38 = cents; a CC 6 resets the cents to 0); the channel is passed to the
  engine (MPE per-channel bend);
- CC 1 -> timbre x, CC 2 and CC 74 -> timbre y (value / 127; the other coordinate keeps its last
  MIDI value, 0.5 at start), CC 64 sustain (>= 64 is down), CC 120 all sound off, CC 121 reset
  controllers, CC 123 all notes off (the engine keeps sustained notes while the pedal is down);
- program change n -> the n-th name of `engine.preset_names()` (ignored beyond the list).
MPE (`"mpe": {"enabled": true}`): member channels (every channel but the master) start with a
±48 semitone bend range (MPE's default), the master channel with `pitch_bend_range_semitones`.

Map file keys: `channels` ("all" or a list of 1-based channels), `pitch_bend_range_semitones`
(0..96), `timbre_glide_s` (glide of CC-driven timbre moves, s), `program_change` ("preset" or
"ignore"), `cc` (CC number -> action, see CC_ACTIONS), `mpe` ({enabled, master_channel (1-based),
member_pitch_bend_range_semitones}), `description` (free text). Absent keys take the defaults
above; unknown keys, bad values or CCs reserved for RPN/NRPN are a ValueError naming the file.

Public API: `MidiMap`, `CC_ACTIONS`, `DEFAULT_MAP_PATH`, `load_midi_map(path=None)`,
`parse_midi_map(data, source)`, `MidiMapper(engine, midi_map)`, `midi_note_id(channel, note)`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rt_engine.core.control_api import EngineControl
from rt_engine.osc.osc_registry import MAX_TEMPERATURE, MIDI_NOTE_ID_BASE

DEFAULT_MAP_PATH = Path(__file__).with_name("midi_map_default.json")
CC_ACTIONS = ("timbre_x", "timbre_y", "sustain", "all_sound_off", "all_notes_off", "reset_controllers",
              "master_gain", "mix_sampler", "mix_gru", "gru_glide", "gru_temperature")
"""What a CC can do. Gains map 0..127 to 0..1 (linear); gru_glide maps 0..127 to 0..1 s;
gru_temperature maps 0..127 to 0..MAX_TEMPERATURE (2; 0 = argmax, 64 is about 1)."""
RESERVED_CCS = (6, 38, 98, 99, 100, 101)
"""Data entry and (N)RPN selection: handled internally for RPN 0, not remappable."""
BEND_CENTER = 8192
N_CHANNELS = 16
_MAP_KEYS = {"description", "channels", "pitch_bend_range_semitones", "timbre_glide_s", "program_change",
             "cc", "mpe"}
_MPE_KEYS = {"enabled", "master_channel", "member_pitch_bend_range_semitones"}


@dataclass(frozen=True)
class MidiMap:
    """A parsed MIDI map. Channels are 0-based here."""

    cc_actions: tuple[tuple[int, str], ...]
    channels: tuple[int, ...] | None = None
    """Channels listened to (None: all)."""
    bend_range_semitones: float = 2.0
    timbre_glide_s: float = 0.0
    program_change: bool = True
    mpe_enabled: bool = False
    mpe_master_channel: int = 0
    mpe_member_bend_range_semitones: float = 48.0

    def initial_bend_range(self, channel: int) -> float:
        """Bend range (semitones) of 0-based `channel` before any RPN 0 arrives."""
        if self.mpe_enabled and channel != self.mpe_master_channel:
            return self.mpe_member_bend_range_semitones
        return self.bend_range_semitones


def midi_note_id(channel: int, note: int) -> int:
    """Engine note id of MIDI `note` (0..127) on 0-based `channel` (0..15)."""
    return MIDI_NOTE_ID_BASE + 128 * channel + note


def _number(data: dict, key: str, default: float, low: float, high: float, source: str) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"MIDI map {source}: {key} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _channel(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= N_CHANNELS:
        raise ValueError(f"MIDI map {source}: {what} must be a channel 1..16, got {value!r}")
    return value - 1


def parse_midi_map(data: Any, source: str) -> MidiMap:
    """A decoded JSON map -> MidiMap. `source` names the file in errors (ValueError)."""
    if not isinstance(data, dict):
        raise ValueError(f"MIDI map {source}: expected a JSON object, got {type(data).__name__}")
    unknown = set(data) - _MAP_KEYS
    if unknown:
        raise ValueError(f"MIDI map {source}: unknown key(s) {sorted(unknown)}; known: {sorted(_MAP_KEYS)}")
    channels_value = data.get("channels", "all")
    if channels_value == "all":
        channels = None
    elif isinstance(channels_value, list) and channels_value:
        channels = tuple(sorted({_channel(c, "channels entry", source) for c in channels_value}))
    else:
        raise ValueError(f"MIDI map {source}: channels must be \"all\" or a non-empty list of 1..16, "
                         f"got {channels_value!r}")
    cc_value = data.get("cc", {})
    if not isinstance(cc_value, dict):
        raise ValueError(f"MIDI map {source}: cc must be an object of CC number -> action")
    cc_actions = []
    for key, action in cc_value.items():
        if not str(key).isdigit() or not 0 <= int(key) <= 127:
            raise ValueError(f"MIDI map {source}: cc key {key!r} is not a CC number 0..127")
        if int(key) in RESERVED_CCS:
            raise ValueError(f"MIDI map {source}: CC {key} is reserved for RPN/NRPN data entry")
        if action not in CC_ACTIONS:
            raise ValueError(f"MIDI map {source}: CC {key} action {action!r} unknown; known: "
                             f"{', '.join(CC_ACTIONS)}")
        cc_actions.append((int(key), action))
    program = data.get("program_change", "preset")
    if program not in ("preset", "ignore"):
        raise ValueError(f"MIDI map {source}: program_change must be \"preset\" or \"ignore\", got {program!r}")
    mpe = data.get("mpe", {})
    if not isinstance(mpe, dict) or set(mpe) - _MPE_KEYS:
        raise ValueError(f"MIDI map {source}: mpe must be an object with keys {sorted(_MPE_KEYS)}")
    enabled = mpe.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ValueError(f"MIDI map {source}: mpe.enabled must be true or false, got {enabled!r}")
    return MidiMap(
        cc_actions=tuple(sorted(cc_actions)),
        channels=channels,
        bend_range_semitones=_number(data, "pitch_bend_range_semitones", 2.0, 0.0, 96.0, source),
        timbre_glide_s=_number(data, "timbre_glide_s", 0.0, 0.0, 60.0, source),
        program_change=program == "preset",
        mpe_enabled=enabled,
        mpe_master_channel=_channel(mpe.get("master_channel", 1), "mpe.master_channel", source),
        mpe_member_bend_range_semitones=_number(mpe, "member_pitch_bend_range_semitones", 48.0, 0.0, 96.0,
                                                f"{source} (mpe)"),
    )


def load_midi_map(path: str | Path | None = None) -> MidiMap:
    """Read a JSON map file (None: the shipped default). Raises ValueError naming the file for
    unreadable files, bad JSON or bad contents."""
    path = Path(path) if path is not None else DEFAULT_MAP_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"MIDI map {path}: cannot read it: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"MIDI map {path}: not valid JSON: {error}") from None
    return parse_midi_map(data, str(path))


class _Channel:
    """Per-channel controller state."""

    def __init__(self, bend_range: float):
        self.bend_raw = BEND_CENTER
        self.bend_range = bend_range
        self.bend_semitones = int(bend_range)
        self.bend_cents = round((bend_range - int(bend_range)) * 100)
        self.rpn: tuple[int, int] | None = None
        self.rpn_msb = 127
        self.sustain = False


class MidiMapper:
    """Translates raw MIDI messages into `engine` calls. Keeps per-channel state (bend, bend
    range, RPN selection, pedal) and the last CC timbre point. Not thread-safe: one caller at a
    time (MidiInput serialises its ports)."""

    def __init__(self, engine: EngineControl, midi_map: MidiMap):
        self.engine, self.map = engine, midi_map
        self.cc = dict(midi_map.cc_actions)
        self.channels = [_Channel(midi_map.initial_bend_range(c)) for c in range(N_CHANNELS)]
        self.x, self.y = 0.5, 0.5
        self.n_handled = 0
        self.n_ignored = 0

    def handle(self, data: Sequence[int], at_frame: int | None = None) -> bool:
        """One complete MIDI message (status byte first) -> engine calls. Returns True when it
        changed something, False when it was ignored (unmapped, filtered, malformed)."""
        if not data or not 0x80 <= data[0] <= 0xEF or any(not 0 <= b <= 127 for b in data[1:]):
            self.n_ignored += 1
            return False
        kind, channel = data[0] & 0xF0, data[0] & 0x0F
        expected = 2 if kind in (0xC0, 0xD0) else 3
        if len(data) != expected or (self.map.channels is not None and channel not in self.map.channels):
            self.n_ignored += 1
            return False
        done = self._dispatch(kind, channel, data[1], data[2] if expected == 3 else 0, at_frame)
        if done:
            self.n_handled += 1
        else:
            self.n_ignored += 1
        return done

    def _dispatch(self, kind: int, channel: int, d1: int, d2: int, at_frame: int | None) -> bool:
        engine = self.engine
        if kind == 0x90:  # velocity 0 is a note-off: the engine decides
            engine.note_on(float(d1), float(d2), note_id=midi_note_id(channel, d1), channel=channel,
                           at_frame=at_frame)
            return True
        if kind == 0x80:
            engine.note_off(note_id=midi_note_id(channel, d1), channel=channel, at_frame=at_frame)
            return True
        if kind == 0xE0:
            self.channels[channel].bend_raw = d1 | (d2 << 7)
            self._send_bend(channel, at_frame)
            return True
        if kind == 0xB0:
            return self._control(channel, d1, d2, at_frame)
        if kind == 0xC0 and self.map.program_change:
            names = engine.preset_names()
            if d1 >= len(names):
                return False
            try:
                engine.timbre_preset(names[d1])
            except KeyError:
                return False
            return True
        return False  # poly/channel pressure, or program change ignored by the map

    def bend_semitones(self, channel: int) -> float:
        """Current bend of 0-based `channel` (semitones): 0 at 8192, ±range at 0 and 16383."""
        state = self.channels[channel]
        offset = state.bend_raw - BEND_CENTER
        return state.bend_range * offset / (BEND_CENTER if offset <= 0 else BEND_CENTER - 1)

    def _send_bend(self, channel: int, at_frame: int | None) -> None:
        self.engine.pitch_bend(channel, self.bend_semitones(channel), at_frame=at_frame)

    def _control(self, channel: int, cc: int, value: int, at_frame: int | None) -> bool:
        state = self.channels[channel]
        if cc == 101:
            state.rpn_msb = value
            state.rpn = None
            return True
        if cc == 100:
            state.rpn = None if (state.rpn_msb, value) == (127, 127) else (state.rpn_msb, value)
            return True
        if cc in (98, 99):  # NRPN selected: data entry no longer goes to an RPN
            state.rpn = None
            return True
        if cc in (6, 38):
            if state.rpn != (0, 0):
                return False
            if cc == 6:  # MIDI 1.0: a new MSB sets the LSB to zero
                state.bend_semitones, state.bend_cents = value, 0
            else:
                state.bend_cents = value
            state.bend_range = state.bend_semitones + state.bend_cents / 100.0
            if state.bend_raw != BEND_CENTER:
                self._send_bend(channel, at_frame)
            return True
        action = self.cc.get(cc)
        if action is None:
            return False
        return self._action(action, channel, value, at_frame)

    def _action(self, action: str, channel: int, value: int, at_frame: int | None) -> bool:
        engine, state = self.engine, self.channels[channel]
        if action in ("timbre_x", "timbre_y"):
            if action == "timbre_x":
                self.x = value / 127.0
            else:
                self.y = value / 127.0
            engine.timbre_xy(self.x, self.y, glide_s=self.map.timbre_glide_s, at_frame=at_frame)
        elif action == "sustain":
            down = value >= 64
            if down == state.sustain:
                return False
            state.sustain = down
            engine.sustain(channel, down, at_frame=at_frame)
        elif action == "all_sound_off":
            engine.all_sound_off(channel, at_frame=at_frame)
        elif action == "all_notes_off":
            engine.all_notes_off(channel, at_frame=at_frame)
        elif action == "reset_controllers":
            state.bend_raw, state.sustain, state.rpn, state.rpn_msb = BEND_CENTER, False, None, 127
            engine.reset_controllers(channel, at_frame=at_frame)
        elif action == "gru_glide":
            engine.gru_glide(value / 127.0, at_frame=at_frame)
        elif action == "gru_temperature":
            engine.gru_temperature(MAX_TEMPERATURE * value / 127.0, at_frame=at_frame)
        else:
            layer = {"master_gain": "master", "mix_sampler": "sampler", "mix_gru": "gru"}[action]
            engine.set_gain(layer, value / 127.0, at_frame=at_frame)
        return True

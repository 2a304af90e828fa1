"""The engine's one held-note table: the notes held at control time, keyed by note id.

Every note has an id: the client's (`/note/on ... id`, 0 ..), MIDI input's (from channel and key,
`rt_engine.io.midi_map.midi_note_id`), or, for a note started without one, `pitch_note_id(slot,
pitch)` (negative, so it never collides with a client's or MIDI's). Two notes at the same pitch with
different ids (two MPE channels, two OSC ids) are two entries.

The engine writes the table once per control event (under its control lock), and its ids travel
in the event stream every layer reads (`rt_engine.core.commands`): each note's id, and with a release the
newest note still held (a monophonic layer's fall-back for last-note priority); the bank manager's
boost reads the held pitches. The table is bounded by
the polyphony: a note beyond it forgets the oldest (the sampler steals that voice too). Every
operation is O(1) except the rare whole-channel release (O(held) <= O(polyphony)).

The table follows arrival order; the block kernel applies dated events at their frame.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

PITCH_ID_SCALE = 1 << 20
"""Pitch quantum of a derived id: 2**-20 semitones (the kernel matches pitches within 1e-6)."""
PITCH_ID_SLOT = 1 << 28
"""Derived ids of one channel slot span this many values (pitches 0..127 scaled by PITCH_ID_SCALE)."""


def pitch_note_id(slot: int, pitch: float) -> int:
    """The id of a note started without one: negative, one per (channel slot 0..16, MIDI pitch)."""
    return -1 - slot * PITCH_ID_SLOT - int(round(float(pitch) * PITCH_ID_SCALE))


@dataclass
class HeldNote:
    """One held note: its id, sounding pitch (MIDI; follows `/note/pitch`) and channel slot (0..16)."""

    note_id: int
    pitch: float
    slot: int


class HeldNotes:
    """Held notes keyed by id, oldest first, at most `capacity` (see the module docstring).
    Not thread-safe on its own: the engine calls it under its control lock."""

    def __init__(self, capacity: int):
        self._notes: collections.OrderedDict[int, HeldNote] = collections.OrderedDict()
        self._by_pitch: dict[float, dict[int, None]] = {}  # pitch -> ids held at it (insertion order)
        self.capacity = 1
        self.resize(capacity)

    def __len__(self) -> int:
        return len(self._notes)

    def __contains__(self, note_id: int) -> bool:
        return note_id in self._notes

    def get(self, note_id: int) -> HeldNote | None:
        return self._notes.get(note_id)

    def press(self, note_id: int, pitch: float, slot: int) -> list[int]:
        """Hold note `note_id` at `pitch` on channel `slot` as the newest (a re-strike of a held id
        moves it). Returns the ids forgotten to stay within the capacity, oldest first."""
        self.release(note_id)
        forgotten = []
        while len(self._notes) >= self.capacity:
            forgotten.append(self._forget_oldest())
        self._notes[note_id] = HeldNote(note_id, float(pitch), slot)
        self._by_pitch.setdefault(float(pitch), {})[note_id] = None
        return forgotten

    def release(self, note_id: int) -> HeldNote | None:
        """Forget `note_id`; the note, or None when it was not held."""
        note = self._notes.pop(note_id, None)
        if note is not None:
            self._unindex(note)
        return note

    def release_pitch(self, pitch: float, slot: int) -> list[int]:
        """Forget the notes at `pitch` on channel `slot` (0: any channel); their ids."""
        ids = [note_id for note_id in self._by_pitch.get(float(pitch), ())
               if slot == 0 or self._notes[note_id].slot == slot]
        for note_id in ids:
            self.release(note_id)
        return ids

    def release_channel(self, slot: int) -> list[int]:
        """Forget the notes on channel `slot` (0: all); their ids, oldest first."""
        ids = [note_id for note_id, note in self._notes.items() if slot == 0 or note.slot == slot]
        for note_id in ids:
            self.release(note_id)
        return ids

    def set_pitch(self, note_id: int, pitch: float) -> None:
        """A held note glides to `pitch` (its fall-back pitch from now on)."""
        note = self._notes.get(note_id)
        if note is not None:
            self._unindex(note)
            note.pitch = float(pitch)
            self._by_pitch.setdefault(note.pitch, {})[note_id] = None

    def newest(self) -> HeldNote | None:
        """The most recently pressed note still held."""
        return self._notes[next(reversed(self._notes))] if self._notes else None

    def pitches(self) -> list[float]:
        """The distinct held pitches (at most `capacity`; a copy made at C speed)."""
        return list(self._by_pitch)

    def resize(self, capacity: int) -> list[int]:
        """Hold at most `capacity` (>= 1) notes; returns the ids forgotten, oldest first."""
        if capacity < 1:
            raise ValueError(f"held-note capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        return [self._forget_oldest() for _ in range(len(self._notes) - self.capacity)]

    def _forget_oldest(self) -> int:
        note_id, note = self._notes.popitem(last=False)
        self._unindex(note)
        return note_id

    def _unindex(self, note: HeldNote) -> None:
        ids = self._by_pitch[note.pitch]
        del ids[note.note_id]
        if not ids:
            del self._by_pitch[note.pitch]

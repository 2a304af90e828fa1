"""The engine's one event stream: fixed-size command records in a bounded ring, written once by
the engine and read by every layer.

Control threads (OSC, MIDI, score player) call the engine, which publishes each control event as
one record; the audio callback's block kernel (`rt_engine.core.voice_kernel.render_block`) drains them
at the start of each block, and a stream layer (the GRU voices) follows the same records from its
own thread (`EventFollower`). Nothing here allocates on the kernel's side, and the producer never
blocks: a ring the kernel has not drained counts and drops.

Layout:
- `COMMAND_DTYPE`: one record = kind, channel, absolute output frame (-1 = next block), arrival
  sequence number, note id, three float arguments (meaning per kind, see `CommandKind`), the
  held-note table's id of the note or of a release's fall-back note (`held_id`), the frame of the
  next block when the record was published (`posted`: where an undated record lands for a layer
  that renders ahead) and `skip_kernel` (1: the block kernel skips it, because the native JACK
  callback already applied it or it is for the stream layers only).
- `CommandQueue`: `records` (structured [capacity]) plus `positions` int64 [2] =
  (written, read by the kernel), both monotonic counters; the slot of counter `k` is `k % capacity`.
  The producer writes a record, then publishes it by advancing `written`; the consumer reads
  records below `written`, then advances `read`. Several control threads share one producer side
  through a producer lock (the audio thread never takes it). A follower keeps its own position and
  never holds the producer back: one that falls a whole ring behind skips what was overwritten
  and counts it.
- The pending schedule (future-dated commands) lives in the kernel's state: a bounded structured
  array of the same dtype, `PENDING_CAPACITY` records; the kernel counts what it drops and what
  came late (see `Counter`).

Releases (NOTE_OFF_ID, NOTE_OFF_PITCH, ALL_NOTES_OFF, ALL_SOUND_OFF, PANIC) carry the newest note
the engine's held-note table still holds after them, which a monophonic layer falls back to:
`held_id` its id, `b` its pitch (NaN: none), `c` its MIDI channel.
"""
from __future__ import annotations

import threading
from enum import IntEnum

import numpy as np

COMMAND_DTYPE = np.dtype([
    ("kind", np.int32),
    ("channel", np.int32),
    ("frame", np.int64),    # absolute output frame (samples); -1 = at the start of the next block
    ("seq", np.int64),      # arrival order: ties at the same frame apply in this order
    ("note_id", np.int64),
    ("a", np.float64),
    ("b", np.float64),
    ("c", np.float64),
    ("held_id", np.int64),  # the held-note table's id of the note (NOTE_ON) or of the fall-back (releases)
    ("posted", np.int64),   # frame of the next block at publication (-1: unknown)
    ("skip_kernel", np.int32),
])

DEFAULT_QUEUE_CAPACITY = 4096
PENDING_CAPACITY = 4096
N_CHANNELS = 17
"""Channel slots: index 0 = "no MIDI channel" (-1), 1..16 = MIDI channels 0..15."""


class CommandKind(IntEnum):
    """Command kinds and the meaning of their fields (`a`, `b`, `c`, `note_id`, `channel`)."""

    NOTE_ON = 1            # a = pitch (MIDI), b = velocity 1..127, note_id, channel
    NOTE_OFF_PITCH = 2     # a = pitch (MIDI), channel (-1 = any channel)
    NOTE_OFF_ID = 3        # note_id
    NOTE_PITCH = 4         # note_id, a = target pitch (MIDI), b = glide (s)
    PITCH_BEND = 5         # channel (-1 = all), a = bend (semitones)
    SUSTAIN = 6            # channel (-1 = all), a = 1 down / 0 up
    ALL_NOTES_OFF = 7      # channel (-1 = all): releases, respecting the pedal
    ALL_SOUND_OFF = 8      # channel (-1 = all): short fade to silence
    RESET_CONTROLLERS = 9  # channel (-1 = all): bend 0, pedal up
    TIMBRE_XY = 10         # a = x, b = y, c = glide (s), note_id = timbre generation; leaves an exact bank
    SET_GAIN = 11          # channel = layer (GAIN_SAMPLER/GAIN_GRU/GAIN_MASTER), a = linear gain
    SELECT_BANK = 12       # note_id = slot id of an exact bank, a = timbre generation: plays that
                           # bank with its envelope unless a newer timbre request was applied
    PANIC = 13             # all voices fade out, pending schedule cleared
    GRU_TEMPERATURE = 14   # a = sampling temperature of the GRU voices (stream layers only)


RELEASES = (CommandKind.NOTE_OFF_ID, CommandKind.NOTE_OFF_PITCH, CommandKind.ALL_NOTES_OFF,
            CommandKind.ALL_SOUND_OFF, CommandKind.PANIC)
"""Kinds that carry the fall-back note (see the module docstring)."""
FIRST_LAYER_KIND = int(CommandKind.GRU_TEMPERATURE)
"""Kinds from this one on are for the stream layers; the block kernel skips them."""


DEFAULT_ADSR = (0.003, 0.3, 1.0, 0.25)
"""(attack s, decay s, sustain level, release s) of grid points and banks without their own."""

GAIN_SAMPLER = 0
GAIN_GRU = 1
GAIN_MASTER = 2


class Counter(IntEnum):
    """Indices into the kernel's int64 counter array."""

    COMMANDS = 0         # commands applied
    DROPPED = 1          # dropped: queue full (producer side) or pending schedule full
    LATE = 2             # dated commands whose frame had already passed when drained
    GRU_UNDERRUNS = 3    # frames the stream layer had not rendered in time
    VOICES = 4           # voices sounding after the last block
    STEALS = 5           # voices stolen
    PENDING = 6          # records held in the pending schedule
    FRAME = 7            # absolute frame of the next block's first sample
    N = 8


def channel_slot(channel: int) -> int:
    """Channel slot for a MIDI channel (0..15) or -1 (no channel): 0..16."""
    if channel < -1 or channel > 15:
        raise ValueError(f"MIDI channel must be -1 or 0..15, got {channel}")
    return channel + 1


class CommandQueue:
    """Bounded ring of `COMMAND_DTYPE` records, one producer side (locked) and the kernel as its
    consumer, plus any `EventFollower`s; `push` never blocks (full: count and drop)."""

    def __init__(self, capacity: int = DEFAULT_QUEUE_CAPACITY):
        if capacity < 1:
            raise ValueError(f"command queue capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.records = np.zeros(self.capacity, dtype=COMMAND_DTYPE)
        self.positions = np.zeros(2, dtype=np.int64)  # (written, read)
        self.dropped = 0
        self._seq = 0
        self._producer_lock = threading.Lock()

    def push(self, kind: int, frame: int = -1, channel: int = -1, note_id: int = -1,
             a: float = 0.0, b: float = 0.0, c: float = 0.0, held_id: int = -1, posted: int = -1,
             skip_kernel: bool = False) -> bool:
        """Append one command for absolute output `frame` (samples; -1 = next block).
        Returns False (and counts a drop) when the ring is full."""
        with self._producer_lock:
            written = int(self.positions[0])
            if written - int(self.positions[1]) >= self.capacity:
                self.dropped += 1
                return False
            self.records[written % self.capacity] = (  # one assignment: a field at a time costs 8x
                kind, channel, frame, self._seq, note_id, a, b, c, held_id, posted, 1 if skip_kernel else 0)
            self._seq += 1
            self.positions[0] = written + 1  # publish after the record is complete
            return True

    def __len__(self) -> int:
        return int(self.positions[0] - self.positions[1])

    def pop_all_ref(self) -> np.ndarray:
        """Consumer-side reference drain (NumPy, for tests): records in arrival order
        [n_available] as a copy, advancing the read counter."""
        written, read = int(self.positions[0]), int(self.positions[1])
        index = np.arange(read, written) % self.capacity
        out = self.records[index].copy()
        self.positions[1] = written
        return out


_NO_RECORDS = np.zeros(0, dtype=COMMAND_DTYPE)


class EventFollower:
    """A second reader of a `CommandQueue` (a stream layer's thread): every record published since
    it began following, in order, copied out; it never holds the producer back. `missed` counts the
    records it lost by falling a whole ring behind (overwritten before it read them)."""

    def __init__(self, queue: CommandQueue):
        self.queue = queue
        self.position = int(queue.positions[0])
        self.missed = 0

    def drain(self) -> np.ndarray:
        """The records published since the last drain (a copy, oldest first)."""
        queue, capacity = self.queue, self.queue.capacity
        written = int(queue.positions[0])
        if written == self.position:  # the usual case, once per rendered block: no allocation
            return _NO_RECORDS
        start = max(self.position, written - capacity)
        records = queue.records[np.arange(start, written) % capacity]  # fancy indexing: a copy
        intact_from = max(start, int(queue.positions[0]) - capacity + 1)  # the producer may be reusing older slots
        self.missed += intact_from - self.position
        self.position = written
        return records[intact_from - start:]


def pending_order_ref(pending: np.ndarray, block_start: int, block_end: int) -> np.ndarray:
    """NumPy reference of the due-command order: indices into `pending` [n] of the records due
    before absolute frame `block_end` (samples), sorted by (effective frame, seq), where the
    effective frame of an undated (-1) or late record is `block_start`."""
    frames = np.maximum(pending["frame"].astype(np.int64), block_start)
    due = np.nonzero(frames < block_end)[0]
    order = np.lexsort((pending["seq"][due], frames[due]))
    return due[order]

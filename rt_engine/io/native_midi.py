"""JACK MIDI read inside the native JACK callback: note on/off, pitch bend and sustain applied at
their event's frame in the same block, sample-accurately, with the MIDI map's semantics.

The JACK backend registers a MIDI input port `latentsynth` on its own client; `jack_process`
(`rt_engine.io.native_audio`) calls `read_jack_midi` before rendering. For every event in the
port buffer (`jack_port_get_buffer`, `jack_midi_get_event_count`, `jack_midi_event_get`, called
through addresses held in `state`):
- `midi_command` translates note on (velocity 0 is off), note off, pitch bend and the CCs the
  map sends to "sustain" into a command record (`rt_engine.core.commands`) written straight into the
  kernel's pending schedule at frame `block start + event time`;
- every channel message (0x80-0xEF, 1-3 bytes) also goes into `ring`, a bounded single-producer
  ring the control side drains (`MidiInput`'s native path), woken by a POSIX semaphore the
  callback posts once per cycle with events (`sem_post` never blocks; no polling). There
  `MidiMapper` does what the callback does not (CC timbre, program change, RPN bend range,
  gains) and the control-side work of the applied ones (held notes, bank priority, the GRU
  layer). Full ring: counted in `state[S_DROPPED]`, never blocks.

Arrays (all preallocated, owned by `NativeMidi`):
- params float64 [N_PARAMS]: M_LISTEN + channel (1 = listened), M_BEND_RANGE + channel
  (semitones, written by the control side after an RPN 0 change), M_SUSTAIN_CC + cc (1 = the
  map's "sustain" CC);
- ring float64 [capacity, N_FIELDS] (E_FRAME absolute frame, E_SIZE bytes, E_B0..E_B2,
  E_APPLIED 1 when the callback applied it, E_VALUE the applied bend in semitones), ring_pos
  int64 [2] (written, read);
- state int64 [N_STATE]: the port and function addresses, the jack_midi_event_t scratch, the
  native sequence counter and counts.
`midi_command`'s reference is `MidiMapper` itself; a test feeds both the same messages.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import time

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from rt_engine.core.commands import CommandKind, Counter
from rt_engine.io.midi_map import BEND_CENTER, MidiMap
from rt_engine.osc.osc_registry import MIDI_NOTE_ID_BASE
from models.kernel_cache import drop_stale_cache

drop_stale_cache(__name__)

N_CHANNELS = 16
M_LISTEN, M_BEND_RANGE, M_SUSTAIN_CC = 0, 16, 32
N_PARAMS = 32 + 128
E_FRAME, E_SIZE, E_B0, E_B1, E_B2, E_APPLIED, E_VALUE = range(7)
N_FIELDS = 7
S_PORT, S_GET_BUFFER, S_EVENT_COUNT, S_EVENT_GET = 0, 1, 2, 3
S_EVENT = 4           # 4, 5, 6: jack_midi_event_t {uint32 time; size_t size; uint8 *buffer}
S_SEQ = 7             # sequence number of the next native command (ties apply after Python's)
S_DROPPED = 8         # events the full ring could not take
S_EVENTS = 9          # events read
S_SEM_POST, S_SEM = 10, 11  # libc sem_post and the semaphore (sem_t *) posted after new events
N_STATE = 12
SEQ_BASE = 1 << 62
RING_CAPACITY = 1024
_NOTE_ON, _NOTE_OFF_ID = int(CommandKind.NOTE_ON), int(CommandKind.NOTE_OFF_ID)
_PITCH_BEND, _SUSTAIN = int(CommandKind.PITCH_BEND), int(CommandKind.SUSTAIN)


@functools.lru_cache(maxsize=None)
def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    for name in ("sem_init", "sem_timedwait", "sem_post"):
        getattr(libc, name).restype = ctypes.c_int
    libc.sem_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint]
    libc.sem_timedwait.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    libc.sem_post.argtypes = [ctypes.c_void_p]
    return libc


@intrinsic
def _call_get_buffer(typingctx, function, port, n_frames):
    """`(int64) jack_port_get_buffer((jack_port_t *) port, (uint32) n_frames)` by address."""
    def codegen(context, builder, signature, args):
        int8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(int8p, [int8p, ir.IntType(32)])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        frames = context.cast(builder, args[2], signature.args[2], types.uint32)
        buffer = builder.call(fn, [builder.inttoptr(args[1], int8p), frames])
        return builder.ptrtoint(buffer, ir.IntType(64))

    return types.int64(function, port, n_frames), codegen


@intrinsic
def _call_with_pointer(typingctx, function, buffer):
    """`(uint32) function((void *) buffer)` by address: jack_midi_get_event_count, sem_post."""
    def codegen(context, builder, signature, args):
        int8p = ir.IntType(8).as_pointer()
        fn = builder.inttoptr(args[0], ir.FunctionType(ir.IntType(32), [int8p]).as_pointer())
        return builder.call(fn, [builder.inttoptr(args[1], int8p)])

    return types.uint32(function, buffer), codegen


@intrinsic
def _call_event_get(typingctx, function, event, buffer, index):
    """`jack_midi_event_get((jack_midi_event_t *) event, (void *) buffer, (uint32) index)`."""
    def codegen(context, builder, signature, args):
        int8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(32), [int8p, int8p, ir.IntType(32)])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        i = context.cast(builder, args[3], signature.args[3], types.uint32)
        return builder.call(fn, [builder.inttoptr(args[1], int8p), builder.inttoptr(args[2], int8p), i])

    return types.int32(function, event, buffer, index), codegen


@intrinsic
def _byte_at(typingctx, address):
    """The uint8 at `address`."""
    def codegen(context, builder, signature, args):
        return builder.load(builder.inttoptr(args[0], ir.IntType(8).as_pointer()))

    return types.uint8(address), codegen


@numba.njit(cache=True, nogil=True)
def midi_command(params, size, b0, b1, b2):
    """One MIDI message (`size` bytes b0..b2) -> (kind, channel, note_id, a, b) of the command
    the callback applies, kind 0 when it applies none (the control side handles it).
    Channels are 0-based; a = pitch or bend (semitones) or pedal (1 down / 0 up), b = velocity."""
    if size != 3 or b0 < 0x80 or b0 > 0xEF or b1 > 127 or b2 > 127:
        return 0, 0, 0, 0.0, 0.0
    kind, channel = b0 & 0xF0, b0 & 0x0F
    if params[M_LISTEN + channel] < 0.5:
        return 0, 0, 0, 0.0, 0.0
    note_id = MIDI_NOTE_ID_BASE + 128 * channel + b1
    if kind == 0x90 and b2 > 0:
        return _NOTE_ON, channel, note_id, float(b1), float(b2)
    if kind == 0x80 or kind == 0x90:
        return _NOTE_OFF_ID, channel, note_id, 0.0, 0.0
    if kind == 0xE0:
        offset = (b1 | (b2 << 7)) - BEND_CENTER
        bend = params[M_BEND_RANGE + channel] * offset / (BEND_CENTER if offset <= 0 else BEND_CENTER - 1)
        return _PITCH_BEND, channel, -1, bend, 0.0
    if kind == 0xB0 and params[M_SUSTAIN_CC + b1] > 0.5:
        return _SUSTAIN, channel, -1, 1.0 if b2 >= 64 else 0.0, 0.0
    return 0, 0, 0, 0.0, 0.0


@numba.njit(cache=True, nogil=True)
def apply_midi_event(params, ring, ring_pos, state, pending, counters, offset, size, b0, b1, b2):
    """One event at `offset` frames into the block: its command into `pending` (full: counted
    as dropped), the event into `ring` (full: counted in state[S_DROPPED])."""
    if size < 1 or size > 3 or b0 < 0x80 or b0 > 0xEF:
        return
    kind, channel, note_id, a, b = midi_command(params, size, b0, b1, b2)
    frame = counters[Counter.FRAME] + offset
    if kind != 0:
        n = counters[Counter.PENDING]
        if n < pending.shape[0]:
            record = pending[n]
            record["kind"] = kind
            record["channel"] = channel
            record["frame"] = frame
            record["seq"] = SEQ_BASE + state[S_SEQ]
            record["note_id"] = note_id
            record["a"] = a
            record["b"] = b
            record["c"] = 0.0
            counters[Counter.PENDING] = n + 1
            state[S_SEQ] += 1
        else:
            counters[Counter.DROPPED] += 1
    written = ring_pos[0]
    if written - ring_pos[1] >= ring.shape[0]:
        state[S_DROPPED] += 1
        return
    row = ring[written % ring.shape[0]]
    row[E_FRAME] = frame
    row[E_SIZE] = size
    row[E_B0], row[E_B1], row[E_B2] = b0, b1, b2
    row[E_APPLIED] = 1.0 if kind != 0 else 0.0
    row[E_VALUE] = a if kind == _PITCH_BEND else 0.0
    ring_pos[0] = written + 1  # publish after the row is complete


@numba.njit(cache=True, nogil=True)
def read_jack_midi(params, ring, ring_pos, state, pending, counters, n_frames):
    """Read this cycle's events from the JACK MIDI port at state[S_PORT] (JACK process thread)."""
    buffer = _call_get_buffer(state[S_GET_BUFFER], state[S_PORT], n_frames)
    if buffer == 0:
        return
    n_events = _call_with_pointer(state[S_EVENT_COUNT], buffer)
    written = ring_pos[0]
    event = state[S_EVENT:S_EVENT + 3].ctypes.data
    for i in range(n_events):
        if _call_event_get(state[S_EVENT_GET], event, buffer, i) != 0:
            continue
        offset = min(state[S_EVENT] & 0xFFFFFFFF, n_frames - 1)
        size, data = state[S_EVENT + 1], state[S_EVENT + 2]
        state[S_EVENTS] += 1
        b0 = _byte_at(data) if size >= 1 else 0
        b1 = _byte_at(data + 1) if size >= 2 else 0
        b2 = _byte_at(data + 2) if size >= 3 else 0
        apply_midi_event(params, ring, ring_pos, state, pending, counters, offset, size, b0, b1, b2)
    if ring_pos[0] != written and state[S_SEM] != 0:
        _call_with_pointer(state[S_SEM_POST], state[S_SEM])


class NativeMidi:
    """The arrays the native callback reads MIDI with (module docstring), set from `midi_map`."""

    def __init__(self, midi_map: MidiMap, capacity: int = RING_CAPACITY):
        self.params = np.zeros(N_PARAMS)
        for channel in range(N_CHANNELS):
            listened = midi_map.channels is None or channel in midi_map.channels
            self.params[M_LISTEN + channel] = 1.0 if listened else 0.0
            self.params[M_BEND_RANGE + channel] = midi_map.initial_bend_range(channel)
        for cc, action in midi_map.cc_actions:
            if action == "sustain":
                self.params[M_SUSTAIN_CC + cc] = 1.0
        self.ring = np.zeros((capacity, N_FIELDS))
        self.ring_pos = np.zeros(2, dtype=np.int64)
        self.state = np.zeros(N_STATE, dtype=np.int64)
        libc = _libc()
        self._semaphore = np.zeros(8, dtype=np.int64)  # room for a sem_t (32 bytes on glibc)
        if libc.sem_init(self._semaphore.ctypes.data, 0, 0) != 0:
            raise OSError("sem_init failed")
        self.state[S_SEM_POST] = ctypes.cast(libc.sem_post, ctypes.c_void_p).value
        self.state[S_SEM] = self._semaphore.ctypes.data

    def wait(self, timeout_s: float = 1.0) -> bool:
        """Control side: block (without the GIL) until the callback posted new events or `wake`
        (True), at most `timeout_s` (False)."""
        deadline = time.time() + timeout_s
        whole = int(deadline)
        timespec = (ctypes.c_long * 2)(whole, int((deadline - whole) * 1e9))
        while _libc().sem_timedwait(int(self.state[S_SEM]), timespec) != 0:
            if ctypes.get_errno() != errno.EINTR:
                return False
        return True

    def wake(self) -> None:
        """Wake a `wait` (e.g. to stop the thread that waits)."""
        _libc().sem_post(int(self.state[S_SEM]))

    @property
    def events(self) -> int:
        """Events the callback has read."""
        return int(self.state[S_EVENTS])

    @property
    def dropped(self) -> int:
        """Events the full ring could not take."""
        return int(self.state[S_DROPPED])

    def drain(self) -> np.ndarray:
        """Control side: the events written since the last drain, float64 [n, N_FIELDS] (a copy)."""
        written, read = int(self.ring_pos[0]), int(self.ring_pos[1])
        rows = self.ring[np.arange(read, written) % self.ring.shape[0]].copy()
        self.ring_pos[1] = written
        return rows

"""The native OSC lane: the UDP socket read by machine code, and a lone `/note/on` or `/note/off`
from this machine applied by the native audio callback at its next block, without waiting for
any Python thread (nor for the GIL).

The lane thread is a Python thread that calls `receive_loop` (Numba, `nogil`) once; it blocks in
libc `recvfrom` on the OSC server's UDP socket. Every datagram is forwarded to the server thread
(`packets`/`entries` below, then one wake-up byte on the server's socket pair), where admission,
decoding, replies and counting happen as for every packet. A datagram is also applied at once,
and forwarded marked "applied", when all of these hold:
- it is one message (not a bundle), `/note/on` or `/note/off`, whose arguments `note_command`
  accepts: OSC types `i` and `f` only, the registry's ranges and forms (`/note/on pitch velocity
  [id]`, `/note/off pitch` float-typed, `/note/off id` int-typed); anything else goes the
  server's way and gets its reply there;
- it comes from a loopback address (127.0.0.0/8): other hosts pass the server's access policy;
- the server thread has handled every datagram forwarded before it (`S_FORWARDED ==
  S_HANDLED`), so an applied note never overtakes an earlier packet (`/timbre/xy` then
  `/note/on` keeps its order);
- the lane's token bucket (`LANE_RATE_PER_S`, `LANE_BURST`) has a token: a flood soon makes the
  server busy or empties the bucket, and then takes the server's per-source turns and limits.
Applied: its command goes into `notes`, a single-producer ring that the native callback
(`rt_engine.io.native_audio.process_table`) drains at its next block start into the pending
schedule (`drain_notes`); the server then does the control-side work only (held notes, the
stream layers, bank priority: `Engine.note_on(..., applied=True)`), as for JACK MIDI read in the
callback.

Arrays (all preallocated, owned by `NativeOscLane`):
- state int64 [N_STATE]: the socket and libc addresses, counters (S_*);
- bucket float64 [2]: (tokens, time of the last refill in s);
- packets uint8 [PACKET_BYTES]: the datagrams' bytes, each contiguous (one that would cross the
  end starts at 0); entries int64 [ENTRIES, 4] = (end byte counter, start index, length,
  meta = IPv4 << 24 | port << 8 | applied); entries_pos int64 [4] = (entries written, read,
  bytes written, bytes read), monotonic counters;
- notes float64 [NOTES, N_NOTE_FIELDS] (kind, note_id, a, b), notes_pos int64 [3] = (written,
  read by the callback, sequence number of the next applied command).
`note_command`'s reference is the registry (`rt_engine.osc.osc_registry.dispatch`); a test feeds
both the same messages.
"""
from __future__ import annotations

import math
import socket
import struct
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from rt_engine.core.commands import CommandKind, Counter
from rt_engine.io.native_calls import CLOCK_MONOTONIC, clock_seconds, libc_address
from rt_engine.osc.osc_registry import MAX_NOTE_ID
from models.kernel_cache import drop_stale_cache

drop_stale_cache(__name__)

S_FD, S_RECVFROM, S_SEND, S_WAKE_FD, S_CLOCK_GETTIME = 0, 1, 2, 3, 4
S_TIMESPEC = 5        # 5, 6: struct timespec scratch
S_ADDRLEN = 7         # socklen_t scratch
S_STOP = 8            # 1: receive_loop returns (within RECEIVE_TIMEOUT_S)
S_ENABLED = 9         # 1: applying is on (a native callback drains `notes`)
S_FORWARDED, S_HANDLED = 10, 11   # datagrams forwarded / handled by the server thread
S_WAKE_PENDING = 12   # 1: a wake-up byte is on its way and the server has not drained since
S_DROPPED, S_APPLIED, S_RECEIVED = 13, 14, 15
N_STATE = 16
N_NOTE_FIELDS = 4     # kind, note_id, a, b
PACKET_BYTES = 16 << 20
ENTRIES = 4096
NOTES = 1024
MAX_DATAGRAM = 65536
LANE_RATE_PER_S = 2000.0
"""Applied notes per second the lane grants (all loopback sources together)."""
LANE_BURST = 64.0
"""Applied notes the lane grants at once (a ten-note chord and then some)."""
RECEIVE_TIMEOUT_S = 0.1
"""The socket's receive timeout: how soon `receive_loop` sees a stop request."""
SEQ_BASE = (1 << 62) + (1 << 60)
"""Sequence numbers of applied commands: ties at a frame apply after the server's records."""
MSG_DONTWAIT = 0x40
_NOTE_ON, _OFF_ID, _OFF_PITCH = int(CommandKind.NOTE_ON), int(CommandKind.NOTE_OFF_ID), int(CommandKind.NOTE_OFF_PITCH)
_ADDRESS_ON = np.frombuffer(b"/note/on\0\0\0\0", dtype=np.uint8).copy()
_ADDRESS_OFF = np.frombuffer(b"/note/off\0\0\0", dtype=np.uint8).copy()


@intrinsic
def _call_recvfrom(typingctx, function, fd, buffer, size, source, source_size):
    """`(int64) recvfrom((int) fd, (void *) buffer, (size_t) size, 0, (struct sockaddr *) source,
    (socklen_t *) source_size)` through its address."""
    def codegen(context, builder, signature, args):
        i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
        fnty = ir.FunctionType(i64, [i32, i8p, i64, i32, i8p, i32.as_pointer()])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(fn, [builder.trunc(args[1], i32), builder.inttoptr(args[2], i8p), args[3],
                                 ir.Constant(i32, 0), builder.inttoptr(args[4], i8p),
                                 builder.inttoptr(args[5], i32.as_pointer())])

    return types.int64(function, fd, buffer, size, source, source_size), codegen


@intrinsic
def _call_send(typingctx, function, fd, buffer, size, flags):
    """`(int64) send((int) fd, (void *) buffer, (size_t) size, (int) flags)` through its address."""
    def codegen(context, builder, signature, args):
        i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
        fn = builder.inttoptr(args[0], ir.FunctionType(i64, [i32, i8p, i64, i32]).as_pointer())
        return builder.call(fn, [builder.trunc(args[1], i32), builder.inttoptr(args[2], i8p), args[3],
                                 builder.trunc(args[4], i32)])

    return types.int64(function, fd, buffer, size, flags), codegen


@numba.njit(cache=True, nogil=True)
def _int32(data, at):
    value = (np.int64(data[at]) << 24) | (np.int64(data[at + 1]) << 16) | (np.int64(data[at + 2]) << 8) \
        | np.int64(data[at + 3])
    return value - (1 << 32) if value >= (1 << 31) else value


@numba.njit(cache=True, nogil=True)
def _argument(data, tag, at):
    """The OSC argument of type `tag` (`i` or `f`, big-endian) at `data[at:at + 4]` as float64;
    NaN for another type or a float that is not finite."""
    bits = _int32(data, at)
    if tag == 105:  # 'i'
        return np.float64(bits)
    if tag != 102:  # not 'f'
        return np.nan
    bits &= 0xFFFFFFFF
    exponent, mantissa = (bits >> 23) & 0xFF, bits & 0x7FFFFF
    if exponent == 255:
        return np.nan
    value = math.ldexp(np.float64(mantissa), -149) if exponent == 0 else \
        math.ldexp(np.float64(mantissa | 0x800000), exponent - 150)
    return -value if bits >> 31 else value


@numba.njit(cache=True, nogil=True)
def note_command(data, size):
    """One datagram `data[:size]` (uint8) -> (kind, note_id, a, b) of the command to apply now,
    kind 0 when the lane leaves it to the server. kind NOTE_ON: a = pitch, b = velocity 1..127;
    NOTE_OFF_ID: note_id; NOTE_OFF_PITCH: a = pitch. note_id -1: derived from the pitch."""
    none = (0, -1, 0.0, 0.0)
    if size != 20 and size != 24 and size != 32:  # 1, 2 or 3 arguments of 4 bytes
        return none
    on = True
    for i in range(12):
        if data[i] != _ADDRESS_ON[i]:
            on = False
            break
    if not on:
        for i in range(12):
            if data[i] != _ADDRESS_OFF[i]:
                return none
    if data[12] != 44:  # ','
        return none
    n_args = 0
    while n_args < 3 and data[13 + n_args] != 0:
        n_args += 1
    tags_end = 12 + (n_args + 2 + 3) // 4 * 4
    if tags_end + 4 * n_args != size:
        return none
    for i in range(13 + n_args, tags_end):
        if data[i] != 0:
            return none
    first = _argument(data, data[13], tags_end)
    if not math.isfinite(first):
        return none
    if on:
        if n_args < 2 or not 0.0 <= first <= 127.0:
            return none
        velocity = _argument(data, data[14], tags_end + 4)
        if not math.isfinite(velocity):
            return none
        note_id = -1
        if n_args == 3:
            if data[15] != 105:
                return none
            note_id = _int32(data, tags_end + 8)
            if not 0 <= note_id <= MAX_NOTE_ID:
                return none
        velocity = min(max(velocity, 0.0), 127.0)
        if velocity > 0.0:
            return _NOTE_ON, note_id, first, max(velocity, 1.0)
        if note_id >= 0:
            return _OFF_ID, note_id, 0.0, 0.0
        return _OFF_PITCH, -1, first, 0.0
    if n_args != 1:
        return none
    if data[13] == 105:
        if not 0 <= first <= MAX_NOTE_ID:
            return none
        return _OFF_ID, np.int64(first), 0.0, 0.0
    if not 0.0 <= first <= 127.0:
        return none
    return _OFF_PITCH, -1, first, 0.0


@numba.njit(cache=True, nogil=True)
def _grant(bucket, now):
    """One token of the lane's bucket (bucket = [tokens, last refill time s])."""
    bucket[0] = min(LANE_BURST, bucket[0] + (now - bucket[1]) * LANE_RATE_PER_S)
    bucket[1] = now
    if bucket[0] < 1.0:
        return False
    bucket[0] -= 1.0
    return True


@numba.njit(cache=True, nogil=True)
def lane_step(state, bucket, buffer, size, source, packets, entries, entries_pos, notes, notes_pos, now):
    """One received datagram `buffer[:size]` from `source` (struct sockaddr_in bytes): applied
    when it may be (module docstring), then forwarded. False when the forward rings are full
    (counted in state[S_DROPPED])."""
    state[S_RECEIVED] += 1
    family = np.int64(source[0]) | (np.int64(source[1]) << 8)
    port = (np.int64(source[2]) << 8) | np.int64(source[3])
    ipv4 = (np.int64(source[4]) << 24) | (np.int64(source[5]) << 16) | (np.int64(source[6]) << 8) \
        | np.int64(source[7])
    start = entries_pos[2] % packets.shape[0]
    skip = packets.shape[0] - start if start + size > packets.shape[0] else 0
    if (entries_pos[0] - entries_pos[1] >= entries.shape[0]
            or entries_pos[2] + skip + size - entries_pos[3] > packets.shape[0] or family != 2):
        state[S_DROPPED] += 1
        return False
    applied = 0
    if (state[S_ENABLED] != 0 and source[4] == 127 and state[S_FORWARDED] == state[S_HANDLED]
            and notes_pos[0] - notes_pos[1] < notes.shape[0]):
        kind, note_id, a, b = note_command(buffer, size)
        if kind != 0 and _grant(bucket, now):
            row = notes[notes_pos[0] % notes.shape[0]]
            row[0], row[1], row[2], row[3] = kind, note_id, a, b
            notes_pos[0] += 1  # publish after the row is complete
            state[S_APPLIED] += 1
            applied = 1
    if skip:
        start = 0
    packets[start:start + size] = buffer[:size]
    entry = entries[entries_pos[0] % entries.shape[0]]
    entry[0], entry[1], entry[2] = entries_pos[2] + skip + size, start, size
    entry[3] = (ipv4 << 24) | (port << 8) | applied
    entries_pos[2] += skip + size
    state[S_FORWARDED] += 1
    entries_pos[0] += 1  # publish after the entry is complete
    return True


@numba.njit(cache=True, nogil=True)
def receive_loop(state, bucket, buffer, source, packets, entries, entries_pos, notes, notes_pos):
    """The lane thread's whole life: receive, apply, forward and wake the server, until
    state[S_STOP] (module docstring). Never takes the GIL."""
    wake = np.ones(1, dtype=np.uint8)
    while state[S_STOP] == 0:
        state[S_ADDRLEN] = source.shape[0]
        size = _call_recvfrom(state[S_RECVFROM], state[S_FD], buffer.ctypes.data, buffer.shape[0],
                              source.ctypes.data, state[S_ADDRLEN:S_ADDRLEN + 1].ctypes.data)
        if size < 0:
            continue  # the receive timeout (a look at S_STOP) or a signal
        lane_step(state, bucket, buffer, size, source, packets, entries, entries_pos, notes, notes_pos,
                  clock_seconds(state[S_CLOCK_GETTIME], CLOCK_MONOTONIC, state[S_TIMESPEC:S_TIMESPEC + 2]))
        if state[S_WAKE_PENDING] == 0:
            state[S_WAKE_PENDING] = 1
            _call_send(state[S_SEND], state[S_WAKE_FD], wake.ctypes.data, 1, MSG_DONTWAIT)


@numba.njit(cache=True, nogil=True)
def drain_notes(notes, notes_pos, pending, counters):
    """Native callback, at its block start: the applied commands into the pending schedule at
    this block's first frame (full schedule: counted as dropped)."""
    while notes_pos[1] < notes_pos[0]:
        row = notes[notes_pos[1] % notes.shape[0]]
        n = counters[Counter.PENDING]
        if n < pending.shape[0]:
            record = pending[n]
            record["kind"] = np.int32(row[0])
            record["channel"] = -1
            record["frame"] = counters[Counter.FRAME]
            record["seq"] = SEQ_BASE + notes_pos[2]
            record["note_id"] = np.int64(row[1])
            record["a"] = row[2]
            record["b"] = row[3]
            record["c"] = 0.0
            counters[Counter.PENDING] = n + 1
            notes_pos[2] += 1
        else:
            counters[Counter.DROPPED] += 1
        notes_pos[1] += 1


class NativeOscLane:
    """The lane's arrays and thread for one UDP socket (module docstring). `start(wake_socket)`
    runs the thread; the server calls `drain()` on each wake-up and `handled(n)` after serving
    forwarded datagrams; `enable()` once a native callback drains `notes`."""

    def __init__(self, udp: socket.socket):
        self._udp = udp
        self.state = np.zeros(N_STATE, dtype=np.int64)
        self.bucket = np.array([LANE_BURST, 0.0])
        self.buffer = np.zeros(MAX_DATAGRAM, dtype=np.uint8)
        self.source = np.zeros(16, dtype=np.uint8)
        self.packets = np.zeros(PACKET_BYTES, dtype=np.uint8)
        self.entries = np.zeros((ENTRIES, 4), dtype=np.int64)
        self.entries_pos = np.zeros(4, dtype=np.int64)
        self.notes = np.zeros((NOTES, N_NOTE_FIELDS))
        self.notes_pos = np.zeros(3, dtype=np.int64)
        self._thread: threading.Thread | None = None

    def start(self, wake: socket.socket) -> None:
        """Block the socket with a receive timeout and start the lane thread; `wake` gets one
        byte whenever forwarded datagrams wait."""
        recvfrom, send, clock_gettime = (libc_address(name) for name in ("recvfrom", "send", "clock_gettime"))
        self._udp.setblocking(True)
        self._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             struct.pack("ll", 0, int(RECEIVE_TIMEOUT_S * 1e6)))
        self.state[[S_FD, S_RECVFROM, S_SEND, S_WAKE_FD, S_CLOCK_GETTIME]] = (
            self._udp.fileno(), recvfrom, send, wake.fileno(), clock_gettime)
        self._thread = threading.Thread(target=receive_loop, name="osc-lane", daemon=True, args=self.compile())
        self._thread.start()

    def compile(self) -> tuple:
        """Load (or compile and cache) `receive_loop` for this lane's arrays, here and now (not in
        the lane thread while datagrams wait); returns its arguments."""
        args = (self.state, self.bucket, self.buffer, self.source, self.packets, self.entries,
                self.entries_pos, self.notes, self.notes_pos)
        receive_loop.compile(tuple(numba.typeof(array) for array in args))
        return args

    def enable(self) -> None:
        """Apply notes from now on (a native callback drains `notes`)."""
        self.state[S_ENABLED] = 1

    @property
    def enabled(self) -> bool:
        return bool(self.state[S_ENABLED])

    def stop(self) -> None:
        """Stop the thread (within RECEIVE_TIMEOUT_S). Safe to call twice."""
        self.state[S_STOP] = 1
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def drain(self) -> list[tuple[bytes, tuple[str, int], bool]]:
        """Server thread: the datagrams forwarded since the last drain, as (data, (host, port),
        applied), oldest first."""
        self.state[S_WAKE_PENDING] = 0  # before reading: a datagram forwarded after this wakes again
        written, read = int(self.entries_pos[0]), int(self.entries_pos[1])
        out = []
        for k in range(read, written):
            end, start, size, meta = (int(v) for v in self.entries[k % ENTRIES])
            host = socket.inet_ntoa(struct.pack(">I", meta >> 24))
            out.append((self.packets[start:start + size].tobytes(), (host, (meta >> 8) & 0xFFFF), bool(meta & 1)))
            self.entries_pos[3] = end
        self.entries_pos[1] = written
        return out

    def handled(self, n: int = 1) -> None:
        """Server thread: `n` forwarded datagrams are served (dispatched, refused or dropped)."""
        self.state[S_HANDLED] += n

    def status(self) -> dict:
        """Counters for /status: datagrams received, applied by the lane, dropped (rings full)."""
        return {"osc_lane_received": int(self.state[S_RECEIVED]), "osc_lane_applied": int(self.state[S_APPLIED]),
                "osc_lane_dropped": int(self.state[S_DROPPED])}

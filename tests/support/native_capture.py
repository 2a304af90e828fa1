"""The capture client's JACK process callback in machine code: a recorder that never takes the GIL,
so the instrument that measures the graph cannot be the client that makes it miss a cycle.

`capture_process` (a Numba `cfunc`, `int (*)(jack_nframes_t, void *)`) is registered with libjack's
`jack_set_process_callback` on the capture client. Its user pointer is an int64 state table
(`CaptureState`): the addresses of libjack's `jack_port_get_buffer` and `jack_last_frame_time`, libc's
`clock_gettime`, the client and its input ports, and the recording arrays. Each cycle it copies the
input port buffers into `buffer` [n_ports, n_samples] at the cycle's JACK frame time (counted from
the first cycle it saw) and stores the CLOCK_MONOTONIC time (s, `time.perf_counter`'s clock on Linux)
at which the cycle ran in `cycle_start_s` [n_cycles]. It allocates nothing and touches no Python object.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.extending import intrinsic

from rt_engine.io.native_audio import _address, _call_port_get_buffer, _libjack, _pointer
from rt_engine.io.native_calls import CLOCK_MONOTONIC, clock_seconds, libc_address

S_GET_BUFFER, S_LAST_FRAME_TIME, S_CLOCK_GETTIME = 0, 1, 2   # function addresses
S_CLIENT, S_BUFFER, S_CYCLES = 3, 4, 5                       # jack_client_t*, float32 buffer, float64 cycles
S_SAMPLES, S_N_CYCLES, S_FIRST_FRAME = 6, 7, 8               # buffer length, cycles length, first frame (-1)
S_TIMESPEC = 9                                               # 9, 10: struct timespec scratch
S_N_PORTS, S_PORTS = 11, 12                                  # port count, jack_port_t* from index 12
MAX_PORTS = 8
N_STATE = S_PORTS + MAX_PORTS


@intrinsic
def _call_last_frame_time(typingctx, function, client):
    """`(jack_nframes_t) jack_last_frame_time((jack_client_t *) client)` through its address, as int64."""
    def codegen(context, builder, signature, args):
        int8, int32 = ir.IntType(8), ir.IntType(32)
        fnty = ir.FunctionType(int32, [int8.as_pointer()])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        frames = builder.call(fn, [builder.inttoptr(args[1], int8.as_pointer())])
        return builder.zext(frames, context.get_value_type(types.int64))

    return types.int64(function, client), codegen


@numba.cfunc(types.int32(types.uint32, types.CPointer(types.int64)), cache=True, nogil=True)
def capture_process(n_frames, arg):
    """JACK process callback: record the input ports' block and the wall time of the cycle."""
    state = carray(arg, (N_STATE,))
    frame = _call_last_frame_time(state[S_LAST_FRAME_TIME], state[S_CLIENT])
    if state[S_FIRST_FRAME] < 0:
        state[S_FIRST_FRAME] = frame
    start = frame - state[S_FIRST_FRAME]
    if start < 0 or start + n_frames > state[S_SAMPLES]:
        return 0
    now = clock_seconds(state[S_CLOCK_GETTIME], CLOCK_MONOTONIC, state[S_TIMESPEC:S_TIMESPEC + 2])
    cycles = carray(_pointer(state[S_CYCLES], numba.float64), (state[S_N_CYCLES],))
    cycle = start // n_frames
    if cycle < cycles.shape[0]:
        cycles[cycle] = now
    buffer = carray(_pointer(state[S_BUFFER], numba.float32), (state[S_N_PORTS], state[S_SAMPLES]))
    for k in range(state[S_N_PORTS]):
        source = _call_port_get_buffer(state[S_GET_BUFFER], state[S_PORTS + k], n_frames)
        for i in range(n_frames):
            buffer[k, start + i] = source[i]
    return 0


class CaptureState:
    """The state table of one capture client (keeps the arrays it points to alive)."""

    def __init__(self, client_address: int, port_addresses: list[int], buffer: np.ndarray,
                 cycle_start_s: np.ndarray):
        if len(port_addresses) > MAX_PORTS:
            raise ValueError(f"at most {MAX_PORTS} capture ports, got {len(port_addresses)}")
        if buffer.dtype != np.float32 or cycle_start_s.dtype != np.float64 or not buffer.flags.c_contiguous:
            raise ValueError("buffer must be C-contiguous float32 and cycle_start_s float64")
        lib = _libjack()
        self.buffer, self.cycle_start_s = buffer, cycle_start_s
        self.table = np.zeros(N_STATE, dtype=np.int64)
        self.table[S_GET_BUFFER] = _address(lib.jack_port_get_buffer)
        self.table[S_LAST_FRAME_TIME] = _address(lib.jack_last_frame_time)
        self.table[S_CLOCK_GETTIME] = libc_address("clock_gettime")
        self.table[S_CLIENT] = client_address
        self.table[S_BUFFER], self.table[S_CYCLES] = buffer.ctypes.data, cycle_start_s.ctypes.data
        self.table[S_SAMPLES], self.table[S_N_CYCLES] = buffer.shape[1], cycle_start_s.shape[0]
        self.table[S_FIRST_FRAME] = -1
        self.table[S_N_PORTS] = len(port_addresses)
        self.table[S_PORTS:S_PORTS + len(port_addresses)] = port_addresses

    @property
    def first_frame(self) -> int:
        """JACK frame time of the first recorded cycle (-1 before it)."""
        return int(self.table[S_FIRST_FRAME])

    def register(self) -> None:
        """Set `capture_process` as the (inactive) client's process callback; OSError if refused."""
        if _libjack().jack_set_process_callback(int(self.table[S_CLIENT]), capture_process.address,
                                                self.table.ctypes.data) != 0:
            raise OSError("jack_set_process_callback refused the native capture callback")

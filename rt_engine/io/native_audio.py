"""Native audio callbacks: the engine's block rendered by machine code that never takes the GIL.

`NativeBlock(engine)` lays out the addresses and shapes of every array the block kernel
(`rt_engine.core.voice_kernel.render_block`) reads and writes in one int64 table [N_ROWS, 4]
(row = address, shape 0..2). `process_table(table, n_frames)` (Numba, `nogil`) does what
`Engine.process` does in Python: adopt a staged voice pool, update the wall-clock estimate of
frame 0, render the block and measure the callback load. Two C callbacks (Numba `cfunc`s,
compiled once and cached) call it with the table as their user pointer:
- `jack_process` (`int (*)(jack_nframes_t, void*)`), registered with libjack's
  `jack_set_process_callback` (ctypes, `libjack.so.0`): writes the two JACK output port buffers
  (`jack_port_get_buffer`, called through its address in the table) and, with a MIDI port
  attached (`attach_midi`, rows R_MIDI_*), first reads the block's JACK MIDI events into the
  pending schedule at their frames (`rt_engine.io.native_midi`);
- both, through `process_table`, first take the notes the native OSC lane applied
  (`attach_osc_lane`, rows R_LANE_*: `rt_engine.osc.native_osc.drain_notes`) into the pending
  schedule at the block's first frame;
- `portaudio_callback` (PortAudio's `PaStreamCallback`), for a stream opened through ctypes on
  `libportaudio.so.2` (`PortAudioStream`): writes interleaved float32 stereo and counts output
  underflows as xruns.
The C functions the callbacks call (`jack_port_get_buffer`, libc `clock_gettime`: `rt_engine.io.native_calls`)
are reached through addresses stored in the table at run time, so the compiled callbacks cache on disk.

Nothing in a callback allocates, locks or touches a Python object. The control side stages a
resized voice pool with `stage_voices` (the callback adopts it at the next block start, like the
Python path). `native_available()` says whether this machine can use the native path; the
backends fall back to their Python callback when it cannot.
"""
from __future__ import annotations

import ctypes
import functools
import time

import numba
import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.extending import intrinsic

from rt_engine.io import native_midi as nm
from rt_engine.io.native_calls import CLOCK_MONOTONIC, CLOCK_REALTIME, clock_seconds, libc_address
from rt_engine.osc import native_osc
from rt_engine.core import voice_kernel as vk
from rt_engine.core.commands import COMMAND_DTYPE, Counter
from models.kernel_cache import drop_stale_cache

drop_stale_cache(__name__)

_RECORD = numba.from_dtype(COMMAND_DTYPE)
KERNEL_STATE_SPEC = (
    (COMMAND_DTYPE, 1), (np.int64, 1), (COMMAND_DTYPE, 1),          # queue, queue_pos, pending
    (np.float64, 2), (np.float64, 2), (np.float64, 2),              # voices, voice_w, w_step
    (np.float64, 2), (np.float64, 1), (np.int64, 1),                # channels, params, counters
    (np.float64, 2), (np.uint8, 2), (np.float64, 1),                # slots, row_ready, row_pitch
    (np.float32, 3), (np.float32, 2), (np.float32, 1), (np.int64, 1),  # banks, sinc, gru ring, pos
    (np.float64, 2), (np.float64, 2), (np.float64, 1), (np.int64, 1),  # mix, bend_curve, work, due
)
"""(dtype, ndim) of each array `Engine.kernel_state()` returns, in `render_block`'s order."""

# --- table rows: [address, shape 0, shape 1, shape 2]
R_QUEUE, R_QUEUE_POS, R_PENDING = 0, 1, 2
R_VOICES, R_VOICE_W, R_W_STEP = 3, 4, 5
R_CHANNELS, R_PARAMS, R_COUNTERS = 6, 7, 8
R_SLOTS, R_ROW_READY, R_ROW_PITCH = 9, 10, 11
R_BANKS, R_SINC, R_GRU_RING, R_GRU_POS = 12, 13, 14, 15
R_MIX, R_BEND, R_WORK, R_DUE = 16, 17, 18, 19
R_OUT = 20                                   # float32 [2, max_block]: the rendered block
R_STAGED_VOICES, R_STAGED_W, R_STAGED_STEP = 21, 22, 23
R_CLOCK = 24                                 # float64 [1]: wall time of frame 0 (s since epoch)
R_CPU = 25                                   # float64 [2]: (smoothed, peak) callback load
R_XRUNS = 26                                 # int64 [1]
R_CONTROL = 27                               # int64 [N_CONTROL]
R_MIDI_PARAMS, R_MIDI_RING, R_MIDI_POS, R_MIDI_STATE = 28, 29, 30, 31  # rt_engine.io.native_midi
R_LANE_NOTES, R_LANE_POS = 32, 33            # rt_engine.osc.native_osc: notes applied from OSC
N_ROWS = 34

# --- control: int64 [N_CONTROL]
K_STAGED = 0          # 1 while a staged voice pool waits for the callback
K_PORT_L, K_PORT_R = 1, 2                    # jack_port_t* of the output ports
K_PORT_GET_BUFFER = 3                        # address of jack_port_get_buffer
K_CLOCK_GETTIME = 4                          # address of libc clock_gettime
K_TIMESPEC = 5        # 5, 6: struct timespec scratch (s, ns)
K_BLOCKS = 7          # blocks rendered by the native path
N_CONTROL = 8
PA_OUTPUT_UNDERFLOW = 0x4


@intrinsic
def _pointer(typingctx, address, dtype):
    """int64 address -> CPointer(dtype) (a cast; `dtype` is a Numba type)."""
    element = dtype.dtype if isinstance(dtype, types.DTypeSpec) else dtype.instance_type
    result = types.CPointer(element)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(result))

    return result(address, dtype), codegen


@intrinsic
def _call_port_get_buffer(typingctx, function, port, n_frames):
    """`(float *) jack_port_get_buffer((jack_port_t *) port, n_frames)` through its address."""
    result = types.CPointer(types.float32)

    def codegen(context, builder, signature, args):
        int8 = ir.IntType(8)
        fnty = ir.FunctionType(int8.as_pointer(), [int8.as_pointer(), ir.IntType(32)])
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        frames = context.cast(builder, args[2], signature.args[2], types.uint32)
        buffer = builder.call(fn, [builder.inttoptr(args[1], int8.as_pointer()), frames])
        return builder.bitcast(buffer, context.get_value_type(result))

    return result(function, port, n_frames), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _view1(table, row, dtype):
    return carray(_pointer(table[row, 0], dtype), (table[row, 1],))


@numba.njit(cache=True, nogil=True, inline="always")
def _view2(table, row, dtype):
    return carray(_pointer(table[row, 0], dtype), (table[row, 1], table[row, 2]))


@numba.njit(cache=True, nogil=True, inline="always")
def _view3(table, row, dtype):
    return carray(_pointer(table[row, 0], dtype), (table[row, 1], table[row, 2], table[row, 3]))


@numba.njit(cache=True, nogil=True)
def _seconds(control, clock_id):
    """Time of `clock_id` (s), through libc's clock_gettime at control[K_CLOCK_GETTIME]."""
    return clock_seconds(control[K_CLOCK_GETTIME], clock_id, control[K_TIMESPEC:K_TIMESPEC + 2])


@numba.njit(cache=True, nogil=True)
def process_table(table, n_frames):
    """Render `n_frames` (1..max_block) into the table's out row: the native `Engine.process`."""
    f8, i8 = numba.float64, numba.int64
    control = _view1(table, R_CONTROL, i8)
    params = _view1(table, R_PARAMS, f8)
    if control[K_STAGED] != 0:
        vk.adopt_voices(_view2(table, R_VOICES, f8), _view2(table, R_VOICE_W, f8),
                        _view2(table, R_STAGED_VOICES, f8), _view2(table, R_STAGED_W, f8),
                        params[vk.P_FADE_FRAMES])
        for k in range(4):
            table[R_VOICES, k] = table[R_STAGED_VOICES, k]
            table[R_VOICE_W, k] = table[R_STAGED_W, k]
            table[R_W_STEP, k] = table[R_STAGED_STEP, k]
        control[K_STAGED] = 0
    start = _seconds(control, CLOCK_MONOTONIC)
    counters = _view1(table, R_COUNTERS, i8)
    if table[R_LANE_POS, 0] != 0:
        native_osc.drain_notes(_view2(table, R_LANE_NOTES, f8), _view1(table, R_LANE_POS, i8),
                               _view1(table, R_PENDING, _RECORD), counters)
    clock = _view1(table, R_CLOCK, f8)
    epoch = _seconds(control, CLOCK_REALTIME) - counters[Counter.FRAME] / params[vk.P_SAMPLE_RATE]
    if not epoch >= clock[0]:  # earliest observation wins; callbacks only ever run late
        clock[0] = epoch
    else:
        clock[0] += 0.01 * (epoch - clock[0])
    vk.render_block(
        _view2(table, R_OUT, numba.float32), n_frames, _view1(table, R_QUEUE, _RECORD),
        _view1(table, R_QUEUE_POS, i8), _view1(table, R_PENDING, _RECORD),
        _view2(table, R_VOICES, f8), _view2(table, R_VOICE_W, f8), _view2(table, R_W_STEP, f8),
        _view2(table, R_CHANNELS, f8), params, counters, _view2(table, R_SLOTS, f8),
        _view2(table, R_ROW_READY, numba.uint8), _view1(table, R_ROW_PITCH, f8),
        _view3(table, R_BANKS, numba.float32), _view2(table, R_SINC, numba.float32),
        _view1(table, R_GRU_RING, numba.float32), _view1(table, R_GRU_POS, i8),
        _view2(table, R_MIX, f8), _view2(table, R_BEND, f8), _view1(table, R_WORK, f8),
        _view1(table, R_DUE, i8))
    cpu = _view1(table, R_CPU, f8)
    load = (_seconds(control, CLOCK_MONOTONIC) - start) * params[vk.P_SAMPLE_RATE] / n_frames
    cpu[0] += 0.05 * (load - cpu[0])
    if load > cpu[1]:
        cpu[1] = load
    control[K_BLOCKS] += 1


@numba.cfunc(types.int32(types.uint32, types.CPointer(types.int64)), cache=True, nogil=True)
def jack_process(n_frames, arg):
    """JACK process callback: render the block and copy it into the two output port buffers."""
    table = carray(arg, (N_ROWS, 4))
    if n_frames > table[R_OUT, 2]:
        return 1
    if table[R_MIDI_STATE, 0] != 0:
        nm.read_jack_midi(_view1(table, R_MIDI_PARAMS, numba.float64),
                          _view2(table, R_MIDI_RING, numba.float64),
                          _view1(table, R_MIDI_POS, numba.int64),
                          _view1(table, R_MIDI_STATE, numba.int64),
                          _view1(table, R_PENDING, _RECORD), _view1(table, R_COUNTERS, numba.int64),
                          n_frames)
    process_table(table, n_frames)
    control = _view1(table, R_CONTROL, numba.int64)
    out = _view2(table, R_OUT, numba.float32)
    left = _call_port_get_buffer(control[K_PORT_GET_BUFFER], control[K_PORT_L], n_frames)
    right = _call_port_get_buffer(control[K_PORT_GET_BUFFER], control[K_PORT_R], n_frames)
    for i in range(n_frames):
        left[i] = out[0, i]
        right[i] = out[1, i]
    return 0


@numba.cfunc(types.int32(types.voidptr, types.CPointer(types.float32), types.uint64, types.voidptr,
                         types.uint64, types.CPointer(types.int64)), cache=True, nogil=True)
def portaudio_callback(input_buffer, output, n_frames, time_info, status_flags, arg):
    """PortAudio stream callback (interleaved float32 stereo): render in blocks of at most
    max_block frames; an output underflow counts as an xrun. Returns paContinue (0)."""
    table = carray(arg, (N_ROWS, 4))
    if status_flags & PA_OUTPUT_UNDERFLOW:
        _view1(table, R_XRUNS, numba.int64)[0] += 1
    out = _view2(table, R_OUT, numba.float32)
    done = 0
    while done < n_frames:
        n = min(n_frames - done, table[R_OUT, 2])
        process_table(table, n)
        for i in range(n):
            output[2 * (done + i)] = out[0, i]
            output[2 * (done + i) + 1] = out[1, i]
        done += n
    return 0


def _row(table: np.ndarray, row: int, array: np.ndarray) -> None:
    if not array.flags.c_contiguous or array.ndim > 3:
        raise ValueError(f"table row {row}: array not C-contiguous or ndim > 3")
    table[row, 0] = array.ctypes.data
    table[row, 1:1 + array.ndim] = array.shape


class NativeBlock:
    """The engine's kernel state as a native table (see the module docstring). Keeps every array
    it points to alive; `address` is the user pointer the C callbacks take."""

    def __init__(self, engine):
        state = engine.kernel_state()
        if len(state) != len(KERNEL_STATE_SPEC):
            raise ValueError(f"kernel state has {len(state)} arrays, the native table expects "
                             f"{len(KERNEL_STATE_SPEC)}")
        for k, (array, (dtype, ndim)) in enumerate(zip(state, KERNEL_STATE_SPEC)):
            if array.dtype != np.dtype(dtype) or array.ndim != ndim:
                raise ValueError(f"kernel state array {k}: {array.dtype}[{array.ndim}d], the "
                                 f"native table expects {np.dtype(dtype)}[{ndim}d]")
        self.table = np.zeros((N_ROWS, 4), dtype=np.int64)
        self.control = np.zeros(N_CONTROL, dtype=np.int64)
        self.control[K_CLOCK_GETTIME] = libc_address("clock_gettime")
        self._arrays = list(state) + [engine._out, engine._clock, engine._cpu, engine._xruns,
                                      self.control]
        for row, array in enumerate(state):
            _row(self.table, row, array)
        for row, array in ((R_OUT, engine._out), (R_CLOCK, engine._clock), (R_CPU, engine._cpu),
                           (R_XRUNS, engine._xruns), (R_CONTROL, self.control)):
            _row(self.table, row, array)
        self._staged: list = []

    def attach_midi(self, midi: nm.NativeMidi) -> None:
        """Read MIDI in the JACK callback with `midi`'s arrays (before the client activates)."""
        for row, array in ((R_MIDI_PARAMS, midi.params), (R_MIDI_RING, midi.ring),
                           (R_MIDI_POS, midi.ring_pos), (R_MIDI_STATE, midi.state)):
            _row(self.table, row, array)
        self._arrays.append(midi)

    def attach_osc_lane(self, lane: native_osc.NativeOscLane) -> None:
        """Drain the notes `lane` applies at each block start from now on (the callback may be
        running: the position row's address, which the callback tests, is written last)."""
        _row(self.table, R_LANE_NOTES, lane.notes)
        self.table[R_LANE_POS, 1] = lane.notes_pos.shape[0]
        self._arrays.append(lane)
        self.table[R_LANE_POS, 0] = lane.notes_pos.ctypes.data

    @property
    def address(self) -> int:
        """Address of the table (the callbacks' user pointer)."""
        return int(self.table.ctypes.data)

    @property
    def blocks(self) -> int:
        """Blocks the native path has rendered."""
        return int(self.control[K_BLOCKS])

    def stage_voices(self, staged: tuple, timeout_s: float = 1.0) -> None:
        """Control thread: hand a resized voice pool (voices, voice_w, w_step) to the running
        callback, which adopts it at its next block start. A pool staged before is adopted first
        (waited for, at most `timeout_s`: RuntimeError if the callback does not run); the pool in
        use stays referenced here."""
        deadline = time.monotonic() + timeout_s
        while self.control[K_STAGED] != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the native callback did not adopt the staged voice pool")
            time.sleep(0.001)
        self._staged = self._staged[-1:]   # the pool in use now; older ones are released
        for row, array in zip((R_STAGED_VOICES, R_STAGED_W, R_STAGED_STEP), staged):
            _row(self.table, row, array)
        self._staged.append(staged)
        self.control[K_STAGED] = 1

    def process(self, n_frames: int) -> np.ndarray:
        """Render one block from Python through the native path (tests): float32 [2, n_frames]."""
        if not 0 < n_frames <= self.table[R_OUT, 2]:
            raise ValueError(f"block of {n_frames} frames outside 1..{self.table[R_OUT, 2]}")
        process_table(self.table, n_frames)
        out = self._arrays[len(KERNEL_STATE_SPEC)]
        return out[:, :n_frames]


@functools.lru_cache(maxsize=None)
def _libjack():
    lib = ctypes.CDLL("libjack.so.0")
    lib.jack_set_process_callback.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.jack_set_process_callback.restype = ctypes.c_int
    return lib


def _address(function) -> int:
    return ctypes.cast(function, ctypes.c_void_p).value


def jack_address(handle) -> int:
    """The C address of a `jack` module client or port (its cffi `_ptr`), as libjack takes it."""
    import jack  # optional: loaded only where JACK is used

    return int(jack._ffi.cast("uintptr_t", handle._ptr))


def register_jack_process(client_address: int, block: NativeBlock, ports_addresses,
                          midi: nm.NativeMidi | None = None, midi_port_address: int = 0) -> None:
    """Register `jack_process` on the (not yet active) JACK client at `client_address`, writing
    to the two ports at `ports_addresses` (jack_port_t*) and, with `midi`, reading the MIDI
    input port at `midi_port_address` inside the callback. Raises OSError when libjack refuses."""
    lib = _libjack()
    block.control[K_PORT_L], block.control[K_PORT_R] = ports_addresses
    block.control[K_PORT_GET_BUFFER] = _address(lib.jack_port_get_buffer)
    if midi is not None:
        midi.state[nm.S_GET_BUFFER] = _address(lib.jack_port_get_buffer)
        midi.state[nm.S_EVENT_COUNT] = _address(lib.jack_midi_get_event_count)
        midi.state[nm.S_EVENT_GET] = _address(lib.jack_midi_event_get)
        midi.state[nm.S_PORT] = midi_port_address
        block.attach_midi(midi)
    if lib.jack_set_process_callback(client_address, jack_process.address, block.address) != 0:
        raise OSError("jack_set_process_callback refused the native callback")


def native_available() -> str | None:
    """None when the native callbacks can run here, else the reason they cannot."""
    try:
        libc_address("clock_gettime")
        jack_process.address, portaudio_callback.address
    except Exception as error:  # a missing libc symbol or a Numba compile failure
        return f"native callback unavailable: {error}"
    return None


class _PaStreamParameters(ctypes.Structure):
    _fields_ = [("device", ctypes.c_int), ("channelCount", ctypes.c_int),
                ("sampleFormat", ctypes.c_ulong), ("suggestedLatency", ctypes.c_double),
                ("hostApiSpecificStreamInfo", ctypes.c_void_p)]


class _PaStreamInfo(ctypes.Structure):
    _fields_ = [("structVersion", ctypes.c_int), ("inputLatency", ctypes.c_double),
                ("outputLatency", ctypes.c_double), ("sampleRate", ctypes.c_double)]


PA_FLOAT32 = 0x1


@functools.lru_cache(maxsize=None)
def _libportaudio():
    lib = ctypes.CDLL("libportaudio.so.2")
    lib.Pa_OpenStream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                  ctypes.POINTER(_PaStreamParameters), ctypes.c_double,
                                  ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_void_p]
    lib.Pa_GetStreamInfo.argtypes = [ctypes.c_void_p]
    lib.Pa_GetStreamInfo.restype = ctypes.POINTER(_PaStreamInfo)
    lib.Pa_GetErrorText.restype = ctypes.c_char_p
    for name in ("Pa_StartStream", "Pa_StopStream", "Pa_CloseStream"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    return lib


class PortAudioStream:
    """A PortAudio output stream (float32 interleaved stereo) on device index `device` whose
    callback is `portaudio_callback` with `block`'s table: PortAudio's own thread calls the
    kernel, no Python runs per block. `callback_address` is the C function PortAudio got."""

    def __init__(self, device: int, sample_rate: int, frames_per_buffer: int, latency_s: float,
                 block: NativeBlock):
        lib = _libportaudio()
        self._check(lib.Pa_Initialize(), "Pa_Initialize")
        self._block = block
        self.callback_address = int(portaudio_callback.address)
        parameters = _PaStreamParameters(int(device), 2, PA_FLOAT32, float(latency_s), None)
        self._stream = ctypes.c_void_p()
        self._check(lib.Pa_OpenStream(ctypes.byref(self._stream), None, ctypes.byref(parameters),
                                      float(sample_rate), int(frames_per_buffer), 0,
                                      self.callback_address, block.address), "Pa_OpenStream")
        self.output_latency_s = float(lib.Pa_GetStreamInfo(self._stream).contents.outputLatency)

    @staticmethod
    def _check(error: int, what: str) -> None:
        if error < 0:
            raise OSError(f"{what}: {_libportaudio().Pa_GetErrorText(error).decode()}")

    def start(self) -> None:
        self._check(_libportaudio().Pa_StartStream(self._stream), "Pa_StartStream")

    def close(self) -> None:
        """Stop and close the stream (its callback has returned for good afterwards)."""
        lib = _libportaudio()
        if self._stream:
            lib.Pa_StopStream(self._stream)
            lib.Pa_CloseStream(self._stream)
            self._stream = ctypes.c_void_p()
            lib.Pa_Terminate()

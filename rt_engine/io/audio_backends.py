"""Audio backends: where `Engine.process` gets called from.

`--audio auto|DEVICE|jack|null`:
- a DEVICE (name substring or index): sounddevice/PortAudio output stream;
- `jack`: a JACK client `latentsynth` with output ports `out_1`/`out_2`, auto-connected to the
  system playback ports when there are any;
- `null`: no device; a real-time clock thread calls the engine once per block period;
- `auto`: the default PortAudio output device, else a running JACK server, else null (with a
  warning naming the options).

Backends open in two steps because the device decides the rate and block size before the engine
exists: `open_backend(spec, block, sample_rate)` returns a backend whose `sample_rate`, `block`
and `output_latency_s` are known; `backend.start(engine)` starts calling the engine.
An optional `Recorder` taps the output (`--record out.wav`): the callback copies each block into
a preallocated ring, a writer thread drains it to the file, off the audio thread.

The JACK and PortAudio backends run the native callback (`rt_engine.io.native_audio`: machine code
calling the block kernel, no Python and no GIL per block) and fall back to a Python callback
around `Engine.process` where it cannot load, or with a recorder; `backend.callback` ("native" or
"python") and `callback_note` (why the fallback) say which one runs. The JACK backend's native
callback can also read JACK MIDI (`reads_midi`): a MIDI input port `latentsynth` on the same
client, read in the callback (`rt_engine.io.native_midi`); `backend.native_midi` is set while it does.
"""
from __future__ import annotations

import threading
import time
import warnings

import numpy as np

from rt_engine.io import native_audio

AUDIO_CHOICES = "auto|DEVICE|jack|null"
MIDI_PORT_NAME = "latentsynth"
"""The JACK MIDI input port the native callback reads (named like rtmidi's virtual port)."""


class Recorder:
    """Records the output to a WAV file off the audio thread. `write` is called by the audio
    callback with float32 [2, n]; a full ring counts dropped frames instead of blocking."""

    def __init__(self, path: str, sample_rate: int, capacity_frames: int = 1 << 18):
        import soundfile  # loaded only when recording

        self.path = path
        self._file = soundfile.SoundFile(path, "w", samplerate=sample_rate, channels=2,
                                         subtype="PCM_24")
        self._ring = np.zeros((capacity_frames, 2), dtype=np.float32)
        self._positions = np.zeros(2, dtype=np.int64)  # (written, read)
        self.dropped_frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain_loop, name="latentsynth-record",
                                        daemon=True)
        self._thread.start()

    def write(self, block: np.ndarray) -> None:
        """Audio thread: copy float32 [2, n] into the ring (never blocks)."""
        n = block.shape[1]
        capacity = self._ring.shape[0]
        written = int(self._positions[0])
        if written + n - int(self._positions[1]) > capacity:
            self.dropped_frames += n
            return
        start = written % capacity
        first = min(n, capacity - start)
        self._ring[start:start + first] = block[:, :first].T
        self._ring[:n - first] = block[:, first:].T
        self._positions[0] = written + n

    def _drain(self) -> None:
        capacity = self._ring.shape[0]
        written, read = int(self._positions[0]), int(self._positions[1])
        while read < written:
            start = read % capacity
            n = min(written - read, capacity - start)
            self._file.write(self._ring[start:start + n])
            read += n
            self._positions[1] = read

    def _drain_loop(self) -> None:
        while not self._stop.wait(0.05):
            self._drain()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._drain()
        self._file.close()


def _try_realtime_priority(priority: int = 40) -> bool:
    """Best effort: SCHED_FIFO for the calling thread (Linux, given the right); False if not."""
    import os  # only for the realtime-priority call

    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError):
        return False
    return True


class _Backend:
    name = "?"
    sample_rate = 48_000
    block = 256
    output_latency_s = 0.0

    def __init__(self):
        self.engine = None
        self.recorder: Recorder | None = None
        self.callback = "python"
        self.callback_note = ""
        self.native_midi = None  # rt_engine.io.native_midi.NativeMidi while the callback reads MIDI

    def reads_midi(self, native_midi, recorder: Recorder | None = None) -> bool:
        """Ask the native callback to read MIDI into `native_midi` once started; True when it
        will (a JACK backend whose native callback loads and no recorder), else False."""
        return False

    def _render(self, n_frames: int) -> np.ndarray:
        out = self.engine.process(n_frames)
        if self.recorder is not None:
            self.recorder.write(out)
        return out

    def start(self, engine, recorder: Recorder | None = None) -> None:
        """Start calling `engine.process` (its rate must be `self.sample_rate`)."""
        if engine.sample_rate != self.sample_rate:
            raise ValueError(f"engine rate {engine.sample_rate} Hz != device rate {self.sample_rate} Hz")
        self.engine, self.recorder = engine, recorder
        engine.output_latency_s = self.output_latency_s
        engine.block = self.block
        self._start()
        engine.audio_callback = self.callback

    def _native_block(self, wanted: bool):
        """The engine's native table when the native callback can run here, else None with the
        reason in `callback_note`."""
        reason = ("the native callback is off" if not wanted else
                  "a recorder needs the Python callback" if self.recorder is not None else
                  native_audio.native_available())
        if reason is None:
            try:
                return native_audio.NativeBlock(self.engine)
            except ValueError as error:
                reason = str(error)
        self.callback_note = reason
        return None

    def _adopt_native(self, block) -> None:
        self.callback, self.callback_note = "native", ""
        self.engine.native_block = block

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop calling the engine; close the recorder."""
        self._stop()
        if self.recorder is not None:
            self.recorder.close()

    def _stop(self) -> None:
        raise NotImplementedError


class NullBackend(_Backend):
    """No device: a clock thread renders one block per block period (real time), counting an
    xrun whenever it falls more than a block behind (then it resynchronises)."""

    name = "null"

    def __init__(self, sample_rate: int = 48_000, block: int = 256):
        super().__init__()
        self.sample_rate, self.block = int(sample_rate), int(block)
        self.output_latency_s = self.block / self.sample_rate
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._running.set()
        self._thread = threading.Thread(target=self._run, name="latentsynth-null-audio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        _try_realtime_priority()
        period = self.block / self.sample_rate
        deadline = time.perf_counter()
        while self._running.is_set():
            self._render(self.block)
            deadline += period
            lag = time.perf_counter() - deadline
            if lag > period:
                self.engine.xruns += 1
                deadline = time.perf_counter()
            elif lag < 0:
                time.sleep(-lag)

    def _stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(2.0)


class SoundDeviceBackend(_Backend):
    """PortAudio output stream: the native callback on a stream opened through ctypes
    (`native_audio.PortAudioStream`), else sounddevice's stream with a Python callback."""

    def __init__(self, device, block: int, sample_rate: int | None, native: bool = True):
        import sounddevice  # optional: loaded only for a PortAudio device

        super().__init__()
        info = sounddevice.query_devices(device, kind="output")
        self.name = f"portaudio:{info['name']}"
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        self.block = int(block)
        self._device_index, self._latency_s = int(info["index"]), float(info["default_low_output_latency"])
        self._want_native = native
        self._native_stream: native_audio.PortAudioStream | None = None
        self._stream = sounddevice.OutputStream(
            samplerate=self.sample_rate, blocksize=self.block, device=device, channels=2,
            dtype="float32", latency="low", callback=self._callback)
        self.output_latency_s = float(self._stream.latency)

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self.engine.xruns += 1
        outdata[:] = self._render(frames).T

    def _start(self) -> None:
        block = self._native_block(self._want_native)
        if block is not None:
            self._stream.close()  # the device is reopened with the native callback
            try:
                self._native_stream = native_audio.PortAudioStream(
                    self._device_index, self.sample_rate, self.block, self._latency_s, block)
            except OSError as error:
                raise RuntimeError(f"PortAudio refused the native stream: {error}") from error
            self._adopt_native(block)
            self._native_stream.start()
            return
        self._stream.start()

    def _stop(self) -> None:
        if self._native_stream is not None:
            self._native_stream.close()
            return
        self._stream.stop()
        self._stream.close()


class JackBackend(_Backend):
    """JACK client `client_name` with ports out_1/out_2; the server sets rate and block. The
    process callback is the native one (registered with libjack through ctypes) unless
    `native` is False or it cannot load; xruns arrive on JACK's notification thread."""

    def __init__(self, client_name: str = "latentsynth", connect: bool = True,
                 native: bool = True):
        import jack  # optional: loaded only for the JACK backend

        super().__init__()
        self._want_native = native
        try:
            self._client = jack.Client(client_name, no_start_server=True)
        except jack.JackOpenError as error:
            raise RuntimeError(f"no JACK server running ({error}); start jackd or use --audio null") from error
        self.name = f"jack:{self._client.name}"
        self.sample_rate = int(self._client.samplerate)
        self.block = int(self._client.blocksize)
        self.output_latency_s = self.block / self.sample_rate  # one period of playback buffering
        self._ports = [self._client.outports.register(f"out_{k}") for k in (1, 2)]
        self._client.set_xrun_callback(self._xrun)
        self._connect = connect
        self._midi_wanted = None

    @property
    def client(self):
        """The JACK client (jack.Client)."""
        return self._client

    def reads_midi(self, native_midi, recorder: Recorder | None = None) -> bool:
        if not self._want_native or recorder is not None or native_audio.native_available():
            return False
        self._midi_wanted = native_midi
        return True

    def _process(self, frames: int) -> None:
        out = self._render(frames)
        self._ports[0].get_array()[:] = out[0]
        self._ports[1].get_array()[:] = out[1]

    def _xrun(self, delay_usecs: float) -> None:
        if self.engine is not None:
            self.engine.xruns += 1

    def _start(self) -> None:
        block = self._native_block(self._want_native)
        if block is not None:
            address = native_audio.jack_address
            midi = self._midi_wanted
            midi_port = self._client.midi_inports.register(MIDI_PORT_NAME) if midi else None
            try:
                native_audio.register_jack_process(
                    address(self._client), block, [address(port) for port in self._ports],
                    midi, address(midi_port) if midi_port else 0)
                self._adopt_native(block)
                self.native_midi = midi
            except OSError as error:
                self.callback_note = str(error)
                if midi_port is not None:
                    midi_port.unregister()
        if self.callback != "native":
            self._client.set_process_callback(self._process)
        self._client.activate()
        if self._connect:
            playback = self._client.get_ports(is_physical=True, is_input=True, is_audio=True)
            for port, target in zip(self._ports, playback):
                connect_ports(self._client, port, target)

    def _stop(self) -> None:
        self._client.deactivate()
        self._client.close()


def _jack_running() -> bool:
    """True when a JACK server answers; libjack's own complaints while probing are silenced."""
    import jack  # optional: loaded only for the JACK backend

    jack.set_error_function(lambda message: None)
    try:
        client = jack.Client("latentsynth-probe", no_start_server=True)
    except jack.JackOpenError:
        return False
    finally:
        jack.set_error_function()  # back to libjack's default (stderr)
    client.close()
    return True


def open_backend(spec: str, block: int = 256, sample_rate: int | None = None, native: bool = True):
    """Open the backend named by `--audio` (see module docstring). `block` (frames) and
    `sample_rate` (Hz) are requests; JACK imposes its own. `native`: use the native callback
    where it loads (JACK, PortAudio)."""
    if not 16 <= block <= 8192:
        raise ValueError(f"--block must be 16..8192 frames, got {block}")
    if spec == "null":
        return NullBackend(sample_rate or 48_000, block)
    if spec == "jack":
        return JackBackend(native=native)
    if spec != "auto":
        device = int(spec) if spec.isdigit() else spec
        try:
            return SoundDeviceBackend(device, block, sample_rate, native)
        except (ValueError, OSError) as error:
            raise ValueError(f"audio device {spec!r} not usable: {error}; "
                             f"choose one of `latentsynth devices` or {AUDIO_CHOICES}") from error
    try:
        return SoundDeviceBackend(None, block, sample_rate, native)
    except Exception:  # PortAudio raises several types when there is no usable default device
        pass
    try:
        if _jack_running():
            return JackBackend(native=native)
    except Exception:  # no JACK library or server: fall through to null
        pass
    warnings.warn(f"no audio device or JACK server found: running without output (--audio null); "
                  f"options: --audio {AUDIO_CHOICES}", stacklevel=2)
    return NullBackend(sample_rate or 48_000, block)


def connect_ports(client, source, destination, attempts: int = 10, pause_s: float = 0.2) -> None:
    """`client.connect(source, destination)` (JACK ports or names), retried: a busy dummy server has
    refused a connection right after the engine said ready (JackErrorCode -1, once in a full test
    run). The last refusal is raised."""
    import jack  # optional: loaded only for the JACK backend

    for attempt in range(attempts):
        try:
            client.connect(source, destination)
            return
        except jack.JackError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause_s)

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
"""
from __future__ import annotations

import threading
import time
import warnings

import numpy as np

AUDIO_CHOICES = "auto|DEVICE|jack|null"


class Recorder:
    """Records the output to a WAV file off the audio thread. `write` is called by the audio
    callback with float32 [2, n]; a full ring counts dropped frames instead of blocking."""

    def __init__(self, path: str, sample_rate: int, capacity_frames: int = 1 << 18):
        import soundfile

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
    import os

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
    """PortAudio output stream through sounddevice."""

    def __init__(self, device, block: int, sample_rate: int | None):
        import sounddevice

        super().__init__()
        info = sounddevice.query_devices(device, kind="output")
        self.name = f"portaudio:{info['name']}"
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        self.block = int(block)
        self._stream = sounddevice.OutputStream(
            samplerate=self.sample_rate, blocksize=self.block, device=device, channels=2,
            dtype="float32", latency="low", callback=self._callback)
        self.output_latency_s = float(self._stream.latency)

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self.engine.xruns += 1
        outdata[:] = self._render(frames).T

    def _start(self) -> None:
        self._stream.start()

    def _stop(self) -> None:
        self._stream.stop()
        self._stream.close()


class JackBackend(_Backend):
    """JACK client `client_name` with ports out_1/out_2; the server sets rate and block."""

    def __init__(self, client_name: str = "latentsynth", connect: bool = True):
        import jack

        super().__init__()
        try:
            self._client = jack.Client(client_name, no_start_server=True)
        except jack.JackOpenError as error:
            raise RuntimeError(f"no JACK server running ({error}); start jackd or use --audio null") from error
        self.name = f"jack:{self._client.name}"
        self.sample_rate = int(self._client.samplerate)
        self.block = int(self._client.blocksize)
        self.output_latency_s = self.block / self.sample_rate  # one period of playback buffering
        self._ports = [self._client.outports.register(f"out_{k}") for k in (1, 2)]
        self._client.set_process_callback(self._process)
        self._client.set_xrun_callback(self._xrun)
        self._connect = connect

    def _process(self, frames: int) -> None:
        out = self._render(frames)
        self._ports[0].get_array()[:] = out[0]
        self._ports[1].get_array()[:] = out[1]

    def _xrun(self, delay_usecs: float) -> None:
        if self.engine is not None:
            self.engine.xruns += 1

    def _start(self) -> None:
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
    import jack

    jack.set_error_function(lambda message: None)
    try:
        client = jack.Client("latentsynth-probe", no_start_server=True)
    except jack.JackOpenError:
        return False
    finally:
        jack.set_error_function()  # back to libjack's default (stderr)
    client.close()
    return True


def open_backend(spec: str, block: int = 256, sample_rate: int | None = None):
    """Open the backend named by `--audio` (see module docstring). `block` (frames) and
    `sample_rate` (Hz) are requests; JACK imposes its own."""
    if not 16 <= block <= 8192:
        raise ValueError(f"--block must be 16..8192 frames, got {block}")
    if spec == "null":
        return NullBackend(sample_rate or 48_000, block)
    if spec == "jack":
        return JackBackend()
    if spec != "auto":
        device = int(spec) if spec.isdigit() else spec
        try:
            return SoundDeviceBackend(device, block, sample_rate)
        except (ValueError, OSError) as error:
            raise ValueError(f"audio device {spec!r} not usable: {error}; "
                             f"choose one of `latentsynth devices` or {AUDIO_CHOICES}") from error
    try:
        return SoundDeviceBackend(None, block, sample_rate)
    except Exception:  # PortAudio raises several types when there is no usable default device
        pass
    try:
        if _jack_running():
            return JackBackend()
    except Exception:  # no JACK library or server: fall through to null
        pass
    warnings.warn(f"no audio device or JACK server found: running without output (--audio null); "
                  f"options: --audio {AUDIO_CHOICES}", stacklevel=2)
    return NullBackend(sample_rate or 48_000, block)


def connect_ports(client, source, destination, attempts: int = 10, pause_s: float = 0.2) -> None:
    """`client.connect(source, destination)` (JACK ports or names), retried: a busy dummy server has
    refused a connection right after the engine said ready (JackErrorCode -1, once in a full test
    run). The last refusal is raised."""
    import jack

    for attempt in range(attempts):
        try:
            client.connect(source, destination)
            return
        except jack.JackError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause_s)


class DummyJackServer:
    """A private `jackd -d dummy` server (for tests and benchmarks): unique `name`, reached by
    clients through the environment `env` (JACK_DEFAULT_SERVER). Use as a context manager."""

    def __init__(self, name: str, sample_rate: int = 48_000, period: int = 256,
                 start_timeout_s: float = 15.0):
        import os

        self.name, self.sample_rate, self.period = name, sample_rate, period
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_AUDIO_RESERVATION="1")
        try:  # real-time scheduling where the system allows it (as JACK normally runs) ...
            self._start(["--realtime"], start_timeout_s)
            self.realtime = True
        except RuntimeError:  # ... else without
            self._start(["--no-realtime"], start_timeout_s)
            self.realtime = False

    def _start(self, options: list[str], timeout_s: float) -> None:
        import subprocess
        import tempfile

        # jackd logs every xrun to stderr: a file, never an undrained pipe (a full pipe blocks jackd)
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            ["jackd", *options, "-d", "dummy", "-r", str(self.sample_rate), "-p", str(self.period)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + timeout_s
        while not self._reachable():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._log.seek(0)
                error = self._log.read().decode(errors="replace")[-500:] if self._process.poll() is not None else ""
                self.close()
                raise RuntimeError(f"jackd dummy server {self.name!r} did not start: {error}")
            time.sleep(0.1)

    def _reachable(self) -> bool:
        import jack

        try:
            client = jack.Client("latentsynth-probe", no_start_server=True, servername=self.name)
        except jack.JackOpenError:
            return False
        client.close()
        return True

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5.0)
            except Exception:  # subprocess.TimeoutExpired: kill it instead
                self._process.kill()
                self._process.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JackCapture:
    """A JACK client recording `sources` (output port names) into a preallocated buffer indexed
    by JACK frame time, with the wall-clock time (`time.perf_counter`) at which each cycle's
    callback ran, so onsets can be compared with frame-time or wall-clock stamps."""

    def __init__(self, server_name: str, sources: list[str], seconds: float = 30.0):
        import jack

        self.client = jack.Client("latentsynth-capture", no_start_server=True, servername=server_name)
        self.sample_rate = int(self.client.samplerate)
        self.buffer = np.zeros((len(sources), int(seconds * self.sample_rate)), dtype=np.float32)
        self.first_frame = -1
        self.cycle_start_s = np.full(self.buffer.shape[1] // int(self.client.blocksize) + 1, np.nan)
        self._ports = [self.client.inports.register(f"in_{k + 1}") for k in range(len(sources))]
        self.client.set_process_callback(self._process)
        self.client.activate()
        for source, port in zip(sources, self._ports):
            connect_ports(self.client, source, port)

    def _process(self, frames: int) -> None:
        frame = self.client.last_frame_time
        if self.first_frame < 0:
            self.first_frame = frame
        start = frame - self.first_frame
        if start + frames <= self.buffer.shape[1]:
            self.cycle_start_s[start // frames] = time.perf_counter()
            for k, port in enumerate(self._ports):
                self.buffer[k, start:start + frames] = port.get_array()

    def now(self) -> int:
        """Current JACK frame time (frames)."""
        return int(self.client.frame_time)

    def onset_after(self, frame: int, threshold: float = 1e-3) -> int:
        """First frame time >= `frame` where channel 0 exceeds `threshold`, or -1."""
        start = max(frame - self.first_frame, 0)
        hits = np.nonzero(np.abs(self.buffer[0, start:]) > threshold)[0]
        return self.first_frame + start + int(hits[0]) if hits.size else -1

    def wall_time_of(self, frame: int) -> float:
        """Wall-clock time (perf_counter s) at which the cycle holding `frame` was processed,
        plus the frame's offset in it."""
        index = frame - self.first_frame
        block = int(self.client.blocksize)
        return float(self.cycle_start_s[index // block]) + (index % block) / self.sample_rate

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


class JackMidiSender:
    """A JACK client with one MIDI output port, for tests and benchmarks: `send(message, offset)`
    writes the message in the next process cycle at `offset` frames into it and returns the JACK
    frame time it was written at."""

    def __init__(self, server_name: str, client_name: str = "latentsynth-midi-sender"):
        import jack

        self.client = jack.Client(client_name, no_start_server=True, servername=server_name)
        self.port = self.client.midi_outports.register("out")
        self._pending: tuple[bytes, int] | None = None
        self._written = threading.Event()
        self.written_frame = -1
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        self.port.clear_buffer()
        pending, self._pending = self._pending, None
        if pending is not None:
            message, offset = pending
            self.port.write_midi_event(offset, message)
            self.written_frame = self.client.last_frame_time + offset
            self._written.set()

    def virtual_input(self, short_name: str) -> str:
        """Full name of the JACK MIDI input port called `short_name` (rtmidi names its client
        after the port's owner, so JACK may have suffixed the client name: latentsynth-01)."""
        names = [port.name for port in self.client.get_ports(is_midi=True, is_input=True)
                 if port.shortname == short_name]
        if len(names) != 1:
            raise LookupError(f"expected one JACK MIDI input {short_name!r}, found {names}")
        return names[0]

    def connect_to(self, short_name: str) -> None:
        """Connect the output port to the MIDI input port called `short_name`."""
        connect_ports(self.client, self.port, self.virtual_input(short_name))

    def send(self, message: bytes, offset: int = 0, timeout_s: float = 2.0) -> int:
        self._written.clear()
        self._pending = (bytes(message), int(offset))
        if not self._written.wait(timeout_s):
            raise TimeoutError("the JACK MIDI sender's process callback did not run")
        return self.written_frame

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()

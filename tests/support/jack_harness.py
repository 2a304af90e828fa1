"""JACK test harness (tests and benchmarks, never the product): a private dummy server, a
capture client that records ports against JACK frame time and wall-clock time, and a JACK MIDI
sender."""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time

import jack
import numpy as np

from rt_engine.io.audio_backends import connect_ports
from rt_engine.io.native_audio import jack_address
from tests.support.native_capture import CaptureState


class DummyJackServer:
    """A private `jackd -d dummy` server (for tests and benchmarks): unique `name`, reached by
    clients through the environment `env` (JACK_DEFAULT_SERVER). Use as a context manager."""

    def __init__(self, name: str, sample_rate: int = 48_000, period: int = 256,
                 start_timeout_s: float = 15.0):
        self.name, self.sample_rate, self.period = name, sample_rate, period
        self.env = dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_AUDIO_RESERVATION="1")
        try:  # real-time scheduling where the system allows it (as JACK normally runs) ...
            self._start(["--realtime"], start_timeout_s)
            self.realtime = True
        except RuntimeError:  # ... else without
            self._start(["--no-realtime"], start_timeout_s)
            self.realtime = False

    def _start(self, options: list[str], timeout_s: float) -> None:
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

    def log_size(self) -> int:
        """Bytes jackd has logged so far (an offset for `xrun_blame`)."""
        return os.fstat(self._log.fileno()).st_size

    def xrun_blame(self, since: int = 0) -> dict:
        """What jackd logged about xruns after byte `since` of its log: per client the cycles it had
        not finished by the deadline (`late_clients`, {name: count}), and the driver's own late
        wake-ups (`driver_late`). Read with pread: jackd shares the file's offset."""
        size = self.log_size()
        text = os.pread(self._log.fileno(), max(size - since, 0), since).decode(errors="replace")
        late: dict[str, int] = {}
        for name in re.findall(r"client = (\S+) was not finished", text):
            late[name] = late.get(name, 0) + 1
        return {"late_clients": late, "driver_late": len(re.findall(r"JackTimedDriver::Process XRun", text))}

    def xruns_since(self, since: int = 0) -> int:
        """Xrun reports jackd logged after byte `since` of its log (late clients and late driver
        wake-ups; one cycle can report more than one): an upper bound on the cycles the graph lost."""
        blame = self.xrun_blame(since)
        return sum(blame["late_clients"].values()) + blame["driver_late"]

    def _reachable(self) -> bool:
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
    callback ran, so onsets can be compared with frame-time or wall-clock stamps. Its process
    callback is machine code (`tests.support.native_capture`): the recorder never waits for the
    GIL, so it is not the client that makes the graph miss a cycle."""

    def __init__(self, server_name: str, sources: list[str], seconds: float = 30.0):
        self.client = jack.Client("latentsynth-capture", no_start_server=True, servername=server_name)
        self.sample_rate = int(self.client.samplerate)
        self.block = int(self.client.blocksize)  # kept: a closed client reports 0
        # Every page written now: the real-time callback must never take a page fault (np.zeros
        # maps untouched pages lazily, and a fault waits for the process's memory map lock).
        self.buffer = np.full((len(sources), int(seconds * self.sample_rate)), 0.0, dtype=np.float32)
        self.cycle_start_s = np.full(self.buffer.shape[1] // self.block + 1, np.nan)
        self._ports = [self.client.inports.register(f"in_{k + 1}") for k in range(len(sources))]
        self.xruns = 0  # xruns anywhere in the graph (JACK notifies every client)

        self._state = CaptureState(jack_address(self.client), [jack_address(port) for port in self._ports],
                                   self.buffer, self.cycle_start_s)
        self._state.register()
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()
        for source, port in zip(sources, self._ports):
            connect_ports(self.client, source, port)

    @property
    def first_frame(self) -> int:
        """JACK frame time of the first recorded cycle (-1 before it)."""
        return self._state.first_frame

    def _xrun(self, delay_usecs: float) -> None:
        self.xruns += 1

    def now(self) -> int:
        """Current JACK frame time (frames)."""
        return int(self.client.frame_time)

    def onset_after(self, frame: int, threshold: float = 1e-3, channel: int = 0,
                    within: int | None = None) -> int:
        """First frame time >= `frame` (and < `frame + within` when given) where `channel`
        exceeds `threshold`, or -1."""
        start = max(frame - self.first_frame, 0)
        stop = None if within is None else start + within
        hits = np.nonzero(np.abs(self.buffer[channel, start:stop]) > threshold)[0]
        return self.first_frame + start + int(hits[0]) if hits.size else -1

    def recorded(self, start: int, stop: int) -> np.ndarray:
        """Bool [stop - start]: which samples of `buffer[:, start:stop]` (indices from the first
        recorded frame) the capture's callback wrote. A cycle the graph lost to an xrun, in which
        the recorder did not run, stays unwritten (silence in `buffer`)."""
        block = self.block
        cycles = np.arange(start, stop) // block
        inside = cycles < self.cycle_start_s.size
        mask = np.zeros(stop - start, dtype=bool)
        mask[inside] = np.isfinite(self.cycle_start_s[cycles[inside]])
        return mask

    def cycle_before(self, wall_s: float) -> float:
        """Wall-clock time (perf_counter s) at which the newest recorded cycle at or before `wall_s`
        was processed (NaN before the first)."""
        recorded = self.cycle_start_s[:max((self.now() - self.first_frame) // self.block + 2, 0)]
        recorded = recorded[~np.isnan(recorded)]
        index = int(np.searchsorted(recorded, wall_s, side="right")) - 1
        return float(recorded[index]) if index >= 0 else float("nan")

    def wall_time_of(self, frame: int) -> float:
        """Wall-clock time (perf_counter s) at which the cycle holding `frame` was processed,
        plus the frame's offset in it."""
        index = frame - self.first_frame
        block = self.block
        return float(self.cycle_start_s[index // block]) + (index % block) / self.sample_rate

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


class JackMidiSender:
    """A JACK client with one MIDI output port, for tests and benchmarks: `send(message, offset)`
    writes the message in the next process cycle at `offset` frames into it and returns the JACK
    frame time it was written at."""

    def __init__(self, server_name: str, client_name: str = "latentsynth-midi-sender"):
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

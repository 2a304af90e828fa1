"""The JACK test harness the benchmarks measure with: the native capture client records what the
graph played sample-exactly, and jackd's log is read back into which clients missed a cycle."""
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.jack_harness import DummyJackServer

RATE = 48_000


@pytest.fixture()
def jack_server():
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (apt-get install jackd2)")
    with DummyJackServer(f"latentsynth-harness-{os.getpid()}", RATE, 128) as server:
        yield server


def test_the_native_capture_records_each_frame_at_its_frame_time_and_each_cycle_at_its_wall_time(jack_server):
    """The bench's recorder (a Numba cfunc process callback) against a source that writes its own
    frame times: every recorded sample must be the frame time it was written at."""
    import jack

    from tests.support.jack_harness import JackCapture

    source = jack.Client("latentsynth-frame-source", no_start_server=True, servername=jack_server.name)
    port = source.outports.register("out")

    def write_frame_times(frames):  # float32 holds integers exactly below 2**24 (350 s at 48 kHz)
        port.get_array()[:] = (source.last_frame_time + np.arange(frames)) % 2 ** 24

    source.set_process_callback(write_frame_times)
    source.activate()
    started = time.perf_counter()
    capture = JackCapture(jack_server.name, ["latentsynth-frame-source:out"], seconds=2.0)
    log_offset = jack_server.log_size()
    try:
        time.sleep(0.5)
        recorded = int(capture.now() - capture.first_frame) - 2 * 128
        first = capture.first_frame
        cycles = capture.cycle_start_s[:recorded // 128].copy()
        seen = cycles[np.isfinite(cycles)]  # a cycle the graph lost to an xrun is not recorded
        # the bench's send phase: the newest cycle at or before a moment, NaN before the first
        before = [capture.cycle_before(seen[10] + 1e-6), capture.cycle_before(seen[10] - 1e-6),
                  capture.cycle_before(seen[0] - 1.0)]
        newest = capture.cycle_before(time.perf_counter())
    finally:
        capture.close()
        source.deactivate()
        source.close()
    assert first >= 0 and recorded > RATE // 4
    # the Python source can be late on a loaded host: every lost cycle is one jackd reported
    assert cycles.size - seen.size <= jack_server.xruns_since(log_offset)
    connected = RATE // 10  # from 0.1 s on: the port connection is made after activation
    written = capture.recorded(connected, recorded)
    expected = (first + np.arange(connected, recorded)) % 2 ** 24
    np.testing.assert_array_equal(capture.buffer[0, connected:recorded][written],
                                  expected[written].astype(np.float32))
    assert np.all(np.diff(seen) > 0) and seen.size > 0.9 * cycles.size
    assert started < seen[0] < time.perf_counter()
    assert before[:2] == [seen[10], seen[9]] and np.isnan(before[2])
    assert seen[-1] <= newest <= time.perf_counter()


def test_the_xrun_account_counts_the_late_clients_and_the_late_driver_after_an_offset():
    server = DummyJackServer.__new__(DummyJackServer)  # only its log: no jackd started
    server._log = tempfile.TemporaryFile()
    server._log.write(b"JackEngine::XRun: client = old was not finished, state = Triggered\n")
    server._log.flush()
    offset = server.log_size()
    server._log.write(b"JackTimedDriver::Process XRun = 29 usec\n"
                      b"JackEngine::XRun: client = latentsynth was not finished, state = Triggered\n"
                      b"JackAudioDriver::ProcessGraphAsyncMaster: Process error\n"
                      b"JackEngine::XRun: client = latentsynth-capture was not finished, state = Running\n"
                      b"JackEngine::XRun: client = latentsynth was not finished, state = Triggered\n")
    server._log.flush()
    assert server.xrun_blame(offset) == {"late_clients": {"latentsynth": 2, "latentsynth-capture": 1},
                                         "driver_late": 1}
    assert server.xrun_blame()["late_clients"]["old"] == 1
    server._log.close()


def test_the_native_stand_in_takes_the_engines_place_in_the_graph_and_plays_silence(jack_server):
    """The loaded baseline's stand-in: MIDI in from the bench's sender, its output into the capture
    and the system playback, a machine-code callback writing zeros."""
    import subprocess
    import sys

    from tests.support.jack_harness import JackCapture, JackMidiSender
    from tests.support.native_stand_in import NAME

    midi = JackMidiSender(jack_server.name, client_name="latentsynth-harness-midi")
    stand_in = subprocess.Popen([sys.executable, "-m", "tests.support.native_stand_in", "--server", jack_server.name,
                                 "--midi-from", midi.port.name], cwd=Path(__file__).resolve().parents[1],
                                env=jack_server.env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert stand_in.stdout.readline().strip() == "ready"
        capture = JackCapture(jack_server.name, [f"{NAME}:out_1"], seconds=2.0)
        try:
            midi.send(bytes([0x90, 60, 100]))
            time.sleep(0.5)
            connections = {port.name for port in midi.client.get_all_connections(midi.port)}
            playback = {port.name for port in capture.client.get_all_connections(f"{NAME}:out_1")}
            first = capture.first_frame
        finally:
            capture.close()
        assert connections == {f"{NAME}:midi_in"}
        assert "system:playback_1" in playback and "latentsynth-capture:in_1" in playback
        assert first >= 0 and stand_in.poll() is None
        assert not np.any(capture.buffer[0])
    finally:
        stand_in.stdin.close()
        assert stand_in.wait(10) == 0
        midi.close()

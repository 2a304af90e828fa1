"""The JACK test harness the benchmarks measure with: the native capture client records what the
graph played sample-exactly, and jackd's log is read back into which clients missed a cycle."""
import os
import shutil
import tempfile
import time

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
    try:
        time.sleep(0.5)
        recorded = int(capture.now() - capture.first_frame) - 2 * 128
        first = capture.first_frame
    finally:
        capture.close()
        source.deactivate()
        source.close()
    assert first >= 0 and recorded > RATE // 4
    connected = RATE // 10  # from 0.1 s on: the port connection is made after activation
    expected = (first + np.arange(connected, recorded)) % 2 ** 24
    np.testing.assert_array_equal(capture.buffer[0, connected:recorded], expected.astype(np.float32))
    cycles = capture.cycle_start_s[:recorded // 128]
    assert np.all(np.isfinite(cycles)) and np.all(np.diff(cycles) > 0)
    assert started < cycles[0] < time.perf_counter()


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

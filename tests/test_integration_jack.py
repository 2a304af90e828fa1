"""`latentsynth serve --audio jack` against a private dummy JACK server: an OSC note sounds at
the expected pitch within the declared latency."""
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RATE, PERIOD = 48_000, 256


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return udp.getsockname()[1]


def _wait_for_line(process, needle, timeout_s):
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line.rstrip())
        if needle in line:
            return lines
    raise AssertionError(f"serve never printed {needle!r}; output:\n" + "\n".join(lines))


@pytest.fixture()
def jack_server():
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (apt-get install jackd2)")
    from rt_engine.audio_backends import DummyJackServer

    with DummyJackServer(f"latentsynth-test-{os.getpid()}", RATE, PERIOD) as server:
        yield server


def test_an_osc_note_sounds_at_440_hz_within_the_declared_latency(jack_server):
    from rt_engine.audio_backends import JackCapture

    port = _free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "rt_engine.cli", "serve", "--audio", "jack", "--midi", "none",
         "--osc-port", str(port), "--osc-host", "127.0.0.1"],
        env=jack_server.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    capture = None
    try:
        lines = _wait_for_line(serve, "ready", 300)
        assert any(f"block {PERIOD} frames" in line for line in lines)
        capture = JackCapture(jack_server.name, ["latentsynth:out_1", "latentsynth:out_2"])
        time.sleep(0.3)
        sent_at = capture.now()
        subprocess.run(["oscsend", "localhost", str(port), "/note/on", "ff", "69", "100"], check=True)
        time.sleep(1.0)
        onset = capture.onset_after(sent_at)
        assert onset >= 0, "no sound after the OSC note"
        # declared: one block of scheduling + one period of output buffering; allow for the
        # oscsend process start-up and a scheduling hiccup on a loaded machine
        latency_s = (onset - sent_at) / RATE
        assert latency_s < 2 * PERIOD / RATE + 0.1
        start = onset - capture.first_frame + RATE // 10
        note = capture.buffer[0, start:start + RATE // 2]
        spectrum = np.abs(np.fft.rfft(note * np.hanning(note.size)))
        assert abs(np.argmax(spectrum) * RATE / note.size - 440.0) < 3.0
    finally:
        if capture is not None:
            capture.close()
        serve.terminate()
        out, _ = serve.communicate(timeout=30)
    assert serve.returncode == 0 and "stopped" in out

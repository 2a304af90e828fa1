"""`serve` and `render` as processes: a TCP password, and SIGINT/SIGTERM ending them cleanly
(children and shared memory included), also when SIGINT was ignored by the parent shell. (SIGTERM
on `serve` is tested on the shared server of test_security_osc.)"""
from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rt_engine.osc.osc_codec import decode_packet, encode_message
from tests.serve_process import REPO
from tests.support.osc_udp import Udp, procedural_model
from tests.support.processes import signalled_cleanly, thread_ids
from tests.test_patches import free_port
from tests.test_security_osc import serve_command

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")


def _framed(address: str, *args) -> bytes:
    packet = encode_message(address, args)
    return struct.pack(">i", len(packet)) + packet


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_framed(sock: socket.socket):
    """One size-prefixed packet, decoded; None when the server closed the connection."""
    size = _read_exactly(sock, 4)
    packet = size and _read_exactly(sock, struct.unpack(">i", size)[0])
    return decode_packet(packet) if packet else None


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does for a background job


def test_a_password_gates_tcp_and_sigint_ends_serve_cleanly_even_when_ignored_at_start(tmp_path):
    port = free_port()
    command = serve_command(port, procedural_model(tmp_path / "m"), "--password", "s3cret")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=_ignore_sigint)
    try:
        deadline = time.monotonic() + 180.0
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.strip() == "ready" or not line:
                break
        assert lines[-1].strip() == "ready", "".join(lines)
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(_framed("/sync", 1))
            assert _read_framed(sock).address == "/fail"
            assert _read_framed(sock) is None  # closed
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(_framed("/password", "wrong"))
            assert _read_framed(sock).args[0] == "#tcp" and _read_framed(sock) is None
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(_framed("/password", "s3cret") + _framed("/sync", 2))
            assert _read_framed(sock).args == ("/password",)
            assert _read_framed(sock).args == (2,)
        client = Udp(port)
        assert client.status()["osc_refused"] == 2  # UDP from loopback is still served
        client.close()
        assert signalled_cleanly(process, signal.SIGINT, expected_code=0)
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigterm_ends_serve_even_when_the_kernel_hands_it_to_another_thread(tmp_path):
    """A process-directed signal may land on any thread; the main thread must still see it
    (it once waited on a lock no signal on another thread could interrupt, and ran on)."""
    port = free_port()
    process = subprocess.Popen(serve_command(port, procedural_model(tmp_path / "m")), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if line.strip() == "ready":
                break
        other = thread_ids(process.pid)[-1]
        assert other != process.pid
        assert signalled_cleanly(process, signal.SIGTERM, expected_code=0, to_thread=other)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_render_ends_cleanly_on_sigterm_and_removes_its_partial_output(tmp_path):
    score = tmp_path / "long.jsonl"
    score.write_text("\n".join(json.dumps({"t": t * 0.5, "address": "/note/on", "args": [60 + t % 12, 90]})
                               for t in range(3000)) + "\n")
    out = tmp_path / "long.wav"
    command = [sys.executable, "-m", "rt_engine.cli", "render", "--score", str(score), "--out", str(out),
               "--model", str(procedural_model(tmp_path / "m")), "--gru", "none"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_ignore_sigint)
    try:
        deadline = time.monotonic() + 180.0
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 100_000):
            time.sleep(0.05)
        assert out.exists(), process.stderr.read() if process.poll() is not None else "no output"
        assert signalled_cleanly(process, signal.SIGTERM, expected_code=130)
        assert "interrupted" in process.stderr.read()
        assert not out.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

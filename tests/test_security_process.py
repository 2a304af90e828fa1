"""`serve` and `render` as processes: a TCP password, and SIGINT/SIGTERM ending them cleanly
(children and shared memory included), also when SIGINT was ignored by the parent shell."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rt_engine.osc_server import decode_packet, encode_message
from tests.serve_process import REPO, ServeProcess
from tests.test_patches import free_port
from tests.test_security_osc import Udp, procedural_model, serve_command

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


def test_a_password_gates_tcp_and_keeps_udp_to_this_machine(tmp_path):
    port = free_port()
    server = ServeProcess(serve_command(port, procedural_model(tmp_path / "m"), "--password", "s3cret"),
                          port, dict(os.environ), ready_timeout_s=60.0)
    try:
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
    finally:
        server.stop()


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _shared_memory(pids: set[int]) -> set[str]:
    """/dev/shm files mapped by any of `pids`."""
    names = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        names |= {line.split()[-1] for line in maps.splitlines() if "/dev/shm/" in line}
    return names


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(map(_alive, pids)):
        time.sleep(0.1)
    return {pid for pid in pids if _alive(pid)}


def _signalled_cleanly(process: subprocess.Popen, signum: int, expected_code: int) -> bool:
    """Send `signum`; True when the process exits with `expected_code` within 30 s and its
    children (bank worker, resource tracker) and the shared memory they mapped are gone."""
    children = _descendants(process.pid)
    shared = _shared_memory(children | {process.pid})
    assert children and shared, (children, shared)
    process.send_signal(signum)
    assert process.wait(timeout=30) == expected_code
    assert _wait_gone(children, 10.0) == set()
    return not any(Path(name).exists() for name in shared)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does for a background job


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_ends_cleanly_on_a_signal_even_with_sigint_ignored(tmp_path, signum):
    port = free_port()
    command = serve_command(port, procedural_model(tmp_path / "m"))
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=_ignore_sigint)
    try:
        deadline = time.monotonic() + 60.0
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.strip() == "ready" or not line:
                break
        assert lines[-1].strip() == "ready", "".join(lines)
        assert _signalled_cleanly(process, signum, expected_code=0)
        assert "stopped" in process.stdout.read()
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
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 100_000):
            time.sleep(0.05)
        assert out.exists(), process.stderr.read() if process.poll() is not None else "no output"
        assert _signalled_cleanly(process, signal.SIGTERM, expected_code=130)
        assert "interrupted" in process.stderr.read()
        assert not out.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

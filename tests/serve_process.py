"""A `latentsynth serve` (or stand-in) subprocess for integration tests: started, its output drained
by a thread, ready once it prints a line `ready`, spoken to over UDP OSC, stopped cleanly."""
from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time
from pathlib import Path

from rt_engine.osc.osc_codec import decode_packet, encode_message

REPO = Path(__file__).resolve().parents[1]


class ServeProcess:
    """Runs `command` in `cwd` (the repository root) with `env`; raises RuntimeError with the process's
    output when it exits or stays silent for `ready_timeout_s` before printing `ready`."""

    def __init__(self, command: list[str], port: int, env: dict, ready_timeout_s: float = 180.0,
                 cwd: Path = REPO):
        self.command, self.port = command, port
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if line.strip() == "ready":
                return
        self.stop()
        raise RuntimeError(f"{' '.join(command)} never printed 'ready':\n" + "".join(self.output))

    def _pump(self, lines: queue.Queue) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            lines.put(line)

    def send(self, address: str, *args) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(encode_message(address, args), ("127.0.0.1", self.port))

    def status(self, timeout_s: float = 3.0) -> dict:
        """The server's `/status.reply` as a dict (its arguments are key/value pairs)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout_s)
            sock.sendto(encode_message("/status"), ("127.0.0.1", self.port))
            while True:
                message = decode_packet(sock.recv(65536))
                if message.address == "/status.reply":
                    return dict(zip(message.args[0::2], message.args[1::2]))

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

"""A UDP OSC client that counts its bytes, a TCP /sync, a procedural model folder and process
RSS: shared by the security tests and bench/abuse.py."""
from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

from rt_engine.osc.osc_codec import decode_packet, encode_message


def rss_kb(pid: int) -> int:
    """Resident memory of process `pid` (kB)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmRSS")))


def procedural_model(folder: Path) -> Path:
    """A model folder naming the procedural bank source (fast to start, no weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"bank_source": "procedural"}))
    return folder


def tcp_sync(sock: socket.socket, sync_id: int) -> bool:
    """Whether a size-prefixed /sync on the TCP connection `sock` is answered by its /synced."""
    packet = encode_message("/sync", [sync_id])
    sock.sendall(struct.pack(">i", len(packet)) + packet)
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk
    return decode_packet(data[4:]).args == (sync_id,)


class Udp:
    """A UDP client on 127.0.0.1 that counts the bytes it sends (`sent`)."""

    def __init__(self, port: int, timeout_s: float = 1.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(timeout_s)
        self.port, self.sent = port, 0

    def send(self, data: bytes) -> None:
        self.sent += len(data)
        self.sock.sendto(data, ("127.0.0.1", self.port))

    def message(self, address: str, *args) -> None:
        self.send(encode_message(address, args))

    def receive(self, address: str | None = None):
        while True:
            message = decode_packet(self.sock.recv(65536))
            if address is None or message.address == address:
                return message

    def drain(self, quiet_s: float = 0.3) -> list[bytes]:
        """Everything that arrives until nothing has for `quiet_s` (bounded to 10 s)."""
        self.sock.settimeout(quiet_s)
        packets, deadline = [], time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                packets.append(self.sock.recv(65536))
            except socket.timeout:
                break
        self.sock.settimeout(1.0)
        return packets

    def status(self) -> dict:
        self.message("/status")
        args = self.receive("/status.reply").args
        return dict(zip(args[0::2], args[1::2]))

    def sync_s(self, sync_id: int) -> float:
        """Round trip of one /sync (s); raises socket.timeout when it is lost."""
        t0 = time.perf_counter()
        self.message("/sync", sync_id)
        while self.receive("/synced").args != (sync_id,):
            pass
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sock.close()

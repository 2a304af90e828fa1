"""The OSC server: UDP and TCP on one port, replies, bundles with timetags, flood bound.

Two halves. The codec is pure (bytes in, values out) and survives arbitrary bytes: every problem
is an `OscDecodeError` naming it. `OscServer` runs ONE light thread that blocks in `select` on the
UDP socket, the TCP listener, its connections and a wake-up pipe (it shares the GIL with the audio
callback, so it never spins); each packet is decoded, its messages timed and handed to
`rt_engine.osc_registry.dispatch`.

Wire formats: UDP datagrams hold one packet. TCP carries OSC 1.0 packets prefixed by their size
(int32 big-endian) or, when a connection's first byte is 0xC0 (END), SLIP-framed packets (OSC 1.1).

Timing: a bundle timetag becomes an absolute output frame through `engine.frame_for_time` (a future
bundle plays sample-accurately; a past one is passed on too, and the engine plays it at the next
block and counts it late); the timetag 1 ("immediately") gives `at_frame=None`. Timetags further
ahead than `max_ahead_s` are rejected with `/fail #bundle`.

Public API: `Message`, `Bundle`, `OscDecodeError`, `decode_packet(data)`, `encode_message(address,
args)`, `encode_bundle(timetag, packets)`, `flatten(packet)`, `unix_to_timetag(t)`,
`timetag_to_unix(tt)`, `IMMEDIATE`, `OscServer`.
"""
from __future__ import annotations

import math
import selectors
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from rt_engine.control_api import EngineControl
from rt_engine.osc_registry import (MAX_AHEAD_S, MAX_BUNDLE_DEPTH, RATE_BURST, RATE_LIMIT_PER_S,
                                    ServerHooks, dispatch)

IMMEDIATE = 1
"""The OSC timetag meaning "now"."""
NTP_UNIX_OFFSET_S = 2208988800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""
MAX_TCP_PACKET = 1 << 20
"""Largest TCP packet accepted (bytes); a bigger size prefix closes the connection."""
MAX_TCP_CLIENTS = 64
MAX_NOTIFY_CLIENTS = 32
UDP_DRAIN = 256
"""Datagrams read per wake-up before looking at the other sockets again."""
SLIP_END, SLIP_ESC, SLIP_ESC_END, SLIP_ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD


class OscDecodeError(ValueError):
    """Bytes that are not a valid OSC packet; the text says what is wrong."""


@dataclass(frozen=True)
class Message:
    address: str
    args: tuple


@dataclass(frozen=True)
class Bundle:
    timetag: int
    """64-bit NTP timetag: seconds since 1900 in the high 32 bits, fraction in the low 32."""
    elements: tuple


# ----------------------------------------------------------------------------- codec

def timetag_to_unix(timetag: int) -> float:
    """NTP timetag (64-bit int) -> seconds since the Unix epoch."""
    return (timetag >> 32) - NTP_UNIX_OFFSET_S + (timetag & 0xFFFFFFFF) / 2.0 ** 32


def unix_to_timetag(unix_time_s: float) -> int:
    """Seconds since the Unix epoch -> NTP timetag (64-bit int)."""
    ntp = unix_time_s + NTP_UNIX_OFFSET_S
    seconds = int(math.floor(ntp))
    fraction = min(int((ntp - seconds) * 2.0 ** 32), 0xFFFFFFFF)
    return (seconds << 32) | fraction


def _padded(n: int) -> int:
    return (n + 3) & ~3


def _read_string(data: bytes, pos: int, what: str) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise OscDecodeError(f"{what} is not NUL-terminated")
    try:
        text = data[pos:end].decode("utf-8")
    except UnicodeDecodeError as error:
        raise OscDecodeError(f"{what} is not UTF-8: {error.reason}") from None
    return text, _padded(end + 1)


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(data):
        raise OscDecodeError(f"{what} truncated: needs {n} bytes at offset {pos}, packet has {len(data)}")


def decode_message(data: bytes) -> Message:
    """One OSC message (bytes) -> Message. Types: i h f d s S c b T F N I t m r; arrays are not
    supported. Raises OscDecodeError."""
    address, pos = _read_string(data, 0, "address")
    if not address.startswith("/"):
        raise OscDecodeError(f"address {address[:64]!r} does not start with '/'")
    if pos >= len(data):
        return Message(address, ())
    tags, pos = _read_string(data, pos, "type tag string")
    if not tags.startswith(","):
        raise OscDecodeError(f"type tag string {tags[:64]!r} does not start with ','")
    args: list[Any] = []
    for tag in tags[1:]:
        if tag in "ifr":
            _need(data, pos, 4, f"argument '{tag}'")
            args.append(struct.unpack_from(">i" if tag == "i" else ">f" if tag == "f" else ">I", data,
                                           pos)[0])
            pos += 4
        elif tag in "hdt":
            _need(data, pos, 8, f"argument '{tag}'")
            args.append(struct.unpack_from(">q" if tag == "h" else ">d" if tag == "d" else ">Q", data,
                                           pos)[0])
            pos += 8
        elif tag in "sS":
            value, pos = _read_string(data, pos, "string argument")
            args.append(value)
        elif tag == "c":
            _need(data, pos, 4, "char argument")
            code = struct.unpack_from(">I", data, pos)[0]
            if code > 0x10FFFF:
                raise OscDecodeError(f"char argument {code} is not a code point")
            args.append(chr(code))
            pos += 4
        elif tag == "m":
            _need(data, pos, 4, "MIDI argument")
            args.append(bytes(data[pos:pos + 4]))
            pos += 4
        elif tag == "b":
            _need(data, pos, 4, "blob size")
            size = struct.unpack_from(">i", data, pos)[0]
            if size < 0:
                raise OscDecodeError(f"blob size {size} is negative")
            _need(data, pos + 4, size, "blob")
            args.append(bytes(data[pos + 4:pos + 4 + size]))
            pos += 4 + _padded(size)
        elif tag in "TFNI":
            args.append({"T": True, "F": False, "N": None, "I": math.inf}[tag])
        elif tag in "[]":
            raise OscDecodeError("OSC arrays are not supported")
        else:
            raise OscDecodeError(f"unknown type tag {tag!r}")
    return Message(address, tuple(args))


def decode_packet(data: bytes, depth: int = 0) -> Message | Bundle:
    """One OSC packet (a message or a bundle, bundles nested up to MAX_BUNDLE_DEPTH) -> value.
    Raises OscDecodeError for anything malformed."""
    data = bytes(data)
    if len(data) == 0 or len(data) % 4:
        raise OscDecodeError(f"packet size {len(data)} is not a positive multiple of 4")
    if not data.startswith(b"#bundle\0"):
        return decode_message(data)
    if depth >= MAX_BUNDLE_DEPTH:
        raise OscDecodeError(f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
    _need(data, 8, 8, "bundle timetag")
    timetag = struct.unpack_from(">Q", data, 8)[0]
    pos, elements = 16, []
    while pos < len(data):
        _need(data, pos, 4, "bundle element size")
        size = struct.unpack_from(">i", data, pos)[0]
        if size <= 0 or size % 4:
            raise OscDecodeError(f"bundle element size {size} is not a positive multiple of 4")
        _need(data, pos + 4, size, "bundle element")
        elements.append(decode_packet(data[pos + 4:pos + 4 + size], depth + 1))
        pos += 4 + size
    return Bundle(timetag, tuple(elements))


def flatten(packet: Message | Bundle, timetag: int = IMMEDIATE) -> Iterator[tuple[int, Message]]:
    """Messages of `packet` in order, each with the timetag that applies to it: its innermost
    bundle's, or the enclosing one's where a nested bundle says IMMEDIATE."""
    if isinstance(packet, Message):
        yield timetag, packet
        return
    inner = timetag if packet.timetag == IMMEDIATE else packet.timetag
    for element in packet.elements:
        yield from flatten(element, inner)


def _osc_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return raw + b"\0" * (_padded(len(raw)) - len(raw))


def encode_message(address: str, args: Sequence[Any] = ()) -> bytes:
    """Address and Python values -> one OSC message. bool -> T/F, int -> i (h beyond int32),
    float -> f, str -> s, bytes -> b, None -> N."""
    tags, payload = [","], []
    for value in args:
        if isinstance(value, bool):
            tags.append("T" if value else "F")
        elif isinstance(value, int):
            if -(1 << 31) <= value < (1 << 31):
                tags.append("i")
                payload.append(struct.pack(">i", value))
            else:
                tags.append("h")
                payload.append(struct.pack(">q", value))
        elif isinstance(value, float):
            tags.append("f")
            payload.append(struct.pack(">f", value))
        elif isinstance(value, str):
            tags.append("s")
            payload.append(_osc_string(value))
        elif isinstance(value, (bytes, bytearray)):
            tags.append("b")
            payload.append(struct.pack(">i", len(value)) + bytes(value)
                           + b"\0" * (_padded(len(value)) - len(value)))
        elif value is None:
            tags.append("N")
        else:
            raise TypeError(f"cannot encode OSC argument {value!r} of type {type(value).__name__}")
    return _osc_string(address) + _osc_string("".join(tags)) + b"".join(payload)


def encode_bundle(timetag: int, packets: Sequence[bytes]) -> bytes:
    """Encoded messages/bundles -> one bundle with NTP `timetag` (IMMEDIATE for now)."""
    body = b"".join(struct.pack(">i", len(p)) + p for p in packets)
    return b"#bundle\0" + struct.pack(">Q", timetag) + body


def slip_decode(frame: bytes) -> bytes:
    """Undo SLIP escaping of one frame (the END bytes already removed)."""
    out, escaped = bytearray(), False
    for byte in frame:
        if escaped:
            out.append(SLIP_END if byte == SLIP_ESC_END else SLIP_ESC if byte == SLIP_ESC_ESC else byte)
            escaped = False
        elif byte == SLIP_ESC:
            escaped = True
        else:
            out.append(byte)
    return bytes(out)


def slip_encode(packet: bytes) -> bytes:
    """One packet -> a SLIP frame (END, escaped bytes, END)."""
    body = packet.replace(bytes([SLIP_ESC]), bytes([SLIP_ESC, SLIP_ESC_ESC]))
    body = body.replace(bytes([SLIP_END]), bytes([SLIP_ESC, SLIP_ESC_END]))
    return bytes([SLIP_END]) + body + bytes([SLIP_END])


# ----------------------------------------------------------------------------- server

class _TcpClient:
    """One TCP connection: its framing mode, unparsed bytes and a lock for replies sent from
    other threads."""

    def __init__(self, sock: socket.socket, addr: tuple):
        self.sock, self.addr = sock, addr
        self.mode: str | None = None  # "size" or "slip", fixed by the first byte
        self.buffer = bytearray()
        self.lock = threading.Lock()
        self.closed = False

    def send(self, packet: bytes) -> None:
        frame = slip_encode(packet) if self.mode == "slip" else struct.pack(">i", len(packet)) + packet
        with self.lock:
            if not self.closed:
                self.sock.sendall(frame)

    def frames(self) -> Iterator[bytes]:
        """Complete packets in the buffer (consumed). Raises OscDecodeError for a bad size prefix
        or an oversized frame, after which the connection is closed."""
        if self.mode is None and self.buffer:
            self.mode = "slip" if self.buffer[0] == SLIP_END else "size"
        if self.mode == "slip":
            while True:
                end = self.buffer.find(bytes([SLIP_END]))
                if end < 0:
                    if len(self.buffer) > 2 * MAX_TCP_PACKET:
                        raise OscDecodeError(f"SLIP frame longer than {2 * MAX_TCP_PACKET} bytes")
                    return
                frame = bytes(self.buffer[:end])
                del self.buffer[:end + 1]
                if frame:
                    yield slip_decode(frame)
        while len(self.buffer) >= 4:
            size = struct.unpack_from(">i", self.buffer, 0)[0]
            if size <= 0 or size > MAX_TCP_PACKET:
                raise OscDecodeError(f"TCP packet size {size} outside 1..{MAX_TCP_PACKET}")
            if len(self.buffer) < 4 + size:
                return
            frame = bytes(self.buffer[4:4 + size])
            del self.buffer[:4 + size]
            yield frame


@dataclass(frozen=True)
class _Origin:
    """Where a packet came from and where its replies go: key identifies the client."""

    key: tuple
    send: Callable[[bytes], None]


class OscServer:
    """OSC over UDP and TCP on one port, dispatching to `engine` (an `EngineControl`).

    IPv4. `port` 0 picks a free port (the same number for UDP and TCP); `reply_port`
    sends UDP replies to that port of the sender's host instead of the sender's port.
    `rate_limit_per_s`/`burst`: token bucket over dispatched messages; the excess is dropped and
    counted. Counters appear in /status.reply as osc_*."""

    def __init__(self, engine: EngineControl, port: int = 57130, host: str = "0.0.0.0",
                 reply_port: int | None = None, rate_limit_per_s: float = RATE_LIMIT_PER_S,
                 burst: float = RATE_BURST, max_ahead_s: float = MAX_AHEAD_S):
        if not 0 <= port <= 65535:
            raise ValueError(f"OSC port {port} outside 0..65535")
        if reply_port is not None and not 1 <= reply_port <= 65535:
            raise ValueError(f"OSC reply port {reply_port} outside 1..65535")
        self.engine, self.host, self.port, self.reply_port = engine, host, port, reply_port
        self.rate_limit_per_s, self.burst, self.max_ahead_s = rate_limit_per_s, burst, max_ahead_s
        self.counters = {"osc_packets": 0, "osc_messages": 0, "osc_malformed": 0, "osc_failed": 0,
                         "osc_dropped": 0, "osc_replies_dropped": 0}
        self._tokens, self._last_refill = float(burst), time.monotonic()
        self._notify: dict[tuple, Callable[[bytes], None]] = {}
        self._notify_lock = threading.Lock()
        self._clients: dict[socket.socket, _TcpClient] = {}
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def udp_port(self) -> int:
        return self._udp.getsockname()[1] if self._udp else 0

    @property
    def tcp_port(self) -> int:
        return self._tcp.getsockname()[1] if self._tcp else 0

    # -- life cycle
    def start(self) -> None:
        """Bind UDP and TCP on `port` and start the server thread. Raises OSError naming the
        port when it is taken."""
        if self._thread is not None:
            raise RuntimeError("OscServer already started")
        try:
            self._udp, self._tcp = self._bind()
        except OSError as error:
            raise OSError(error.errno, f"cannot bind OSC port {self.port} on {self.host}: "
                          f"{error.strerror}") from None
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        for sock, handler in ((self._udp, self._on_udp), (self._tcp, self._on_accept),
                              (self._wake_r, None)):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, handler)
        self._thread = threading.Thread(target=self._run, name="osc-server", daemon=True)
        self._thread.start()

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        for _attempt in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            try:
                udp.bind((self.host, self.port))
            except OSError:
                udp.close()
                raise
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                if self.port != 0:
                    raise
                continue
            tcp.listen(16)
            return udp, tcp
        raise OSError(98, "no free port for both UDP and TCP")

    def stop(self) -> None:
        """Stop the thread and close every socket. Safe to call twice."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5.0)
        for client in list(self._clients.values()):
            self._close_client(client)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()
        self._thread = self._udp = self._tcp = None

    def server_status(self) -> dict:
        """The server's counters for /status.reply."""
        status = dict(self.counters)
        status["osc_tcp_clients"] = len(self._clients)
        status["osc_notify_clients"] = len(self._notify)
        return status

    # -- the thread
    def _run(self) -> None:
        while not self._stopping:
            for key, _mask in self._selector.select():
                if key.data is None:
                    return
                try:
                    key.data(key.fileobj)
                except Exception as error:  # never let one client kill the server
                    self.counters["osc_malformed"] += 1
                    print(f"osc server: {type(error).__name__}: {error}", file=sys.stderr, flush=True)

    def _on_udp(self, sock: socket.socket) -> None:
        for _ in range(UDP_DRAIN):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            target = (addr[0], self.reply_port or addr[1])
            origin = _Origin(("udp",) + target, lambda packet, t=target: self._udp_send(packet, t))
            self._handle_packet(data, origin)

    def _udp_send(self, packet: bytes, target: tuple) -> None:
        try:
            self._udp.sendto(packet, target)
        except OSError:
            self.counters["osc_replies_dropped"] += 1

    def _on_accept(self, sock: socket.socket) -> None:
        try:
            conn, addr = sock.accept()
        except OSError:
            return
        if len(self._clients) >= MAX_TCP_CLIENTS:
            conn.close()
            return
        conn.settimeout(1.0)  # recv only when readable; sendall may wait up to 1 s
        client = _TcpClient(conn, addr)
        self._clients[conn] = client
        self._selector.register(conn, selectors.EVENT_READ, self._on_tcp)

    def _on_tcp(self, conn: socket.socket) -> None:
        client = self._clients[conn]
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError, socket.timeout):
            return
        except OSError:
            data = b""
        if not data:
            self._close_client(client)
            return
        client.buffer += data
        origin = _Origin(("tcp", id(client)), lambda packet: self._tcp_send(client, packet))
        try:
            for frame in client.frames():
                self._handle_packet(frame, origin)
        except OscDecodeError as error:
            self.counters["osc_malformed"] += 1
            self._reply(origin, "/fail", ["#tcp", str(error)])
            self._close_client(client)

    def _tcp_send(self, client: _TcpClient, packet: bytes) -> None:
        try:
            client.send(packet)
        except OSError:
            self.counters["osc_replies_dropped"] += 1
            try:
                client.sock.shutdown(socket.SHUT_RDWR)  # the loop sees EOF and closes it
            except OSError:
                pass

    def _close_client(self, client: _TcpClient) -> None:
        with client.lock:
            client.closed = True
        self._clients.pop(client.sock, None)
        with self._notify_lock:
            self._notify.pop(("tcp", id(client)), None)
        try:
            self._selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()

    # -- packets
    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last_refill) * self.rate_limit_per_s)
        self._last_refill = now
        if self._tokens < 1.0:
            self.counters["osc_dropped"] += 1
            return False
        self._tokens -= 1.0
        return True

    def _reply(self, origin: _Origin, address: str, args: Sequence[Any]) -> None:
        packet = encode_message(address, args)
        origin.send(packet)
        with self._notify_lock:
            others = [send for key, send in self._notify.items() if key != origin.key]
        for send in others:
            send(packet)

    def _set_notify(self, origin: _Origin, on: bool, port: int | None) -> None:
        key, send = origin.key, origin.send
        if port is not None and key[0] == "udp":
            target = (key[1], port)
            key, send = ("udp",) + target, lambda packet: self._udp_send(packet, target)
        with self._notify_lock:
            if not on:
                self._notify.pop(key, None)
            elif key in self._notify or len(self._notify) < MAX_NOTIFY_CLIENTS:
                self._notify[key] = send
            else:
                raise RuntimeError(f"too many notify clients (at most {MAX_NOTIFY_CLIENTS})")

    def _handle_packet(self, data: bytes, origin: _Origin) -> None:
        """Decode one packet, time its messages and dispatch them (called by the server thread)."""
        self.counters["osc_packets"] += 1
        if not self._take_token():
            return
        reply = lambda address, args: self._reply(origin, address, args)  # noqa: E731
        try:
            packet = decode_packet(data)
        except OscDecodeError as error:
            self.counters["osc_malformed"] += 1
            reply("/fail", ["#packet", str(error)])
            return
        hooks = ServerHooks(set_notify=lambda on, port: self._set_notify(origin, on, port),
                            server_status=self.server_status)
        frames: dict[int, int | None] = {IMMEDIATE: None}
        first = True
        for timetag, message in flatten(packet):
            if not first and not self._take_token():
                continue
            first = False
            self.counters["osc_messages"] += 1
            if timetag not in frames:
                frames[timetag] = self._frame_for(timetag, reply)
            at_frame = frames[timetag]
            if at_frame == -1:
                self.counters["osc_failed"] += 1
                continue
            if not dispatch(self.engine, message.address, message.args, at_frame, reply, hooks):
                self.counters["osc_failed"] += 1

    def _frame_for(self, timetag: int, reply: Callable) -> int:
        """Timetag -> absolute output frame, or -1 (after a /fail) when it is too far ahead."""
        unix_time_s = timetag_to_unix(timetag)
        ahead_s = unix_time_s - time.time()
        if ahead_s > self.max_ahead_s:
            reply("/fail", ["#bundle", f"timetag {ahead_s:.1f} s ahead, more than {self.max_ahead_s:g} s"])
            return -1
        try:
            return int(self.engine.frame_for_time(unix_time_s))
        except Exception as error:
            reply("/fail", ["#bundle", f"engine error: {type(error).__name__}: {error}"])
            return -1

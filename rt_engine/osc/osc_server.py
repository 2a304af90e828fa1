"""The OSC server: UDP and TCP on one port, replies, bundles with timetags, per-source limits.

The codec is `rt_engine.osc.osc_codec` (pure, safe on arbitrary bytes). `OscServer` runs ONE light thread that blocks in `select` on the
UDP socket, the TCP listener, its connections and a wake-up pipe (it shares the GIL with the audio
callback, so it never spins); each packet is decoded, its messages timed and handed to
`rt_engine.osc.osc_registry.dispatch`.

Turns: UDP sources and TCP connections take turns. UDP datagrams wait per source and are served
`UDP_QUANTUM` per source per round; a TCP connection's complete frames wait in it and are served one
per connection per round, and a connection is read again only once its waiting frames are served
(the kernel holds the rest: TCP back-pressure). So a client with a long backlog delays another
client's frame by at most one of its own frames per round, not by the chunk the server read.

Native note lane (`native_lane=True`, where the engine renders in a native callback): the UDP
socket is read by `rt_engine.osc.native_osc`'s lane thread instead of this one; a lone
`/note/on` or `/note/off` from this machine is applied by the callback at its next block without
waiting for this thread, which then does that note's control-side work (`applied=True`) and
everything else as before: every datagram still passes the turns, limits and replies below.

Wire formats: UDP datagrams hold one packet. TCP carries OSC 1.0 packets prefixed by their size
(int32 big-endian) or, when a connection's first byte is 0xC0 (END), SLIP-framed packets (OSC 1.1).

Timing: a bundle timetag becomes an absolute output frame through `engine.frame_for_time` (a future
bundle plays sample-accurately; a past one is passed on too, and the engine plays it at the next
block and counts it late); the timetag 1 ("immediately") gives `at_frame=None`. Timetags further
ahead than `max_ahead_s` are rejected with `/fail #bundle`.

Safety (scsynth's conventions, limits in `rt_engine.osc.osc_guard.GuardConfig`): loopback unless the
operator binds another address; replies go to the sender's own address (or the operator's
`reply_port`) and stay within a small multiple of what the sender sent; rate and dated commands
are bounded per source, so a flooding client neither starves another nor fills the engine's
schedule; TCP connections are capped per host, time out when idle or half-sent, and a client
that does not read its replies is dropped instead of blocking the thread.

Public API: `OscServer`.
"""
from __future__ import annotations

import collections
import hmac
import selectors
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from rt_engine.core.control_api import EngineControl
from rt_engine.osc.osc_codec import (IMMEDIATE, SLIP_END, Message, OscDecodeError, decode_packet, encode_message,
                                 flatten, slip_decode, slip_encode, timetag_to_unix)
from rt_engine.osc.osc_guard import (AccessPolicy, DatedBook, GuardConfig, Source, SourceTable, TokenBucket,
                                 clip_text, is_loopback)
from rt_engine.osc.osc_registry import MAX_AHEAD_S, REGISTRY, ServerHooks, dispatch
from rt_engine.osc.native_osc import NativeOscLane

MAX_TCP_PACKET = 1 << 20
"""Largest TCP packet accepted (bytes); a bigger size prefix closes the connection."""
TCP_SNDBUF = 65536
"""Kernel send buffer of a TCP connection (bytes); beyond it, replies queue in the client's
bounded output (GuardConfig.tcp_output_limit_bytes)."""
SWEEP_S = 0.25
"""How often the server thread checks its time limits (s)."""
UDP_DRAIN = 1024
"""Datagrams read per wake-up before looking at the other sockets again."""
UDP_BACKLOG = 2048
"""Datagrams of one source waiting to be handled; beyond, new ones are dropped and counted."""
UDP_BACKLOG_BYTES = 16 << 20
"""Bytes of datagrams waiting, all sources together; beyond, new ones are dropped and counted."""
UDP_QUANTUM = 16
"""Datagrams of one source handled per round: sources take turns (deficit round robin), so a
flooding sender delays another's packet by a round, not by its whole backlog."""
REPLY_PRECHECK_BYTES = 1024
"""A message that always replies (/status, /sync, ...) is not even run for a source with less
reply credit than this (counted in osc_replies_over_budget)."""
# ----------------------------------------------------------------------------- server

class _TcpClient:
    """One TCP connection: its framing mode, unparsed bytes, complete frames waiting their turn
    (`ready`), unsent output (sent without ever blocking) and a lock for replies sent from other
    threads. `doomed` names why the server thread must close it (a broken socket, an output
    overflow); `ended` that the peer closed its side, `error` a framing error, both acted on once
    the waiting frames are served. `events` is what the selector watches for it (0: not registered)."""

    def __init__(self, sock: socket.socket, addr: tuple, now: float, authenticated: bool):
        self.sock, self.addr = sock, addr
        self.mode: str | None = None  # "size" or "slip", fixed by the first byte
        self.buffer = bytearray()
        self.ready: collections.deque[bytes] = collections.deque()
        self.ended = False
        self.error: str | None = None
        self.events = 0
        self.out = bytearray()
        self.lock = threading.Lock()
        self.closed = False
        self.doomed: str | None = None
        self.authenticated = authenticated
        self.last_activity = now
        self.partial_since: float | None = None

    def send(self, packet: bytes, limit_bytes: int) -> bool:
        """Queue one packet (framed) and send what the socket takes now. False, with the client
        doomed, when its unsent output would exceed `limit_bytes` (a reader too slow)."""
        frame = slip_encode(packet) if self.mode == "slip" else struct.pack(">i", len(packet)) + packet
        with self.lock:
            if self.closed or self.doomed:
                return False
            if len(self.out) + len(frame) > limit_bytes:
                self.doomed = f"more than {limit_bytes} reply bytes unread"
                return False
            self.out += frame
            self._flush_locked()
        return True

    def flush(self) -> None:
        with self.lock:
            if not self.closed:
                self._flush_locked()

    def _flush_locked(self) -> None:
        while self.out:
            try:
                n_sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.out.clear()
                self.doomed = f"send failed: {error.strerror}"
                return
            del self.out[:n_sent]

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


class _AppliedByLane:
    """The engine for a note the native lane has played: `note_on`/`note_off` do the
    control-side work only (`applied=True`); nothing else is called for such a packet."""

    def __init__(self, engine: EngineControl):
        self._engine = engine

    def note_on(self, pitch, velocity, note_id=-1, channel=-1, at_frame=None) -> bool:
        return self._engine.note_on(pitch, velocity, note_id=note_id, channel=channel, at_frame=at_frame,
                                    applied=True)

    def note_off(self, pitch=None, note_id=None, channel=-1, at_frame=None) -> bool:
        return self._engine.note_off(pitch=pitch, note_id=note_id, channel=channel, at_frame=at_frame,
                                     applied=True)


@dataclass(frozen=True)
class _Origin:
    """Where a packet came from and where its replies go: key identifies the source."""

    key: tuple
    send: Callable[[bytes], None]


@dataclass(frozen=True)
class _Watcher:
    """A /notify registration: where copies go and the source whose traffic keeps it alive."""

    send: Callable[[bytes], None]
    owner: tuple


class OscServer:
    """OSC over UDP and TCP on one port, dispatching to `engine` (an `EngineControl`).

    IPv4, bound to `host` (loopback unless the operator opens it). `port` 0 picks a free port
    (the same number for UDP and TCP); `reply_port` sends UDP replies to that port of the
    sender's host instead of the sender's port. `config` holds the per-source limits
    (`rt_engine.osc.osc_guard`); `allow` lists the networks (CIDR) other hosts must be in;
    `password` makes every TCP connection start with `/password <password>` and refuses UDP from
    other hosts; `check_sound(path) -> path` vets `/timbre/audio` files (raises ValueError);
    `native_lane` reads UDP in the native note lane and lets the engine's native callback
    (`engine.native_block`) apply lone notes from this machine (module docstring).
    Counters appear in /status.reply as osc_*."""

    def __init__(self, engine: EngineControl, port: int = 57130, host: str = "127.0.0.1",
                 reply_port: int | None = None, max_ahead_s: float = MAX_AHEAD_S,
                 config: GuardConfig = GuardConfig(), allow: Sequence[str] = (),
                 password: str | None = None, check_sound: Callable[[str], str] | None = None,
                 native_lane: bool = False):
        if not 0 <= port <= 65535:
            raise ValueError(f"OSC port {port} outside 0..65535")
        if reply_port is not None and not 1 <= reply_port <= 65535:
            raise ValueError(f"OSC reply port {reply_port} outside 1..65535")
        if password is not None and not password:
            raise ValueError("the OSC password must not be empty")
        self.engine, self.host, self.port, self.reply_port = engine, host, port, reply_port
        self.max_ahead_s, self.config = max_ahead_s, config
        self.policy = AccessPolicy(allow)
        self._password = None if password is None else password.encode("utf-8")
        self._check_sound = check_sound
        self._want_lane = native_lane
        self.lane: NativeOscLane | None = None
        self.counters = {name: 0 for name in (
            "osc_packets", "osc_messages", "osc_malformed", "osc_failed", "osc_dropped",
            "osc_dated_dropped", "osc_replies_dropped", "osc_replies_over_budget", "osc_refused",
            "osc_tcp_refused", "osc_tcp_evicted", "osc_tcp_expired", "osc_tcp_slow_dropped")}
        self._global = TokenBucket(config.global_rate_per_s, config.global_burst)
        self._sources = SourceTable(config)
        self._dated = DatedBook(config)
        self._lock = threading.RLock()  # sources, credit and watchers: replies come from any thread
        self._notify: dict[tuple, _Watcher] = {}
        self._clients: dict[socket.socket, _TcpClient] = {}
        self._backlog: dict[tuple, collections.deque] = {}  # UDP source -> (datagram, applied) waiting
        self._backlog_bytes = 0
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._next_sweep = 0.0

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
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        for sock, handler in ((self._udp, self._on_udp), (self._tcp, self._on_accept),
                              (self._wake_r, self._on_wake)):
            sock.setblocking(False)
            if sock is not self._udp or not self._want_lane:
                self._selector.register(sock, selectors.EVENT_READ, handler)
        if self._want_lane:
            self.lane = NativeOscLane(self._udp)
            self.lane.start(self._wake_w)
            block = getattr(self.engine, "native_block", None)
            if block is not None:
                block.attach_osc_lane(self.lane)
                self.lane.enable()
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
        self._wake()
        self._thread.join(timeout=5.0)
        if self.lane is not None:
            self.lane.stop()
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
        status["osc_sources"] = len(self._sources)
        status["osc_dated_ahead"] = len(self._dated)
        status["osc_backlog"] = sum(len(queue) for queue in list(self._backlog.values()))
        status["osc_note_lane"] = "native" if self.lane is not None and self.lane.enabled else "python"
        if self.lane is not None:
            status.update(self.lane.status())
        return status

    # -- the thread
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending (or the server is closing)

    def _on_wake(self, sock: socket.socket) -> None:
        try:
            sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            pass
        if self.lane is not None:
            for data, addr, applied in self.lane.drain():
                if not self._take_datagram(data, addr, applied):
                    self.lane.handled()

    def _run(self) -> None:
        while not self._stopping:
            busy = self._backlog or any(c.ready or c.ended or c.error for c in self._clients.values())
            for key, mask in self._selector.select(timeout=0.0 if busy else SWEEP_S):
                if self._stopping:
                    return
                try:
                    if mask & selectors.EVENT_WRITE and key.fileobj in self._clients:
                        self._clients[key.fileobj].flush()
                    if mask & selectors.EVENT_READ:
                        key.data(key.fileobj)
                except Exception as error:  # never let one client kill the server
                    self.counters["osc_malformed"] += 1
                    print(f"osc server: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            self._serve_backlog()
            self._serve_tcp()
            self._tend_clients()
            now = time.monotonic()
            if now >= self._next_sweep:
                self._next_sweep = now + SWEEP_S
                self._sweep(now)

    def _tend_clients(self) -> None:
        """Close doomed TCP clients; watch a connection for reading only while none of its frames
        wait (and its peer has not closed), for writing only while output is queued."""
        for client in list(self._clients.values()):
            if client.doomed:
                if client.doomed.startswith("more than"):
                    self.counters["osc_tcp_slow_dropped"] += 1
                self._close_client(client)
                continue
            reading = not (client.ready or client.ended or client.error)
            events = (selectors.EVENT_READ if reading else 0) | (selectors.EVENT_WRITE if client.out else 0)
            if events != client.events:
                if not events:
                    self._selector.unregister(client.sock)
                elif not client.events:
                    self._selector.register(client.sock, events, self._on_tcp)
                else:
                    self._selector.modify(client.sock, events, self._on_tcp)
                client.events = events

    def _sweep(self, now: float) -> None:
        """Time limits: idle and half-sent TCP connections, silent /notify clients."""
        config = self.config
        for client in list(self._clients.values()):
            partial = client.partial_since is not None and now - client.partial_since > config.tcp_partial_s
            if partial or now - client.last_activity > config.tcp_idle_s:
                self.counters["osc_tcp_expired"] += 1
                self._close_client(client)
        with self._lock:
            for key, watcher in list(self._notify.items()):
                owner = self._sources.find(watcher.owner)
                if owner is None or now - owner.last_seen > config.notify_idle_s:
                    del self._notify[key]

    def _on_udp(self, sock: socket.socket) -> None:
        """Read what is waiting into the per-source backlog (handled by `_serve_backlog`)."""
        for _ in range(UDP_DRAIN):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self._take_datagram(data, addr, False)

    def _take_datagram(self, data: bytes, addr: tuple, applied: bool) -> bool:
        """One datagram into its source's backlog (True), or refused or dropped and counted
        (False). An applied one (the native lane played it) is never refused or dropped here: its
        control-side work must follow."""
        host = addr[0]
        if not applied and (not self.policy.permits(host) or (self._password is not None and not is_loopback(host))):
            self.counters["osc_refused"] += 1
            return False
        key = ("udp", host, addr[1])
        queue = self._backlog.get(key)
        if queue is None:
            queue = self._backlog[key] = collections.deque()
        if not applied and (len(queue) >= UDP_BACKLOG or self._backlog_bytes + len(data) > UDP_BACKLOG_BYTES):
            self.counters["osc_packets"] += 1
            self.counters["osc_dropped"] += 1
            return False
        queue.append((data, applied))
        self._backlog_bytes += len(data)
        return True

    def _serve_backlog(self) -> None:
        """One round: up to UDP_QUANTUM packets of each source with a backlog."""
        for key in list(self._backlog):
            queue = self._backlog[key]
            target = (key[1], self.reply_port or key[2])
            origin = _Origin(key, lambda packet, t=target: self._udp_send(packet, t))
            for _ in range(min(UDP_QUANTUM, len(queue))):
                data, applied = queue.popleft()
                self._backlog_bytes -= len(data)
                self._handle_packet(data, origin, applied)
                if self.lane is not None:
                    self.lane.handled()
            if not queue:
                del self._backlog[key]

    def _udp_send(self, packet: bytes, target: tuple) -> None:
        try:
            self._udp.sendto(packet, socket.MSG_DONTWAIT, target)  # blocking socket under the lane
        except OSError:
            self.counters["osc_replies_dropped"] += 1

    def _on_accept(self, sock: socket.socket) -> None:
        try:
            conn, addr = sock.accept()
        except OSError:
            return
        now, config = time.monotonic(), self.config
        if not self.policy.permits(addr[0]):
            self.counters["osc_tcp_refused"] += 1
            conn.close()
            return
        same_host = [c for c in self._clients.values() if c.addr[0] == addr[0]]
        full = same_host if len(same_host) >= config.tcp_per_host else \
            list(self._clients.values()) if len(self._clients) >= config.tcp_total else []
        if full:
            idlest = min(full, key=lambda c: c.last_activity)
            if now - idlest.last_activity < config.tcp_partial_s:
                self.counters["osc_tcp_refused"] += 1
                conn.close()
                return
            self.counters["osc_tcp_evicted"] += 1
            self._close_client(idlest)
        conn.setblocking(False)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TCP_SNDBUF)  # unread replies wait in `out`
        client = _TcpClient(conn, addr, now, authenticated=self._password is None)
        self._clients[conn] = client
        self._selector.register(conn, selectors.EVENT_READ, self._on_tcp)
        client.events = selectors.EVENT_READ

    def _on_tcp(self, conn: socket.socket) -> None:
        """Read what the connection has into its waiting frames (served by `_serve_tcp`)."""
        client = self._clients.get(conn)
        if client is None or client.ready or client.ended or client.error:
            return
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            client.ended = True
            return
        now = time.monotonic()
        client.last_activity = now
        client.buffer += data
        try:
            client.ready.extend(client.frames())
        except OscDecodeError as error:
            client.error = str(error)
        client.partial_since = (client.partial_since or now) if client.buffer else None

    def _serve_tcp(self) -> None:
        """One round: one waiting frame of each TCP connection; a connection whose frames are all
        served is closed if its peer ended it or its framing broke."""
        for client in list(self._clients.values()):
            if client.closed:
                continue
            origin = _Origin(("tcp", id(client)), lambda packet, c=client: self._tcp_send(c, packet))
            if client.ready:
                frame = client.ready.popleft()
                client.last_activity = time.monotonic()
                if client.authenticated:
                    self._handle_packet(frame, origin)
                else:
                    self._authenticate(client, frame, origin)
            elif client.error:
                self.counters["osc_malformed"] += 1
                self._reply(origin, "/fail", ["#tcp", client.error])
                client.flush()
                self._close_client(client)
            elif client.ended:
                self._close_client(client)

    def _authenticate(self, client: _TcpClient, frame: bytes, origin: _Origin) -> bool:
        """The first packet of a connection to a password-protected server; False (connection
        closed) unless it is `/password <the password>`."""
        try:
            message = decode_packet(frame)
        except OscDecodeError:
            message = None
        given = message.args[0] if isinstance(message, Message) and message.address == "/password" \
            and len(message.args) == 1 and isinstance(message.args[0], str) else ""
        if hmac.compare_digest(given.encode("utf-8"), self._password):
            client.authenticated = True
            self._reply(origin, "/done", ["/password"])
            return True
        self.counters["osc_refused"] += 1
        self._reply(origin, "/fail", ["#tcp", "password required: send /password <password> first"])
        client.flush()
        self._close_client(client)
        return False

    def _tcp_send(self, client: _TcpClient, packet: bytes) -> None:
        if not client.send(packet, self.config.tcp_output_limit_bytes):
            self.counters["osc_replies_dropped"] += 1
        if client.doomed and threading.get_ident() != self._thread.ident:
            self._wake()

    def _close_client(self, client: _TcpClient) -> None:
        with client.lock:
            client.closed = True
        self._clients.pop(client.sock, None)
        key = ("tcp", id(client))
        with self._lock:
            for watcher_key in [k for k, w in self._notify.items() if w.owner == key]:
                del self._notify[watcher_key]
            self._sources.forget(key)
        if client.events:
            try:
                self._selector.unregister(client.sock)
            except (KeyError, ValueError):
                pass
            client.events = 0
        client.sock.close()

    # -- packets
    def _admit(self, source: Source, now: float) -> bool:
        """One message's tokens: the source's bucket, then the global one."""
        return source.bucket.take(now) and self._global.take(now)

    def _reply(self, origin: _Origin, address: str, args: Sequence[Any]) -> None:
        """Send to the source and to every /notify client, while the source's reply credit lasts
        (each copy spends it); /fail texts are clipped."""
        if address == "/fail":
            args = [clip_text(a, self.config.max_fail_text) if isinstance(a, str) else a for a in args]
        packet = encode_message(address, args)
        now = time.monotonic()
        with self._lock:
            source = self._sources.get(origin.key, now)
            targets = [origin.send] + [w.send for key, w in self._notify.items() if key != origin.key]
            granted = 0
            while granted < len(targets) and source.spend(len(packet), self.config, now):
                granted += 1
            self.counters["osc_replies_over_budget"] += len(targets) - granted
        for send in targets[:granted]:
            send(packet)

    def _set_notify(self, origin: _Origin, on: bool, port: int | None) -> None:
        key, send = origin.key, origin.send
        if port is not None and key[0] == "udp":
            if not is_loopback(key[1]):
                raise RuntimeError("/notify with a port is accepted from this machine only (the "
                                   "operator can give --reply-port)")
            target = (key[1], port)
            key, send = ("udp",) + target, lambda packet: self._udp_send(packet, target)
        with self._lock:
            if not on:
                self._notify.pop(key, None)
            elif key in self._notify or len(self._notify) < self.config.max_notify:
                self._notify[key] = _Watcher(send, origin.key)
            else:
                raise RuntimeError(f"too many notify clients (at most {self.config.max_notify})")

    def _handle_packet(self, data: bytes, origin: _Origin, applied: bool = False) -> None:
        """Admit, decode, time and dispatch one packet (called by the server thread). `applied`:
        the native lane has played its note; it is admitted whatever the limits say (its tokens
        are spent) and dispatched for the control-side work only."""
        now = time.monotonic()
        self.counters["osc_packets"] += 1
        with self._lock:
            source = self._sources.get(origin.key, now)
            source.received(len(data), self.config, now)
        reply = lambda address, args: self._reply(origin, address, args)  # noqa: E731
        if not self._admit(source, now) and not applied:
            self._rate_dropped(source, now, reply)
            return
        try:
            packet = decode_packet(data)
        except OscDecodeError as error:
            self.counters["osc_malformed"] += 1
            reply("/fail", ["#packet", str(error)])
            return
        hooks = ServerHooks(set_notify=lambda on, port: self._set_notify(origin, on, port),
                            server_status=self.server_status, check_sound=self._check_sound)
        frames: dict[int, int | None] = {IMMEDIATE: None}
        first, now_frame, told = True, None, False
        for timetag, message in flatten(packet):
            if not first and not self._admit(source, now):
                self._rate_dropped(source, now, reply)
                continue
            first = False
            self.counters["osc_messages"] += 1
            if timetag not in frames:
                frames[timetag] = self._frame_for(timetag, reply)
            at_frame = frames[timetag]
            if at_frame == -1:
                self.counters["osc_failed"] += 1
                continue
            command = REGISTRY.get(message.address)
            if command is not None and command.replies and source.credit < REPLY_PRECHECK_BYTES:
                self.counters["osc_replies_over_budget"] += 1
                continue
            dated = False
            if at_frame is not None and command is not None and command.timed:
                if now_frame is None:
                    now_frame = int(self.engine.frame_for_time(time.time()))
                dated = at_frame > now_frame
            if dated:
                reason = self._dated.admits(source, now_frame)
                if reason is not None:
                    self.counters["osc_dated_dropped"] += 1
                    if not told:
                        told = True
                        reply("/fail", [message.address, reason])
                    continue
            engine = _AppliedByLane(self.engine) if applied else self.engine
            if not dispatch(engine, message.address, message.args, at_frame, reply, hooks):
                self.counters["osc_failed"] += 1
            elif dated:
                self._dated.add(source, at_frame)
            elif message.address == "/panic":
                with self._lock:
                    self._dated.clear(self._sources.values())

    def _rate_dropped(self, source: Source, now: float, reply: Callable) -> None:
        self.counters["osc_dropped"] += 1
        if source.notice_due(now):
            reply("/fail", ["#rate", f"more than {self.config.rate_per_s:g} messages per second from "
                            f"this client: dropped (counted in osc_dropped)"])

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

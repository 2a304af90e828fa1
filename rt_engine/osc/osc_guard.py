"""What the OSC server grants each source: rate, reply bytes, dated commands, access.

Pure bookkeeping (no sockets), used by `rt_engine.osc.osc_server.OscServer` and tested on its own.
A *source* is one UDP sender address (host, port) or one TCP connection; each has

- a token bucket over dispatched messages (`GuardConfig.rate_per_s`, `burst`), so one flooding
  client cannot use up what another is granted (a global bucket above them protects the engine);
- a reply budget in bytes: every byte received adds `reply_ratio` bytes of credit, a small
  allowance refills with time (so a lone `/status` is answered), and every byte the server sends
  because of this source (its replies and their copies to `/notify` clients) spends credit;
- a count of its dated commands still ahead of the output (a heap of their frames), bounded per
  source and in total, so the engine's pending schedule always keeps room for immediate commands
  and `/panic`.

`AccessPolicy` decides who may talk at all: loopback always, other hosts only inside the
operator's `--allow` networks (none given: any host that can reach the bound address).

Public API: `GuardConfig`, `TokenBucket`, `Source`, `SourceTable`, `DatedBook`, `AccessPolicy`,
`clip_text(text, limit)`,
`is_loopback(host)`.
"""
from __future__ import annotations

import heapq
import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

from rt_engine.core.commands import PENDING_CAPACITY

MAX_CACHED_HOSTS = 4096
"""Hosts whose access verdict `AccessPolicy` remembers."""


@dataclass(frozen=True)
class GuardConfig:
    """Limits of the OSC server (per source unless named otherwise)."""

    rate_per_s: float = 2000.0
    """Messages per second one source may have dispatched (bursts up to `burst`)."""
    burst: float = 500.0
    global_rate_per_s: float = 20000.0
    """Messages per second all sources together (bursts up to `global_burst`)."""
    global_burst: float = 2000.0
    reply_ratio: float = 4.0
    """Reply bytes granted per request byte received."""
    reply_allowance_bytes: float = 16384.0
    """Reply credit a new source starts with; it refills at `reply_refill_bytes_per_s`."""
    reply_refill_bytes_per_s: float = 8192.0
    reply_credit_cap_bytes: float = 262144.0
    """Most reply credit one source can bank (bytes)."""
    max_dated_per_source: int = 256
    """Dated commands one source may have ahead of the output."""
    max_dated_total: int = PENDING_CAPACITY // 2
    """Dated commands all sources together may have ahead of the output (the engine's pending
    schedule holds PENDING_CAPACITY; the rest stays free for immediate commands and /panic)."""
    max_sources: int = 1024
    """Sources remembered at once (least recently seen forgotten first)."""
    max_notify: int = 8
    """Clients registered with /notify at once."""
    notify_idle_s: float = 600.0
    """A /notify registration ends when its client has sent nothing for this long (s)."""
    tcp_per_host: int = 16
    tcp_total: int = 64
    tcp_idle_s: float = 600.0
    """A TCP connection that sends nothing for this long is closed (s)."""
    tcp_partial_s: float = 5.0
    """A TCP packet must arrive whole within this long of its first byte (s); a connection idle
    this long may also be closed to make room when its host is at `tcp_per_host`."""
    tcp_output_limit_bytes: int = 262144
    """Unsent reply bytes one TCP client may have queued; beyond, the slow reader is dropped."""
    max_fail_text: int = 160
    """Longest string argument of a /fail (characters)."""


def clip_text(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with "..." when cut."""
    return text if len(text) <= limit else text[:max(limit - 3, 0)] + "..."


class TokenBucket:
    """`rate_per_s` tokens per second, at most `burst` held; `take()` spends one."""

    def __init__(self, rate_per_s: float, burst: float, now: float | None = None):
        self.rate_per_s, self.burst = float(rate_per_s), float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate_per_s)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class Source:
    """What one source has been granted; see the module docstring."""

    bucket: TokenBucket
    credit: float
    credit_time: float
    last_seen: float
    dated: list = field(default_factory=list)
    """Heap of the output frames of its dated commands still ahead."""
    last_notice: float = -1e9
    """When it was last told (by /fail) that it is over a limit (monotonic s)."""

    def received(self, n_bytes: int, config: GuardConfig, now: float) -> None:
        self.last_seen = now
        self._refill(config, now)
        self.credit = min(config.reply_credit_cap_bytes, self.credit + config.reply_ratio * n_bytes)

    def spend(self, n_bytes: int, config: GuardConfig, now: float) -> bool:
        """Take `n_bytes` of reply credit; False (nothing taken) when there is not enough."""
        self._refill(config, now)
        if n_bytes > self.credit:
            return False
        self.credit -= n_bytes
        return True

    def _refill(self, config: GuardConfig, now: float) -> None:
        if self.credit < config.reply_allowance_bytes:
            self.credit = min(config.reply_allowance_bytes,
                              self.credit + (now - self.credit_time) * config.reply_refill_bytes_per_s)
        self.credit_time = now

    def notice_due(self, now: float, every_s: float = 1.0) -> bool:
        """True at most once per `every_s`: whether to tell the source it hit a limit."""
        if now - self.last_notice < every_s:
            return False
        self.last_notice = now
        return True


class SourceTable:
    """Sources by key (least recently seen first), at most `config.max_sources`."""

    def __init__(self, config: GuardConfig):
        self.config = config
        self._sources: OrderedDict[tuple, Source] = OrderedDict()

    def get(self, key: tuple, now: float) -> Source:
        source = self._sources.get(key)
        if source is None:
            config = self.config
            source = Source(TokenBucket(config.rate_per_s, config.burst, now), config.reply_allowance_bytes,
                            now, now)
            self._sources[key] = source
            while len(self._sources) > config.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(key)
        return source

    def find(self, key: tuple) -> Source | None:
        return self._sources.get(key)

    def forget(self, key: tuple) -> None:
        self._sources.pop(key, None)

    def values(self) -> Iterable[Source]:
        return self._sources.values()

    def __len__(self) -> int:
        return len(self._sources)


class DatedBook:
    """The dated commands still ahead of the output, per source and in total (heaps of frames)."""

    def __init__(self, config: GuardConfig):
        self.config = config
        self._all: list[int] = []

    def _expire(self, heap: list, now_frame: int) -> None:
        while heap and heap[0] < now_frame:
            heapq.heappop(heap)

    def admits(self, source: Source, now_frame: int) -> str | None:
        """None when one more dated command from `source` fits, else the reason it does not."""
        self._expire(self._all, now_frame)
        self._expire(source.dated, now_frame)
        if len(source.dated) >= self.config.max_dated_per_source:
            return f"too many dated commands ahead from this client (at most {self.config.max_dated_per_source})"
        if len(self._all) >= self.config.max_dated_total:
            return f"the schedule is full (at most {self.config.max_dated_total} dated commands ahead)"
        return None

    def add(self, source: Source, frame: int) -> None:
        heapq.heappush(source.dated, frame)
        heapq.heappush(self._all, frame)

    def clear(self, sources: Iterable[Source]) -> None:
        """/panic dropped every pending command."""
        self._all.clear()
        for source in sources:
            source.dated.clear()

    def __len__(self) -> int:
        return len(self._all)


class AccessPolicy:
    """Which hosts may talk to the server: loopback always; with `allow` networks (CIDR strings)
    only hosts inside one of them; without, every host that reaches the socket. Raises
    ValueError naming a bad network."""

    def __init__(self, allow: Iterable[str] = ()):
        networks = []
        for text in allow:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError as error:
                raise ValueError(f"--allow {text!r}: {error}") from None
        self.networks = tuple(networks)
        self._verdicts: dict[str, bool] = {}  # host -> permits(host): parsing costs per packet

    def permits(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            if len(self._verdicts) >= MAX_CACHED_HOSTS:
                self._verdicts.clear()
            verdict = self._verdicts[host] = self._judge(host)
        return verdict

    def _judge(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.is_loopback:
            return True
        return not self.networks or any(address in network for network in self.networks)


def is_loopback(host: str) -> bool:
    """Whether `host` (an IP address string) is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""The OSC 1.0/1.1 wire codec: pure functions, bytes in, values out, safe on arbitrary bytes (every
problem is an `OscDecodeError` naming it). Used by `rt_engine.osc.osc_server` and by OSC clients.

Public API: `Message`, `Bundle`, `OscDecodeError`, `decode_packet(data)`, `decode_message(data)`,
`encode_message(address, args)`, `encode_bundle(timetag, packets)`, `flatten(packet)`,
`unix_to_timetag(t)`, `timetag_to_unix(tt)`, `slip_encode(packet)`, `slip_decode(frame)`, `IMMEDIATE`.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from rt_engine.osc.osc_registry import MAX_BUNDLE_DEPTH
IMMEDIATE = 1
"""The OSC timetag meaning "now"."""
NTP_UNIX_OFFSET_S = 2208988800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""
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

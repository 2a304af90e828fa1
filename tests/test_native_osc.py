"""The native OSC lane (rt_engine.osc.native_osc): its note parser against the registry, its
apply-or-forward rules, its rings, and a note played through a real OscServer and NativeBlock."""
from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from rt_engine.core.commands import Counter, CommandKind
from rt_engine.io import native_audio as na
from rt_engine.osc import native_osc as no
from rt_engine.osc.osc_codec import encode_message
from rt_engine.osc.osc_registry import MAX_NOTE_ID, dispatch
from rt_engine.osc.osc_server import OscServer
from tests.test_native_audio import _engine
from tests.test_osc_registry import RecordingEngine
from tests.test_osc_server import built

LOOPBACK = bytes([2, 0, 0x1F, 0x90, 127, 0, 0, 1]) + bytes(8)     # AF_INET, port 8080, 127.0.0.1
REMOTE = bytes([2, 0, 0x1F, 0x90, 10, 0, 0, 7]) + bytes(8)        # AF_INET, port 8080, 10.0.0.7

MESSAGES = [
    built("/note/on", (60.0, "f"), (100.0, "f")),
    built("/note/on", (60, "i"), (100, "i")),
    built("/note/on", (61.5, "f"), (100, "i"), (7, "i")),
    built("/note/on", (60.0, "f"), (0.0, "f")),
    built("/note/on", (60.0, "f"), (0.0, "f"), (9, "i")),
    built("/note/on", (60.0, "f"), (0.25, "f")),
    built("/note/on", (60.0, "f"), (300.0, "f")),
    built("/note/on", (60.0, "f"), (-5.0, "f")),
    built("/note/on", (127.0, "f"), (1.0, "f"), (MAX_NOTE_ID, "i")),
    built("/note/on", (127.5, "f"), (1.0, "f")),
    built("/note/on", (-0.5, "f"), (1.0, "f")),
    built("/note/on", (60.0, "f"), (100.0, "f"), (MAX_NOTE_ID + 1, "i")),
    built("/note/on", (60.0, "f"), (100.0, "f"), (-1, "i")),
    built("/note/on", (60.0, "f"), (100.0, "f"), (3.0, "f")),
    built("/note/on", (60.0, "f")),
    built("/note/on", (float("nan"), "f"), (100.0, "f")),
    built("/note/on", (60.0, "f"), (float("inf"), "f")),
    built("/note/on", (60.0, "d"), (100.0, "f")),
    built("/note/on", ("60", "s"), (100.0, "f")),
    built("/note/off", (60.0, "f")),
    built("/note/off", (12, "i")),
    built("/note/off", (0, "i")),
    built("/note/off", (-3, "i")),
    built("/note/off", (128.0, "f")),
    built("/note/off", ("id", "s"), (3, "i")),
    built("/note/off", (60.0, "f"), (1.0, "f")),
    built("/note/onx", (60.0, "f"), (100.0, "f")),
    built("/timbre/xy", (0.5, "f"), (0.5, "f")),
    encode_message("/note/on", [60.0, 100.0]) + b"\0\0\0\0",
]


def _command(data: bytes):
    buffer = np.zeros(no.MAX_DATAGRAM, dtype=np.uint8)
    buffer[:len(data)] = np.frombuffer(data, dtype=np.uint8)
    return no.note_command(buffer, len(data))


def _expected(call: tuple[str, dict]):
    """The registry's engine call as the command the lane must apply for it."""
    name, kwargs = call
    if name == "note_on" and kwargs["velocity"] > 0:
        return (int(CommandKind.NOTE_ON), kwargs["note_id"], float(kwargs["pitch"]),
                min(max(float(kwargs["velocity"]), 1.0), 127.0))
    note_id = kwargs["note_id"]
    if note_id is not None and note_id >= 0:
        return int(CommandKind.NOTE_OFF_ID), note_id, 0.0, 0.0
    return int(CommandKind.NOTE_OFF_PITCH), -1, float(kwargs["pitch"]), 0.0


def test_note_command_applies_only_what_the_registry_accepts_and_the_same_command():
    from rt_engine.osc.osc_codec import decode_packet

    applied = 0
    for data in MESSAGES:
        kind, note_id, a, b = _command(data)
        if kind == 0:
            continue
        applied += 1
        message = decode_packet(data)
        engine, replies = RecordingEngine(), []
        assert dispatch(engine, message.address, message.args, None, lambda *r: replies.append(r)), data
        assert not replies and len(engine.calls) == 1, data
        assert (kind, note_id, a, b) == pytest.approx(_expected(engine.calls[0])), data
    assert applied == 12  # every valid form above with i/f arguments only; the rest is left to the server


def test_note_command_reads_floats_exactly_like_ieee_single_precision():
    for value in (60.0, 61.25, 1e-40, 126.99999237060547, 0.0, -0.0, 5e-45):
        data = built("/note/off", (value, "f"))
        kind, _, pitch, _ = _command(data)
        assert kind == int(CommandKind.NOTE_OFF_PITCH)
        assert pitch == struct.unpack(">f", struct.pack(">f", value))[0]


def _arrays(packet_bytes=no.PACKET_BYTES, entries=no.ENTRIES, notes=no.NOTES):
    state = np.zeros(no.N_STATE, dtype=np.int64)
    state[no.S_ENABLED] = 1
    return dict(state=state, bucket=np.array([no.LANE_BURST, 0.0]),
                packets=np.zeros(packet_bytes, dtype=np.uint8), entries=np.zeros((entries, 4), dtype=np.int64),
                entries_pos=np.zeros(4, dtype=np.int64), notes=np.zeros((notes, no.N_NOTE_FIELDS)),
                notes_pos=np.zeros(3, dtype=np.int64))


def _step(arrays, data: bytes, source: bytes = LOOPBACK, now: float = 0.0) -> bool:
    buffer = np.zeros(no.MAX_DATAGRAM, dtype=np.uint8)
    buffer[:len(data)] = np.frombuffer(data, dtype=np.uint8)
    return no.lane_step(arrays["state"], arrays["bucket"], buffer, len(data), np.frombuffer(source, np.uint8),
                        arrays["packets"], arrays["entries"], arrays["entries_pos"], arrays["notes"],
                        arrays["notes_pos"], now)


def _forwarded(arrays):
    """The forwarded entries as (bytes, ipv4 text, port, applied), as the server's drain reads them."""
    out = []
    for k in range(arrays["entries_pos"][1], arrays["entries_pos"][0]):
        end, start, size, meta = arrays["entries"][k % arrays["entries"].shape[0]]
        out.append((arrays["packets"][start:start + size].tobytes(),
                    socket.inet_ntoa(struct.pack(">I", int(meta) >> 24)), (int(meta) >> 8) & 0xFFFF, bool(meta & 1)))
    return out


def test_a_loopback_note_is_applied_and_forwarded_marked_and_everything_else_only_forwarded():
    arrays = _arrays()
    note, timbre = built("/note/on", (64.0, "f"), (90.0, "f")), built("/timbre/xy", (0.5, "f"), (0.5, "f"))
    assert _step(arrays, note)
    arrays["state"][no.S_HANDLED] += 1           # the server served it
    assert _step(arrays, timbre)
    arrays["state"][no.S_HANDLED] += 1
    assert _step(arrays, note, REMOTE)
    assert _forwarded(arrays) == [(note, "127.0.0.1", 8080, True), (timbre, "127.0.0.1", 8080, False),
                                  (note, "10.0.0.7", 8080, False)]
    assert arrays["notes_pos"][0] == 1 and arrays["state"][no.S_APPLIED] == 1
    assert tuple(arrays["notes"][0]) == (int(CommandKind.NOTE_ON), -1, 64.0, 90.0)


def test_a_note_behind_a_packet_the_server_has_not_served_waits_its_turn():
    arrays = _arrays()
    assert _step(arrays, built("/timbre/xy", (0.5, "f"), (0.5, "f")))   # not yet handled
    assert _step(arrays, built("/note/on", (64.0, "f"), (90.0, "f")))
    assert arrays["state"][no.S_APPLIED] == 0 and [f[3] for f in _forwarded(arrays)] == [False, False]
    arrays["state"][no.S_ENABLED] = 0
    arrays["state"][no.S_HANDLED] = 2
    assert _step(arrays, built("/note/on", (64.0, "f"), (90.0, "f")))   # no native callback drains
    assert arrays["state"][no.S_APPLIED] == 0


def test_the_lane_bucket_sends_a_flood_to_the_server_and_refills_with_time():
    arrays = _arrays()
    note = built("/note/on", (64.0, "f"), (90.0, "f"))
    for k in range(int(no.LANE_BURST) + 10):
        assert _step(arrays, note, now=0.0)
        arrays["state"][no.S_HANDLED] += 1
    assert arrays["state"][no.S_APPLIED] == no.LANE_BURST
    assert _step(arrays, note, now=10.0 / no.LANE_RATE_PER_S)
    assert arrays["state"][no.S_APPLIED] == no.LANE_BURST + 1


def test_forward_rings_wrap_keep_each_datagram_whole_and_drop_when_full():
    arrays = _arrays(packet_bytes=100, entries=4)
    a, b = b"A" * 40, b"B" * 40
    assert _step(arrays, a) and _step(arrays, b)
    assert not _step(arrays, a)                               # 80 + 20 skipped + 40 > 100 bytes
    arrays["entries_pos"][1], arrays["entries_pos"][3] = 1, arrays["entries"][0, 0]   # a read
    assert _step(arrays, a)                                   # wraps to index 0, whole
    assert [f[0] for f in _forwarded(arrays)] == [b, a]
    assert arrays["entries"][2, 1] == 0 and arrays["state"][no.S_DROPPED] == 1
    arrays["entries_pos"][1] = arrays["entries_pos"][3] = 0
    arrays["entries_pos"][0] = arrays["entries_pos"][2] = 4   # 4 entries waiting: full
    assert not _step(arrays, b"C") and arrays["state"][no.S_DROPPED] == 2


def test_drain_notes_writes_the_applied_commands_at_the_block_start():
    arrays = _arrays()
    arrays["notes"][:2] = [(int(CommandKind.NOTE_ON), 5, 62.0, 80.0), (int(CommandKind.NOTE_OFF_ID), 5, 0, 0)]
    arrays["notes_pos"][0] = 2
    engine = _engine()
    pending, counters = engine.kernel_state()[2], engine.kernel_state()[8]
    counters[Counter.FRAME] = 4096
    no.drain_notes(arrays["notes"], arrays["notes_pos"], pending, counters)
    assert counters[Counter.PENDING] == 2 and tuple(arrays["notes_pos"]) == (2, 2, 2)
    assert list(pending[:2]["kind"]) == [int(CommandKind.NOTE_ON), int(CommandKind.NOTE_OFF_ID)]
    assert list(pending[:2]["frame"]) == [4096, 4096] and pending[0]["a"] == 62.0
    assert pending[1]["seq"] > pending[0]["seq"] >= no.SEQ_BASE


def _render(block, blocks=4):
    """`blocks` blocks of 256 frames through the native path, as the callback would."""
    for _ in range(blocks):
        block.process(256)


def _lane_server():
    """An engine rendering through a NativeBlock (driven from the test) and a started OscServer
    whose native lane applies into it."""
    engine = _engine()
    block = na.NativeBlock(engine)
    engine.native_block = block
    server = OscServer(engine, port=0, native_lane=True)
    server.start()
    return engine, block, server


def test_an_osc_note_plays_through_the_lane_once_and_the_server_does_the_rest():
    engine, block, server = _lane_server()
    try:
        assert server.server_status()["osc_note_lane"] == "native"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(built("/note/on", (69.0, "f"), (100.0, "f"), (3, "i")), ("127.0.0.1", server.udp_port))
            deadline = time.monotonic() + 5.0
            while not (engine.queue.records[:engine.queue.positions[0]]["kind"] == int(CommandKind.NOTE_ON)).any():
                assert time.monotonic() < deadline, server.server_status()
                time.sleep(0.005)
            records = engine.queue.records[:engine.queue.positions[0]]
            notes = records[records["kind"] == int(CommandKind.NOTE_ON)]
            assert len(notes) == 1 and notes[0]["skip_kernel"] == 1 and notes[0]["held_id"] == 3
            assert server.server_status()["osc_lane_applied"] == 1
            _render(block)
            status = engine.status()
            assert status["voices"] == 1 and status["commands"] >= 1
            out = block.process(256)
            assert np.abs(out).max() > 0.05
            client.sendto(built("/note/off", (3, "i")), ("127.0.0.1", server.udp_port))
            client.sendto(built("/timbre/xy", (0.2, "f"), (0.3, "f")), ("127.0.0.1", server.udp_port))
            deadline = time.monotonic() + 5.0
            while server.server_status()["osc_messages"] < 3:
                assert time.monotonic() < deadline, server.server_status()
                time.sleep(0.005)
        status = server.server_status()
        assert status["osc_lane_received"] == 3 and status["osc_lane_applied"] == 2
        assert status["osc_failed"] == 0 and status["osc_lane_dropped"] == 0
    finally:
        server.stop()


def test_without_a_native_callback_the_lane_reads_and_the_server_plays_everything():
    engine = RecordingEngine()
    server = OscServer(engine, port=0, native_lane=True)
    server.start()
    try:
        assert server.server_status()["osc_note_lane"] == "python"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(built("/note/on", (60.0, "f"), (100.0, "f")), ("127.0.0.1", server.udp_port))
            deadline = time.monotonic() + 5.0
            while not engine.named("note_on"):
                assert time.monotonic() < deadline
                time.sleep(0.005)
        assert server.server_status()["osc_lane_applied"] == 0
        assert engine.named("note_on")[0]["pitch"] == 60.0
    finally:
        server.stop()


def test_a_note_flood_through_the_lane_neither_exceeds_its_bucket_nor_starves_a_bystander():
    from rt_engine.osc.osc_codec import decode_packet

    engine, block, server = _lane_server()
    target = ("127.0.0.1", server.udp_port)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bystander:
            bystander.settimeout(2.0)
            started = time.monotonic()
            for k in range(5000):
                flood.sendto(built("/note/on", (float(40 + k % 40), "f"), (100.0, "f"), (k, "i")), target)
                if k % 256 == 0:
                    block.process(256)  # the callback drains what the lane applied
            bystander.sendto(built("/sync", (7, "i")), target)
            reply = decode_packet(bystander.recv(1024))
            seconds = time.monotonic() - started
        assert reply.address == "/synced" and reply.args == (7,)
        applied = server.server_status()["osc_lane_applied"]
        assert applied <= no.LANE_BURST + no.LANE_RATE_PER_S * seconds + 1
        assert applied >= 1 and server.server_status()["osc_lane_received"] > applied
    finally:
        server.stop()

"""JACK MIDI read in the native callback (`rt_engine.io.native_midi`): the commands it applies are the
MIDI map's, at the event's frame in the same block; what it does not apply reaches the mapper
through its ring; with a real JACK dummy server a note sounds at the frame it was sent at."""
import ctypes
import time

import numpy as np
import pytest

from rt_engine.io import native_audio as na
from rt_engine.io import native_midi as nm
from rt_engine.core import voice_kernel as vk
from rt_engine.io.audio_backends import JackBackend
from rt_engine.core.commands import RELEASES, CommandKind
from rt_engine.io.midi_input import MidiInput
from rt_engine.io.midi_map import MidiMapper, midi_note_id, parse_midi_map
from tests.test_native_audio import RATE, _engine, _fake_jack, jack_server  # noqa: F401 (fixture)

MESSAGES = [
    (0x90, 60, 100), (0x93, 64, 1), (0x90, 60, 0), (0x80, 64, 12), (0x8F, 127, 0),
    (0xE0, 0, 0), (0xE0, 0x7F, 0x7F), (0xE2, 0, 0x40), (0xE2, 0x55, 0x21),
    (0xB0, 64, 127), (0xB0, 64, 0), (0xB5, 64, 64), (0xB5, 64, 63),
    (0xB0, 1, 127), (0xB0, 74, 3), (0xB0, 123, 0), (0xC0, 1), (0xA0, 60, 10), (0xD0, 5),
    (0x91, 200, 1), (0x90, 60),
]


def _commands(engine) -> list[tuple]:
    """What the block kernel takes from the engine's stream: (kind, channel, note id, a, b) of the
    records it does not skip (a release's b is the layers' fall-back pitch: not the kernel's)."""
    return [(int(r["kind"]), int(r["channel"]), int(r["note_id"]), float(r["a"]),
             0.0 if r["kind"] in RELEASES else float(r["b"]))
            for r in engine.queue.pop_all_ref() if r["skip_kernel"] == 0]


@pytest.mark.parametrize("map_data", [{}, {"channels": [1, 6], "cc": {"64": "sustain", "66": "sustain"}},
                                      {"mpe": {"enabled": True}, "pitch_bend_range_semitones": 12}])
def test_native_commands_are_the_ones_the_midi_map_sends(map_data):
    midi_map = parse_midi_map(map_data, "test")
    engine = _engine()
    mapper, native = MidiMapper(engine, midi_map), nm.NativeMidi(midi_map)
    applied = {int(k) for k in (CommandKind.NOTE_ON, CommandKind.NOTE_OFF_ID, CommandKind.PITCH_BEND,
                                CommandKind.SUSTAIN)}
    for message in MESSAGES + [(0xB0, 66, 100), (0xB0, 66, 0)]:
        padded = list(message) + [0] * (3 - len(message))
        kind, channel, note_id, a, b = nm.midi_command(native.params, len(message), *padded)
        mapper.handle(list(message))
        sent = [c for c in _commands(engine) if c[0] in applied]
        assert ([(kind, channel, note_id, a, b)] if kind else []) == sent, message


def _fake_midi(native, events):
    """Fake jack_midi_* functions over `events` [(time, bytes)] for the compiled callback."""
    data = [np.frombuffer(bytes(message), dtype=np.uint8).copy() for _, message in events]
    count = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p)(lambda buffer: len(events))

    def get(event, buffer, index):
        words = (ctypes.c_int64 * 3).from_address(event)
        words[0], words[1], words[2] = events[index][0], data[index].size, data[index].ctypes.data
        return 0

    get = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32)(get)
    native.state[nm.S_EVENT_COUNT] = ctypes.cast(count, ctypes.c_void_p).value
    native.state[nm.S_EVENT_GET] = ctypes.cast(get, ctypes.c_void_p).value
    return count, get, data


def test_jack_callback_plays_midi_notes_at_their_event_frame_in_the_same_block():
    python, engine = _engine(), _engine()
    block = na.NativeBlock(engine)
    callback, buffers, keep = _fake_jack(block)
    midi = MidiInput(engine, api="jack")
    midi.native.state[nm.S_GET_BUFFER] = block.control[na.K_PORT_GET_BUFFER]
    midi.native.state[nm.S_PORT] = 1   # the fake get_buffer hands the "port" back as the buffer
    block.attach_midi(midi.native)
    events = [(77, (0x92, 69, 100)), (200, (0xB2, 1, 127)), (201, (0xE2, 0x7F, 0x7F))]
    fakes = _fake_midi(midi.native, events)
    python.note_on(69, 100, note_id=midi_note_id(2, 69), channel=2, at_frame=77)
    python.pitch_bend(2, 2.0, at_frame=201)
    assert callback(256, block.address) == 0
    expected = python.process(256)
    np.testing.assert_array_equal(buffers[0], expected[0])
    assert np.abs(buffers[0][:77]).max() == 0.0 and np.abs(buffers[0][77:]).max() > 0.0
    assert midi.native.wait(0.1) and not midi.native.wait(0.01)  # posted once for the cycle
    rows = midi.native.drain()
    assert rows[:, nm.E_FRAME].tolist() == [77, 200, 201]
    assert rows[:, nm.E_APPLIED].tolist() == [1.0, 0.0, 1.0] and rows[2, nm.E_VALUE] == 2.0
    del fakes, keep


def test_the_drain_does_the_rest_once_and_no_command_twice():
    engine = _engine()
    midi = MidiInput(engine, api="jack")
    state = (midi.native.params, midi.native.ring, midi.native.ring_pos, midi.native.state,
             engine._pending, engine._counters)
    for offset, message in ((5, (0x90, 60, 90)), (6, (0xB0, 1, 127)), (7, (0xB0, 101, 0)),
                            (8, (0xB0, 100, 0)), (9, (0xB0, 6, 12)), (10, (0xE0, 0x7F, 0x7F))):
        nm.apply_midi_event(*state, offset, 3, *message)
    midi.drain_native()
    published = engine.queue.records[:int(engine.queue.positions[0])].copy()
    pushed = _commands(engine)  # the note was applied; the bend, applied at the old range, is resent
    assert [c[0] for c in pushed] == [CommandKind.TIMBRE_XY, CommandKind.PITCH_BEND]
    notes = [(int(r["kind"]), int(r["skip_kernel"])) for r in published if r["kind"] == CommandKind.NOTE_ON]
    assert notes == [(CommandKind.NOTE_ON, 1)]  # the applied note is published once, for the other layers
    assert pushed[0][3] == 1.0 and pushed[1][3] == 12.0 and engine._pending[1]["a"] == 2.0
    assert midi.native.params[nm.M_BEND_RANGE] == 12.0 and midi.n_errors == 0
    nm.apply_midi_event(*state, 11, 3, 0xE0, 0x7F, 0x7F)   # now at the new range: not resent
    midi.drain_native()
    assert _commands(engine) == [] and engine._pending[2]["a"] == 12.0


def _serve(native: bool):
    """Engine, JACK backend and MIDI input wired as `serve` does."""
    engine = _engine()
    backend = JackBackend(connect=False, native=native)
    midi = MidiInput(engine, ports="auto", api="jack")
    reads = midi.wants_native_jack() and backend.reads_midi(midi.native)
    if not reads:
        midi.start()
    backend.start(engine)
    if reads:
        midi.start_native(backend)
    engine.midi_input = midi.path
    return engine, backend, midi


@pytest.mark.integration
def test_a_jack_midi_note_sounds_at_the_frame_it_was_sent_at(jack_server):
    from tests.support.jack_harness import JackCapture, JackMidiSender

    engine, backend, midi = _serve(native=True)
    reference = _engine()
    reference.note_on(69, 100, note_id=midi_note_id(0, 69), channel=0, at_frame=50)
    expected = np.concatenate([reference.process(128).copy() for _ in range(20)], axis=1)[0, 50:]
    sender = JackMidiSender(jack_server.name)
    capture = JackCapture(jack_server.name, ["latentsynth:out_1"], seconds=5.0)
    log_offset = jack_server.log_size()
    try:
        sender.connect_to("latentsynth")
        time.sleep(0.2)
        written = [sender.send(bytes([0x90, 69, 100]), offset=50)]
        time.sleep(0.2)
        sender.send(bytes([0xB0, 1, 127]))
        time.sleep(0.1)
        timbre_x = engine._params[vk.P_TIMBRE_TX]
        sender.send(bytes([0x80, 69, 0]))
        time.sleep(0.3)
        for offset in (3, 127):
            sender.send(bytes([0xB0, 120, 0]))
            time.sleep(0.1)
            written.append(sender.send(bytes([0x90, 69, 100]), offset=offset))
            time.sleep(0.1)
        status = engine.status()
    finally:
        capture.close()
        sender.close()
        backend.stop()
        midi.stop()
    assert status["midi_input"] == "native-jack" and backend.native_midi is midi.native
    start = written[0] - capture.first_frame
    got = capture.buffer[0, start - 128:start + expected.size]
    # A cycle the graph loses to an xrun (the Python MIDI sender late on a loaded host) is not
    # recorded: compare every recorded sample, and allow no more lost cycles than jackd reported.
    recorded = capture.recorded(start - 128, start + expected.size)
    assert np.count_nonzero(~recorded) <= 128 * min(jack_server.xruns_since(log_offset), 2)
    assert np.abs(expected).max() > 0.1
    assert np.abs(got[:128]).max() == 0.0          # silent up to the event's frame
    np.testing.assert_allclose(got[128:][recorded[128:]], expected[recorded[128:]], atol=1e-6)
    assert timbre_x == 1.0                          # CC1 -> timbre x through the ring
    first = int(np.nonzero(np.abs(expected) > 1e-6)[0][0])
    for frame in written[1:]:
        assert capture.onset_after(frame - 64, threshold=1e-6) == frame + first
    assert status["late"] == 0 and midi.n_errors == 0 and midi.native.dropped == 0
    assert midi.native.events == 7


@pytest.mark.integration
def test_the_python_callback_falls_back_to_rtmidi_and_still_plays(jack_server):
    from tests.support.jack_harness import JackCapture, JackMidiSender

    engine, backend, midi = _serve(native=False)
    sender = JackMidiSender(jack_server.name)
    capture = JackCapture(jack_server.name, ["latentsynth:out_1"], seconds=5.0)
    try:
        sender.connect_to("latentsynth")
        time.sleep(0.2)
        written = sender.send(bytes([0x90, 69, 100]))
        time.sleep(0.3)
        onset = capture.onset_after(written)
        status = engine.status()
    finally:
        capture.close()
        sender.close()
        backend.stop()
        midi.stop()
    assert status["midi_input"] == "rtmidi" and status["audio_callback"] == "python"
    assert backend.native_midi is None
    assert 0 <= onset - written < RATE // 10

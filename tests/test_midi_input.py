"""MIDI input ports: the no-MIDI warning path, and (with jackd) the virtual port and a hardware-like
port through the JACK MIDI API, end to end into a recording engine."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import mido
import pytest

from rt_engine.io.midi_input import MidiInput
from rt_engine.io.midi_map import midi_note_id
from tests.test_osc_registry import RecordingEngine


def test_ports_none_opens_nothing_and_touches_no_midi_system():
    midi = MidiInput(RecordingEngine(), ports="none")
    assert midi.start() == []
    midi.stop()


def test_bad_map_file_fails_at_construction_naming_it(tmp_path):
    path = tmp_path / "broken_map.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="broken_map.json"):
        MidiInput(RecordingEngine(), map_file=path)


def test_unknown_api_is_a_clear_error():
    with pytest.raises(ValueError, match="coreaudio"):
        MidiInput(RecordingEngine(), api="coreaudio")


def test_no_jack_server_warns_and_returns_no_ports(monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"latentsynth-absent-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    midi = MidiInput(RecordingEngine(), api="jack")
    with pytest.warns(UserWarning, match="no MIDI system"):
        assert midi.start() == []
    midi.stop()


def test_alsa_sequencer_opens_the_virtual_port_or_warns_when_absent():
    midi = MidiInput(RecordingEngine(), api="alsa")
    if os.path.exists("/dev/snd/seq"):
        assert midi.start()[0] == "latentsynth"
    else:
        with pytest.warns(UserWarning, match="/dev/snd/seq"):
            assert midi.start() == []
    midi.stop()


@pytest.fixture
def jack_server(monkeypatch):
    """A private dummy JACK server (unique name) for the duration of one test."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed")
    name = f"latentsynth-midi-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(["jackd", "--no-realtime", "-n", name, "-d", "dummy", "-r", "48000",
                                "-p", "1024"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    waited = subprocess.run(["jack_wait", "-s", name, "-w", "-t", "10"], capture_output=True, text=True)
    if process.poll() is not None or waited.returncode != 0:
        process.kill()
        pytest.skip(f"jackd -d dummy did not start: {waited.stdout} {waited.stderr}")
    yield name
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(predicate, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.mark.integration
def test_jack_virtual_port_and_hardware_port_reach_the_engine(jack_server):
    import rtmidi
    keyboard = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "fakekbd")
    keyboard.open_virtual_port("keys")  # stands for a hardware controller's output
    engine = RecordingEngine()
    midi = MidiInput(engine, ports="auto", api="jack")
    player = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "player")
    try:
        opened = midi.start()
        assert midi.api_name == "JACK"
        assert opened[0] == "latentsynth" and any("fakekbd" in name for name in opened[1:])
        ours = [i for i, name in enumerate(player.get_ports()) if name.startswith("latentsynth:latentsynth")]
        assert ours, player.get_ports()
        player.open_port(ours[0])
        player.send_message(mido.Message("note_on", channel=2, note=64, velocity=99).bytes())
        player.send_message(mido.Message("control_change", channel=2, control=1, value=127).bytes())
        keyboard.send_message(mido.Message("pitchwheel", channel=0, pitch=8191).bytes())
        keyboard.send_message(mido.Message("note_off", channel=2, note=64).bytes())
        assert wait_for(lambda: len(engine.calls) >= 4), engine.calls
        assert engine.named("note_on")[0]["note_id"] == midi_note_id(2, 64)
        assert engine.named("timbre_xy")[0]["x"] == 1.0
        assert engine.named("pitch_bend")[0]["semitones"] == pytest.approx(2.0)
        assert engine.named("note_off")[0]["note_id"] == midi_note_id(2, 64)
        assert midi.n_errors == 0
    finally:
        midi.stop()
        player.delete()
        keyboard.delete()


@pytest.mark.integration
def test_jack_port_substring_picks_matching_ports_and_warns_on_no_match(jack_server):
    import rtmidi
    keyboard = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "fakekbd")
    keyboard.open_virtual_port("keys")
    try:
        midi = MidiInput(RecordingEngine(), ports="FAKEKBD", api="jack")
        opened = midi.start()
        midi.stop()
        assert len(opened) == 2 and "fakekbd" in opened[1]
        midi = MidiInput(RecordingEngine(), ports="no-such-device", api="jack")
        with pytest.warns(UserWarning, match="no port matches"):
            assert midi.start() == ["latentsynth"]
        midi.stop()
    finally:
        keyboard.delete()

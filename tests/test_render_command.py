"""`latentsynth render`: MIDI files and OSC scores rendered offline with the right pitches at the
right frames; bad input is a clear error."""
import json

import mido
import numpy as np
import pytest
import soundfile

from rt_engine.cli import main as cli_main
from rt_engine.subcommands.render_command import read_score

RATE = 48_000


@pytest.fixture()
def procedural_model(tmp_path):
    folder = tmp_path / "procedural"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"bank_source": "procedural"}))
    return str(folder)


def _peak_hz(signal):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return np.argmax(spectrum) * RATE / signal.size


def test_a_midi_file_renders_its_pitches_in_order(tmp_path, procedural_model, capsys):
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000))  # 120 bpm: a beat is 0.5 s
    for note in (69, 60):
        track.append(mido.Message("note_on", note=note, velocity=100, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=480))
    midi.save(tmp_path / "two.mid")
    out = tmp_path / "two.wav"
    assert cli_main(["render", "--midi", str(tmp_path / "two.mid"), "--out", str(out),
                     "--model", procedural_model, "--tail", "0.5"]) == 0
    audio, rate = soundfile.read(out)
    assert rate == RATE and audio.shape == (int(1.5 * RATE), 2)
    assert abs(_peak_hz(audio[int(0.05 * RATE):int(0.45 * RATE), 0]) - 440.0) < 3.0
    assert abs(_peak_hz(audio[int(0.55 * RATE):int(0.95 * RATE), 0]) - 261.63) < 3.0
    assert 0.01 < np.abs(audio).max() < 1.0
    assert '"late": 0' in capsys.readouterr().out


def test_score_events_land_on_their_exact_frame(tmp_path, procedural_model):
    score = tmp_path / "score.jsonl"
    lines = [{"t": 0.0, "address": "/timbre/xy", "args": [0.2, 0.7]},
             {"t": 0.1, "address": "/note/on", "args": [64, 100]},
             {"t": 0.4, "address": "/note/off", "args": [64.0]}]
    score.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "score.wav"
    assert cli_main(["render", "--score", str(score), "--out", str(out), "--model", procedural_model,
                     "--tail", "0.3"]) == 0
    audio, _ = soundfile.read(out)
    start = int(0.1 * RATE)
    assert np.all(audio[:start] == 0.0)
    assert np.nonzero(np.abs(audio[:, 0]) > 1e-4)[0][0] < start + RATE // 1000
    assert abs(_peak_hz(audio[start + 2400:int(0.4 * RATE), 0]) - 329.63) < 4.0


def test_a_bad_score_line_names_the_file_and_line(tmp_path, capsys):
    score = tmp_path / "bad.jsonl"
    score.write_text('{"t": 0, "address": "/note/on", "args": [60, 100]}\n{"t": -1, "address": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_score(score)
    assert cli_main(["render", "--score", str(score), "--out", str(tmp_path / "x.wav")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_missing_inputs_are_reported(tmp_path, capsys):
    assert cli_main(["render", "--out", str(tmp_path / "x.wav")]) == 2
    assert cli_main(["render", "--midi", str(tmp_path / "nope.mid"), "--out", str(tmp_path / "x.wav")]) == 2
    assert "nope.mid" in capsys.readouterr().err


def test_a_preset_in_a_score_switches_the_timbre(tmp_path, procedural_model):
    score = tmp_path / "preset.jsonl"
    lines = [{"t": 0.0, "address": "/timbre/preset", "args": ["sine"]},
             {"t": 0.05, "address": "/note/on", "args": [69, 100]},
             {"t": 0.6, "address": "/timbre/preset", "args": ["saw"]},
             {"t": 0.6, "address": "/note/on", "args": [69, 100]}]
    score.write_text("\n".join(json.dumps(line) for line in lines))
    out = tmp_path / "preset.wav"
    assert cli_main(["render", "--score", str(score), "--out", str(out), "--model", procedural_model,
                     "--tail", "0.5"]) == 0
    audio, _ = soundfile.read(out)

    def harmonic_ratio(segment):
        spectrum = np.abs(np.fft.rfft(segment * np.hanning(segment.size)))
        bin_hz = RATE / segment.size
        fundamental = spectrum[int(round(440 / bin_hz)) - 2:int(round(440 / bin_hz)) + 3].max()
        third = spectrum[int(round(1320 / bin_hz)) - 2:int(round(1320 / bin_hz)) + 3].max()
        return third / fundamental

    sine = harmonic_ratio(audio[int(0.15 * RATE):int(0.55 * RATE), 0])
    saw = harmonic_ratio(audio[int(0.75 * RATE):int(1.05 * RATE), 0])
    # procedural presets: harmonic k has amplitude k ** -4 for 'sine' and k ** -1 for 'saw'
    assert sine == pytest.approx(3.0 ** -4, rel=0.3) and saw == pytest.approx(1 / 3, rel=0.3)


def _midi_file(path, messages):
    """A one-track MIDI file at 120 bpm from (ticks after the previous, message) pairs."""
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000))
    for ticks, message in messages:
        track.append(message.copy(time=ticks))
    midi.save(path)
    return path


def test_a_program_change_before_the_first_note_plays_its_preset_from_the_notes_first_sample(
        tmp_path, procedural_model):
    """The opening preset is playable before the notes of its block start (no crossfade from the
    grid, whose banks are then never rendered); an opening program change the map ignores (beyond
    the presets) leaves the notes on the grid of the starting point."""
    saw, ignored = mido.Message("program_change", program=5), mido.Message("program_change", program=100)
    note_on, note_off = mido.Message("note_on", note=69, velocity=100), mido.Message("note_off", note=69)
    renders = {}
    for name, messages in {"together": [(0, saw), (0, note_on), (480, note_off)],
                           "later": [(0, saw), (240, note_on), (480, note_off)],
                           "ignored": [(0, ignored), (0, note_on), (480, note_off)]}.items():
        out = tmp_path / f"{name}.wav"
        assert cli_main(["render", "--midi", str(_midi_file(tmp_path / f"{name}.mid", messages)), "--out", str(out),
                         "--model", procedural_model, "--tail", "0.2"]) == 0
        renders[name] = soundfile.read(out)[0][:, 0]
    onset = int(0.25 * RATE)
    np.testing.assert_allclose(renders["together"][:4800], renders["later"][onset:onset + 4800], atol=1e-6)
    assert np.abs(renders["together"][:4800]).max() > 0.05
    assert np.abs(renders["ignored"][:4800]).max() > 0.05
    assert np.abs(renders["ignored"][:4800] - renders["together"][:4800]).max() > 0.01  # another timbre

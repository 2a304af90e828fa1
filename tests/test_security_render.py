"""`latentsynth render` fed hostile scores and MIDI files: one clear error line each, bounded in
time and memory; a dense score renders with nothing dropped."""
from __future__ import annotations

import json
import struct

import mido
import pytest

from rt_engine.cli import main as cli_main
from tests.support.osc_udp import procedural_model


def _render(tmp_path, *inputs: str) -> list[str]:
    return ["render", *inputs, "--out", str(tmp_path / "out.wav"), "--model",
            str(procedural_model(tmp_path / "m")), "--gru", "none", "--tail", "0.1"]


def _one_error_line(capsys, name: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and name in err[0], err
    return err[0]


@pytest.mark.parametrize("t", ["Infinity", "-Infinity", "NaN", "1e308", "1e12", "\"soon\"", "true"])
def test_a_score_time_that_is_not_finite_or_beyond_the_maximum_is_one_clear_error(tmp_path, capsys, t):
    score = tmp_path / "hostile.jsonl"
    score.write_text(f'{{"t": {t}, "address": "/note/on", "args": [60, 100]}}\n')
    assert cli_main(_render(tmp_path, "--score", str(score))) == 2
    assert "hostile.jsonl:1" in _one_error_line(capsys, "hostile.jsonl")
    assert not (tmp_path / "out.wav").exists()


def test_max_duration_is_a_flag(tmp_path, capsys):
    score = tmp_path / "long.jsonl"
    score.write_text('{"t": 30, "address": "/note/on", "args": [60, 100]}\n')
    assert cli_main(_render(tmp_path, "--score", str(score), "--max-duration", "10")) == 2
    assert "--max-duration 10" in _one_error_line(capsys, "long.jsonl")


def test_a_dense_score_renders_with_nothing_dropped(tmp_path, capsys):
    score = tmp_path / "dense.jsonl"
    lines = [json.dumps({"t": 0, "address": "/note/on", "args": [40 + i % 48, 80]}) for i in range(20_000)]
    score.write_text("\n".join(lines) + "\n")
    assert cli_main(_render(tmp_path, "--score", str(score))) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dropped"] == 0 and summary["failures"] == 0 and summary["events"] == 20_000


def _midi_bytes(division: int, tempo_us: int, delta_ticks: int) -> bytes:
    """A one-track MIDI file: a tempo, a note on, and its note off `delta_ticks` later."""
    def var_len(value: int) -> bytes:
        out = [value & 0x7F]
        while value > 0x7F:
            value >>= 7
            out.append(0x80 | (value & 0x7F))
        return bytes(reversed(out))
    track = (b"\0\xff\x51\x03" + tempo_us.to_bytes(3, "big") + b"\0\x90\x3c\x64"
             + var_len(delta_ticks) + b"\x80\x3c\0" + b"\0\xff\x2f\0")
    return (b"MThd" + struct.pack(">IHHH", 6, 0, 1, division) + b"MTrk" + struct.pack(">I", len(track))
            + track)


@pytest.mark.parametrize("name, data", [
    ("division0.mid", _midi_bytes(0, 500_000, 480)),
    ("slow.mid", _midi_bytes(1, 0xFFFFFF, 0x0FFFFFFF)),  # slowest tempo, largest delta: ~8.5 years
    ("garbage.mid", _midi_bytes(480, 500_000, 480)[:14] + b"\xde\xad\xbe\xef" * 8),
])
def test_a_hostile_midi_file_is_one_clear_error(tmp_path, capsys, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    assert cli_main(_render(tmp_path, "--midi", str(path))) == 2
    _one_error_line(capsys, name)


def test_a_well_formed_midi_file_still_renders(tmp_path):
    path = tmp_path / "ok.mid"
    path.write_bytes(_midi_bytes(480, 500_000, 240))
    assert len(list(mido.MidiFile(str(path)))) >= 2
    assert cli_main(_render(tmp_path, "--midi", str(path))) == 0

"""`latentsynth render` plays the same samples whatever its block (long blocks while the timbre is
still, `--block`-sized ones through each timbre change) and however many timbres the score visits;
a GRU voice the input never unmutes is not run, and an unmuted one keeps up with long blocks."""
import json

import numpy as np
import pytest
import soundfile
import torch

import rt_engine.subcommands.render_command as render_command
from models.gru import GruSynth, GruSynthConfig, save_gru
from rt_engine.io.midi_map import load_midi_map
from rt_engine.subcommands.render_command import read_score, render, unmutes_gru

RATE = 48_000
TINY_GRU = GruSynthConfig(n_layers=1, hidden_size=16, embedding_size=4, conditioning_size=4)


@pytest.fixture()
def model(tmp_path):
    """A procedural bank source with a tiny (untrained) GRU voice beside it."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"bank_source": "procedural"}))
    torch.manual_seed(0)
    save_gru(folder / "gru", GruSynth(TINY_GRU))
    return str(folder)


def _score(tmp_path, lines):
    path = tmp_path / "score.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    return [(t, "osc", (address, args)) for t, address, args in read_score(path)]


MOVING = [{"t": 0.0, "address": "/note/on", "args": [57, 100]},
          {"t": 0.013, "address": "/timbre/xy", "args": [0.9, 0.1]},
          {"t": 0.31, "address": "/note/on", "args": [64.5, 90, 7]},
          {"t": 0.52, "address": "/timbre/xy", "args": [0.2, 0.8, 0.3]},  # a 0.3 s glide
          {"t": 0.9, "address": "/timbre/preset", "args": ["saw"]},
          {"t": 1.1, "address": "/note/off", "args": [7]},
          {"t": 1.2, "address": "/note/on", "args": [45, 110]}]


def _render(events, out, model_dir, block=256, gru="none"):
    summary = render(events, str(out), RATE, block, model_dir, polyphony=16, tail_s=0.4, progress=False,
                     gru=gru)
    return soundfile.read(out)[0], summary


def test_the_samples_do_not_depend_on_the_still_block(tmp_path, model, monkeypatch):
    events = _score(tmp_path, MOVING)
    long_blocks, _ = _render(events, tmp_path / "long.wav", model)
    monkeypatch.setattr(render_command, "STILL_BLOCK", 256)  # every block 256 frames
    short_blocks, _ = _render(events, tmp_path / "short.wav", model)
    assert np.abs(short_blocks).max() > 0.05
    np.testing.assert_allclose(long_blocks, short_blocks, rtol=0, atol=2 ** -22)  # 24-bit: bit-identical


def test_a_score_visiting_more_timbres_than_the_slots_hold_renders_the_same_samples_each_time(tmp_path, model):
    """Two sweeps through many grid cells and 14 resting points: far more banks than the 12 slots,
    so slots are retired and refilled; the offline manager decides that by engine frames."""
    rng = np.random.default_rng(1)
    lines = [{"t": 0.0, "address": "/note/on", "args": [pitch, 90]} for pitch in (48, 60, 67)]
    lines += [{"t": 0.05 + 0.02 * i, "address": "/timbre/xy", "args": [0.1 + 0.04 * i, 0.3 + 0.02 * i]}
              for i in range(20)]
    lines += [{"t": 0.5 + 0.02 * i, "address": "/timbre/xy", "args": [0.9 - 0.04 * i, 0.7 - 0.03 * i]}
              for i in range(20)]
    lines += [{"t": 1.0 + 0.2 * i, "address": "/timbre/xy", "args": [float(x), float(y)]}
              for i, (x, y) in enumerate(0.1 + 0.8 * rng.random((14, 2)))]
    lines += [{"t": 3.8 + 0.1 * k, "address": "/note/on", "args": [50 + 3 * k, 80]} for k in range(3)]
    events = _score(tmp_path, lines)
    first, _ = _render(events, tmp_path / "first.wav", model)
    second, _ = _render(events, tmp_path / "second.wav", model)
    assert np.abs(first).max() > 0.05
    np.testing.assert_array_equal(first, second)


def test_a_gru_voice_the_input_never_unmutes_is_not_run_and_changes_nothing(tmp_path, model):
    events = _score(tmp_path, MOVING)
    skipped, summary = _render(events, tmp_path / "auto.wav", model, gru="auto")
    without, none_summary = _render(events, tmp_path / "none.wav", model, gru="none")
    assert summary["gru_layer"] == "silent throughout: not run" and none_summary["gru_layer"] == "none"
    np.testing.assert_array_equal(skipped, without)


def test_an_unmuted_gru_voice_keeps_up_with_long_blocks(tmp_path, model):
    events = _score(tmp_path, [{"t": 0.0, "address": "/mix/gru", "args": [1.0]}] + MOVING)
    audio, summary = _render(events, tmp_path / "gru.wav", model, gru="auto")
    assert summary["gru_layer"] == "run"
    assert summary["gru_underruns"] == 0 and summary["late"] == 0


@pytest.mark.parametrize("events, unmuted", [
    ([(0.0, "osc", ("/note/on", [60, 100]))], False),
    ([(0.0, "osc", ("/mix/gru", [0.0]))], False),
    ([(0.0, "osc", ("/mix/gru", [0.5]))], True),
    ([(0.0, "osc", ("/mix/gru", ["loud"]))], True),  # not understood here: the layer is kept
    ([(0.0, "midi", bytes([0xB0, 7, 100]))], False),
])
def test_unmutes_gru_reads_the_osc_gain(events, unmuted):
    assert unmutes_gru(events, load_midi_map().cc_actions) is unmuted


def test_unmutes_gru_reads_the_midi_maps_gain_controller():
    actions = ((20, "mix_gru"),)
    assert unmutes_gru([(0.0, "midi", bytes([0xB3, 20, 64]))], actions)
    assert not unmutes_gru([(0.0, "midi", bytes([0xB3, 20, 0]))], actions)
    assert not unmutes_gru([(0.0, "midi", bytes([0xB3, 21, 64]))], actions)

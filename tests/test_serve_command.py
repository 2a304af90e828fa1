"""`serve`/`render` start the GRU voice at the checkpoint's sampling temperature, or the option's."""
import argparse
import json

import pytest
import torch

from models.gru import GruSynth, GruSynthConfig, save_gru
from rt_engine.subcommands.render_command import add_arguments as add_render_arguments
from rt_engine.subcommands.serve_command import add_arguments as add_serve_arguments
from rt_engine.subcommands.gru_voice import gru_temperature, load_stream_layer

TINY = GruSynthConfig(n_layers=1, hidden_size=16, embedding_size=4, conditioning_size=4)


def _model_dir(tmp_path, metadata=None):
    torch.manual_seed(0)
    save_gru(tmp_path / "model" / "gru", GruSynth(TINY), metadata)
    return tmp_path / "model"


@pytest.mark.parametrize("metadata, expected", [(None, 1.0), ({"step": 5}, 1.0),
                                                ({"sampling_temperature": 0.6}, 0.6),
                                                ({"sampling_temperature": 0}, 0.0)])
def test_the_start_temperature_comes_from_metadata_or_defaults_to_one(tmp_path, metadata, expected):
    folder = _model_dir(tmp_path, metadata)
    assert gru_temperature(folder / "gru") == expected
    layer = load_stream_layer(str(folder), "auto", threaded=False)
    assert layer.temperature == expected and type(layer.temperature) is float


def test_the_option_overrides_the_metadata(tmp_path):
    folder = _model_dir(tmp_path, {"sampling_temperature": 0.6})
    assert gru_temperature(folder / "gru", 1.4) == 1.4
    assert load_stream_layer(str(folder), "auto", threaded=False, temperature=0.0).temperature == 0.0


@pytest.mark.parametrize("bad", [2.5, -0.1, "warm", True, None])
def test_a_bad_metadata_temperature_is_an_error_naming_the_file(tmp_path, bad):
    folder = _model_dir(tmp_path, {"sampling_temperature": bad})
    with pytest.raises(ValueError, match=r"metadata\.json: sampling_temperature must be a number in \[0, 2\]"):
        load_stream_layer(str(folder), "auto", threaded=False)


def test_a_bad_option_is_an_error_even_without_a_gru(tmp_path):
    for bad in (2.01, -1.0, float("nan")):
        with pytest.raises(ValueError, match="--gru-temperature must be a number in"):
            load_stream_layer(None, "auto", temperature=bad)
    assert load_stream_layer(None, "auto", temperature=0.5) is None


def test_serve_and_render_accept_gru_temperature():
    for add_arguments, required in ((add_serve_arguments, []), (add_render_arguments, ["--out", "x.wav"])):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        assert parser.parse_args(required).gru_temperature is None
        assert parser.parse_args(required + ["--gru-temperature", "0.3"]).gru_temperature == 0.3


def test_render_reports_a_bad_option_and_fails(tmp_path, capsys):
    from rt_engine.cli import main as cli_main

    score = tmp_path / "score.jsonl"
    score.write_text(json.dumps({"t": 0.0, "address": "/note/on", "args": [60, 100]}) + "\n")
    folder = tmp_path / "procedural"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"bank_source": "procedural"}))
    assert cli_main(["render", "--score", str(score), "--out", str(tmp_path / "x.wav"), "--model", str(folder),
                     "--gru-temperature", "3"]) == 2
    assert "--gru-temperature must be a number in [0, 2], got 3.0" in capsys.readouterr().err

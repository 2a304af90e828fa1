"""`latentsynth generate`: timbre parsing, one note or a folder of notes, clear errors."""
import numpy as np
import pytest
import soundfile

from models.bank_source import TimbreRequest
from rt_engine.cli import main as cli_main
from tests.test_gan_bank import make_tiny_model
from training.generate_command import parse_timbre


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def test_timbre_text_is_parsed_into_preset_point_or_file(tmp_path):
    assert parse_timbre("flute") == TimbreRequest("preset", name="flute")
    assert parse_timbre(" 0.25, 1 ") == TimbreRequest("xy", x=0.25, y=1.0)
    assert parse_timbre("hit.WAV") == TimbreRequest("audio", path="hit.WAV")
    (tmp_path / "noext").write_bytes(b"")
    assert parse_timbre(str(tmp_path / "noext")).kind == "audio"
    with pytest.raises(ValueError, match="empty"):
        parse_timbre("  ")


def test_generate_one_pitch_writes_one_wav(model_dir, tmp_path):
    out = tmp_path / "note.wav"
    assert cli_main(["generate", "--model", str(model_dir), "--timbre", "piano", "--pitch", "60", "--out", str(out)]) == 0
    audio, rate = soundfile.read(out)
    assert rate == 16_000 and audio.shape == (4096,)


def test_generate_pitch_range_writes_one_wav_per_midi_number(model_dir, tmp_path):
    out = tmp_path / "bank"
    assert cli_main(["generate", "--model", str(model_dir), "--timbre", "0.5,0.5", "--pitches", "58-60,72",
                     "--blend", "organ", "--alpha", "0.25", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["58.wav", "59.wav", "60.wav", "72.wav"]


def test_blend_weights_interpolate_conditionings(model_dir, tmp_path):
    out_a, out_b = tmp_path / "a.wav", tmp_path / "b.wav"
    cli_main(["generate", "--model", str(model_dir), "--timbre", "piano", "--blend", "organ", "--alpha", "1",
              "--pitch", "64", "--out", str(out_a)])
    cli_main(["generate", "--model", str(model_dir), "--timbre", "organ", "--pitch", "64", "--out", str(out_b)])
    np.testing.assert_allclose(soundfile.read(out_a)[0], soundfile.read(out_b)[0], atol=1e-4)


def test_generate_reports_bad_input_and_fails(model_dir, tmp_path, capsys):
    assert cli_main(["generate", "--model", str(model_dir), "--timbre", "nope", "--pitch", "60",
                     "--out", str(tmp_path / "x.wav")]) == 1
    assert "nope" in capsys.readouterr().err
    assert cli_main(["generate", "--model", str(model_dir), "--timbre", "piano", "--pitch", "12",
                     "--out", str(tmp_path / "x.wav")]) == 1
    assert "21..108" in capsys.readouterr().err
    assert cli_main(["generate", "--model", str(tmp_path / "none"), "--timbre", "piano", "--pitch", "60",
                     "--out", str(tmp_path / "x.wav")]) == 1
    assert not (tmp_path / "x.wav").exists()

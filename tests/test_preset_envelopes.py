"""Per-preset envelopes: the release measurement against analytic decays, the real font, and the
envelope reaching the bank a preset loads."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.gan_bank import GanBankSource
from models.checkpoint import CheckpointError
from training.preset_envelopes import TRAINING_SF2, main, release_t60_s

RATE = 32_000


def _held_then_released(t60_s: float, hold_s: float = 0.5, after_s: float = 3.0) -> tuple[np.ndarray, int]:
    t = np.arange(int((hold_s + after_s) * RATE)) / RATE
    level_db = np.where(t < hold_s, 0.0, -60.0 * (t - hold_s) / t60_s)
    return (np.sin(2 * np.pi * 440 * t) * 10 ** (level_db / 20)).astype(np.float32), int(hold_s * RATE)


@pytest.mark.parametrize("t60_s", [0.1, 0.5, 2.0])
def test_the_release_of_an_exponential_decay_is_its_t60(t60_s):
    audio, release_at = _held_then_released(t60_s)
    assert release_t60_s(audio, release_at, RATE) == pytest.approx(t60_s, rel=0.05)


def test_a_note_that_keeps_sounding_has_no_finite_release():
    audio, release_at = _held_then_released(1e9)
    assert release_t60_s(audio, release_at, RATE) > 100.0


def test_shipped_presets_carry_measured_envelopes_and_a_damped_piano_releases_faster_than_a_harp():
    source = GanBankSource.from_dir(Path(__file__).resolve().parents[1] / "models" / "pretrained" / "default")
    envelopes = source.preset_envelopes()
    assert set(envelopes) == set(source.preset_names())
    assert envelopes["acoustic_grand_piano"][3] < envelopes["orchestral_harp"][3]
    assert all(0.02 <= envelope[3] <= 4.0 and envelope[2] == 1.0 for envelope in envelopes.values())


@pytest.mark.skipif(not Path(TRAINING_SF2).is_file(), reason="needs fluid-soundfont-gm")
def test_the_command_writes_envelopes_into_presets_json_and_keeps_the_rest(tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(Path(__file__).resolve().parents[1] / "models" / "pretrained" / "default", model,
                    ignore=shutil.ignore_patterns("gru", "grid"))
    record = json.loads((model / "presets.json").read_text())
    record["programs"] = {name: record["programs"][name] for name in ("trumpet", "string_ensemble_1")}
    record["presets"] = {name: record["presets"][name] for name in record["programs"]}
    record["corners"] = ["trumpet", "trumpet", "string_ensemble_1", "string_ensemble_1"]
    record.pop("envelopes", None)
    (model / "presets.json").write_text(json.dumps(record))
    assert main(["--model", str(model)]) == 0
    written = json.loads((model / "presets.json").read_text())
    assert set(written["envelopes"]) == {"trumpet", "string_ensemble_1"}
    assert written["presets"] == record["presets"] and written["corners"] == record["corners"]
    assert written["envelopes"]["trumpet"][3] < written["envelopes"]["string_ensemble_1"][3]
    assert json.loads(capsys.readouterr().out)["presets"] == 2


def test_a_bad_envelope_is_a_clear_error(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(Path(__file__).resolve().parents[1] / "models" / "pretrained" / "default", model,
                    ignore=shutil.ignore_patterns("gru", "grid"))
    record = json.loads((model / "presets.json").read_text())
    record["envelopes"] = {"trumpet": [0.01, 0.1, 2.0, 0.3]}  # sustain above 1
    (model / "presets.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="trumpet"):
        GanBankSource.from_dir(model)

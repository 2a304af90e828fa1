"""One-shot fidelity evaluation on a tiny model and synthetic instruments (no soundfont), its
summary arithmetic, and the `eval --one-shot-fidelity` command's error path."""
import argparse
import json

import numpy as np

from models.gan_bank import GanBankSource
from models.one_shot import preprocess_note
from models.pitch import midi_to_hz
from training import eval_command
from training.one_shot_fidelity import FidelityConfig, fidelity_of_notes, is_held_out, summarise
from tests.test_gan_bank import make_tiny_model

CONFIG = FidelityConfig(pitches=(48, 60, 72), programs=(0, 3, 4, 7), seconds=0.1, n_figure_instruments=1)


def synthetic_font(n_samples: int, sample_rate: int) -> dict:
    """Four "instruments" whose harmonics roll off at different rates: {program: {pitch: note}}. Cosines
    start at their peak, so the one-shot path trims nothing off the reference note."""
    t = np.arange(n_samples) / sample_rate
    font = {}
    for program, rolloff in zip(CONFIG.programs, (0.5, 1.0, 1.5, 2.5)):
        font[program] = {}
        for pitch in (48, 60, 72):
            f0_hz = float(midi_to_hz(pitch))
            tone = sum(np.cos(2 * np.pi * k * f0_hz * t) / k ** rolloff for k in range(1, 20)
                       if k * f0_hz < sample_rate / 2)
            font[program][pitch] = preprocess_note((tone * np.exp(-3 * t)).astype(np.float32), sample_rate, 0.1, 5.0)
    return font


def test_held_out_programs_are_every_fourth():
    assert [p for p in range(12) if is_held_out(p, FidelityConfig())] == [3, 7, 11]


def test_summary_counts_instruments_where_the_bank_beats_resampling_and_the_best_preset():
    records = [{"distance_db": {"model": 5.0, "resampled": 6.0, "best_preset": 7.0}},
               {"distance_db": {"model": 5.0, "resampled": 4.0, "best_preset": 7.0}},
               {"distance_db": {"model": 5.0, "resampled": 9.0, "best_preset": 4.5}},
               {"distance_db": {"model": 3.0, "resampled": 9.0, "best_preset": 4.5}}]
    summary = summarise(records)
    assert summary["n_instruments"] == 4
    assert summary["beats_resampling_and_best_preset"] == {"model": 0.5}
    assert summary["mean_distance_db"]["resampled"] == 7.0


def test_fidelity_on_synthetic_instruments_reports_both_subsets_and_a_figure(tmp_path):
    model_dir = make_tiny_model(tmp_path / "model")
    presets = json.loads((model_dir / "presets.json").read_text())
    presets["presets"]["acoustic_grand_piano"] = presets["presets"]["organ"]
    (model_dir / "presets.json").write_text(json.dumps(presets))
    source = GanBankSource.from_dir(model_dir)
    setting = source.own_sample_blend
    metrics = fidelity_of_notes(source, synthetic_font(source.n_samples, source.sample_rate), tmp_path / "out",
                                CONFIG, progress=False)
    assert source.own_sample_blend == setting
    assert (tmp_path / "out" / "one_shot_fidelity.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "one_shot_fidelity.json").read_text())["held_out_programs"] == [3, 7]
    assert metrics["development"]["n_instruments"] == 2 and metrics["held_out"]["n_instruments"] == 2
    for record in metrics["per_instrument"]:
        distances = record["distance_db"]
        assert record["distance_db_by_pitch"]["resampled"][record["pitches"].index(60)] < 0.5
        assert abs(record["estimated_source_pitch"] - 60) < 0.2
        assert distances["best_preset"] == min(distances[k] for k in ("nearest_preset", "same_named_preset")
                                               if k in distances)
    assert metrics["per_instrument"][0]["same_named_preset"] == "acoustic_grand_piano"
    assert metrics["chosen_on_development"] in {"model", *metrics["blend_candidates"]}
    assert metrics["per_instrument"][0]["played_bank"] == "model_refined_blend_9_2"
    assert set(metrics["held_out"]["pitch_accuracy"]) == {"played_bank", "real"}
    assert metrics["held_out"]["pitch_accuracy"]["real"] == 1.0  # synthetic harmonic notes: pyin finds them all
    rows = {row["row"]: row for row in metrics["ablation"]["held_out"]}  # no hyper/: refinement of G's h
    assert {"model", "model + refinement", "G + blend 9,2", "refinement + blend 9,2"} <= set(rows)
    assert rows["model + refinement"]["mean_distance_db"] != rows["model"]["mean_distance_db"]


def test_eval_one_shot_fidelity_names_a_missing_font(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    args = parser.parse_args(["--model", str(make_tiny_model(tmp_path / "model")), "--out", str(tmp_path / "out"),
                              "--one-shot-fidelity", "--sf2", str(tmp_path / "missing.sf2")])
    assert eval_command.main(args) == 1
    assert "missing.sf2" in capsys.readouterr().err

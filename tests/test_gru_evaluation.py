"""GRU-vs-GAN agreement metrics on analytic signals; the command line's checks on the shipped model."""
from pathlib import Path

import numpy as np
import pytest

from training.evaluation import pitch_accuracy
from training.gru_evaluation import (PointClassifier, TOLERANCE_CENTS, classified_alike_rate, default_grid_points,
                                     log_mel_distance_db, main, timbre_features)

RATE = 16_000


def _tone(pitch: float, cents: float = 0.0, n_samples: int = RATE // 2, n_harmonics: int = 4,
          rolloff: float = 1.0) -> np.ndarray:
    f0_hz = 440.0 * 2.0 ** ((pitch - 69 + cents / 100.0) / 12.0)
    time_s = np.arange(n_samples) / RATE
    note = sum(h ** -rolloff * np.sin(2 * np.pi * h * f0_hz * time_s) for h in range(1, n_harmonics + 1))
    return (note / np.abs(note).max()).astype(np.float32)


def test_a_tone_at_the_nominal_pitch_is_correct_and_one_80_cents_off_is_not():
    notes = np.stack([_tone(60), _tone(60, cents=80.0)])
    accuracy, cents = pitch_accuracy(notes, [60, 60], RATE, TOLERANCE_CENTS)
    assert accuracy == pytest.approx(0.5)
    assert abs(cents[0]) < 10 and abs(cents[1] - 80.0) < 10


def test_identical_notes_are_0_db_apart_and_different_timbres_are_not():
    bright, dark = _tone(60, rolloff=0.5, n_harmonics=12), _tone(60, rolloff=3.0, n_harmonics=12)
    distances = log_mel_distance_db(np.stack([bright, dark]), np.stack([bright, dark]), RATE)
    assert distances.shape == (2, 2)
    np.testing.assert_allclose(np.diag(distances), 0.0, atol=1e-9)
    assert distances[0, 1] > 1.0 and distances[0, 1] == pytest.approx(distances[1, 0])


def test_distance_ignores_level_and_cuts_to_the_shorter_note():
    note = _tone(67, n_harmonics=8)
    longer = np.concatenate([note, np.zeros(RATE // 4, np.float32)])
    assert log_mel_distance_db(0.1 * note[None], longer[None], RATE)[0, 0] < 1e-3  # float32 STFT rounding


def _timbres(pitch: int, n_points: int) -> np.ndarray:
    return np.stack([_tone(pitch, rolloff=0.4 + 0.8 * j, n_harmonics=10, n_samples=RATE // 4) for j in range(n_points)])


def test_classified_alike_is_1_when_each_gru_note_equals_its_gan_note():
    distances = np.stack([log_mel_distance_db(_timbres(pitch, 3), _timbres(pitch, 3), RATE) for pitch in (48, 72)])
    assert classified_alike_rate(distances) == 1.0


def test_classified_alike_is_0_when_the_gru_notes_are_swapped_round():
    gan = _timbres(60, 3)
    distances = log_mel_distance_db(gan[::-1], gan, RATE)[None]  # GRU note 0 = GAN note 2, ...
    # the middle one still matches itself, the outer two match the other end
    assert classified_alike_rate(distances) == pytest.approx(1 / 3)


def test_ties_count_as_misses():
    assert classified_alike_rate(np.ones((2, 3, 3))) == 0.0


def test_bad_shapes_and_counts_are_named():
    with pytest.raises(ValueError, match="distances"):
        classified_alike_rate(np.zeros((1, 1, 1)))
    with pytest.raises(ValueError, match="grid points"):
        default_grid_points(1)
    with pytest.raises(ValueError, match="audio"):
        log_mel_distance_db(np.full((1, 100), np.nan), np.zeros((1, 100)), RATE)


def test_default_grid_points_start_with_corners_and_centre_and_stay_in_the_square():
    points = default_grid_points(9, seed=3)
    assert points.shape == (9, 2)
    np.testing.assert_array_equal(points[:5], [[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]])
    assert np.all((points >= 0) & (points <= 1)) and len(np.unique(points, axis=0)) == 9


def test_command_line_names_a_bad_pitch_list(capsys):
    with pytest.raises(SystemExit):
        main(["--model", "nowhere", "--out", "nowhere", "--pitches", "60,x"])
    assert "--pitches" in capsys.readouterr().err


def test_the_point_classifier_tells_timbres_apart_at_unseen_pitches():
    rate, t = 16000, np.arange(8000) / 16000

    def tone(pitch, bright):  # harmonic k weighted bright**k: the timbre; pitch: the note
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        return sum(bright ** k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 8) if k * f0 < rate / 2)

    brightness = [0.1, 0.5, 0.9]
    train = [(tone(p, b), j) for j, b in enumerate(brightness) for p in (46, 47, 49, 50, 58, 59, 61, 62)]
    train_pitches = [p for _ in brightness for p in (46, 47, 49, 50, 58, 59, 61, 62)]
    classifier = PointClassifier().fit(
        timbre_features(np.array([a for a, _ in train], np.float32), train_pitches, rate), np.array([j for _, j in train]))
    test = np.array([tone(p, b) for b in brightness for p in (48, 60)], np.float32)
    features = timbre_features(test, [48, 60] * 3, rate)
    assert features.shape == (6, 2 * 16 + 1)
    assert classifier.predict(features).tolist() == [0, 0, 1, 1, 2, 2]


def test_points_between_nodes_skip_the_corners_and_centre():
    points = default_grid_points(5, seed=3, random_only=True)
    assert points.shape == (5, 2) and np.all((points > 0) & (points < 1))
    assert not any(np.allclose(point, [0.5, 0.5]) for point in points)


def test_template_only_makes_a_residual_voice_play_its_template_and_refuses_a_plain_voice():
    import torch

    from models.gru import GruSynth
    from models.gru_config import GruSynthConfig
    from models.mu_law import mu_law_zero
    from training.gru_evaluation import template_only

    with pytest.raises(ValueError, match="residual"):
        template_only(GruSynth(GruSynthConfig(n_layers=1, hidden_size=16)))
    config = GruSynthConfig(n_layers=1, hidden_size=16, oscillator_harmonics=2, template_harmonics=4,
                            template_grid_size=3, template_pitches=(40.0, 60.0), template_residual=True)
    voice = GruSynth(config)
    voice.set_template(np.random.default_rng(0).uniform(-0.3, 0.3, config.template_shape).astype(np.float32))
    template_only(voice)
    mu = torch.randint(0, 256, (2, 20))
    conditioning = torch.tensor([[0.3, 0.6, 50.0], [0.9, 0.1, 58.0]])[:, None].repeat(1, 20, 1)
    with torch.no_grad():
        logits = voice(mu, conditioning)[0]
    assert torch.all(logits.argmax(-1) == mu_law_zero(config.n_classes))


def test_command_line_names_a_voice_without_a_template_for_template_only(tmp_path, capsys):
    shipped = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "default"
    with pytest.raises(SystemExit):
        main(["--model", str(shipped), "--out", str(tmp_path), "--template-only", "--points", "2"])
    assert "residual voice" in capsys.readouterr().err


def test_command_line_names_a_voice_without_a_template_for_template_from_bank(tmp_path, capsys):
    shipped = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "default"
    with pytest.raises(SystemExit):
        main(["--model", str(shipped), "--out", str(tmp_path), "--template-from-bank", "--points", "2"])
    assert "timbre template" in capsys.readouterr().err

"""GAN realism figures of `latentsynth eval` on analytic notes: timbre spread, temporal detail."""
import math

import numpy as np

from models.features import FeatureConfig
from training.evaluation import temporal_detail_db, timbre_spread_db

CONFIG = FeatureConfig(n_samples=8000)
RATE = CONFIG.sample_rate


def _note(pitch: int, rolloff: float, tremolo_hz: float = 0.0) -> np.ndarray:
    f0_hz = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
    time_s = np.arange(CONFIG.n_samples) / RATE
    note = sum(k ** -rolloff * np.sin(2 * np.pi * k * f0_hz * time_s) for k in range(1, 7))
    if tremolo_hz:
        note = note * (1.0 + 0.9 * np.sin(2 * np.pi * tremolo_hz * time_s))
    return (note / np.abs(note).max()).astype(np.float32)


def test_spread_is_zero_for_one_timbre_twice_and_grows_with_the_timbre_difference():
    same = {"a": {60: _note(60, 1.0)}, "b": {60: _note(60, 1.0)}}
    near = {"a": {60: _note(60, 1.0)}, "b": {60: _note(60, 1.5)}}
    far = {"a": {60: _note(60, 1.0)}, "b": {60: _note(60, 3.0)}}
    assert timbre_spread_db(same, CONFIG) < 1e-6
    assert 0.5 < timbre_spread_db(near, CONFIG) < timbre_spread_db(far, CONFIG)


def test_spread_pairs_only_notes_of_the_same_pitch():
    notes = {"a": {60: _note(60, 1.0), 64: _note(64, 1.0)}, "b": {64: _note(64, 1.0), 67: _note(67, 3.0)}}
    assert timbre_spread_db(notes, CONFIG) < 1e-6  # only MIDI 64 is shared, and it is the same timbre there
    assert math.isnan(timbre_spread_db({"a": {60: _note(60, 1.0)}}, CONFIG))


def test_temporal_detail_is_near_zero_for_a_steady_tone_and_large_for_a_tremolo():
    steady, tremolo = temporal_detail_db(np.stack([_note(60, 1.0), _note(60, 1.0, tremolo_hz=7.0)]), CONFIG)
    assert steady < 0.2
    assert tremolo > 10 * max(steady, 0.1)

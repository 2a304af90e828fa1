"""GAN realism figures of `latentsynth eval` on analytic notes: timbre spread, temporal detail, high band."""
import math

import numpy as np

from models.model_config import FeatureConfig
from training.evaluation import (
    BAND_LEVEL_FLOOR_DB,
    band_level_db,
    high_band_agreement,
    temporal_detail_db,
    timbre_spread_db,
)

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


def _two_tones(sample_rate: int, low_amplitude: float, high_amplitude: float, high_hz: float = 10_000.0):
    time_s = np.arange(sample_rate) / sample_rate
    tone = low_amplitude * np.sin(2 * np.pi * 500.0 * time_s)
    if high_hz < sample_rate / 2:
        tone = tone + high_amplitude * np.sin(2 * np.pi * high_hz * time_s)
    return tone[None].astype(np.float32)


def test_band_level_is_the_energy_share_of_the_band():
    # equal amplitudes: half the energy lies in 8-15 kHz (-3.01 dB); a tenth of the amplitude: 1 % (-20.04 dB)
    half = band_level_db(_two_tones(32_000, 1.0, 1.0), 32_000, 8_000.0, 15_000.0)[0]
    small = band_level_db(_two_tones(32_000, 1.0, 0.1), 32_000, 8_000.0, 15_000.0)[0]
    assert math.isclose(half, 10 * math.log10(0.5), abs_tol=0.01)
    assert math.isclose(small, 10 * math.log10(0.01 / 1.01), abs_tol=0.01)


def test_a_band_above_nyquist_reads_as_the_floor_and_fails_the_agreement():
    empty = band_level_db(_two_tones(16_000, 1.0, 1.0), 16_000, 8_000.0, 15_000.0)[0]
    assert empty == BAND_LEVEL_FLOOR_DB
    real = _two_tones(32_000, 1.0, 0.3)
    band_limited = high_band_agreement(_two_tones(16_000, 1.0, 1.0), real, 16_000, 32_000)
    full_band = high_band_agreement(_two_tones(32_000, 1.0, 0.25), real, 32_000, 32_000)
    assert band_limited["within_tolerance"] == 0.0 and band_limited["mean_abs_difference_db"] > 90
    assert full_band["within_tolerance"] == 1.0
    assert math.isclose(full_band["mean_abs_difference_db"], 10 * math.log10((0.09 / 1.09) / (0.0625 / 1.0625)),
                        abs_tol=0.01)

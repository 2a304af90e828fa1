"""Bank tuning: detune is measured against analytic tones and retuning puts them in pitch."""
import numpy as np
import pytest

from rt_engine.banks.bank_tuning import measure_detune_cents, retune

RATE = 16_000


def _tone(pitch, cents, n_samples=RATE, n_harmonics=6):
    f0 = 440.0 * 2 ** ((pitch - 69) / 12) * 2 ** (cents / 1200)
    t = np.arange(n_samples) / RATE
    return sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, n_harmonics + 1)
               if k * f0 < RATE / 2).astype(np.float32)


@pytest.mark.parametrize("pitch,cents", [(33, 25.0), (60, -40.0), (69, 13.0), (96, -20.0)])
def test_measured_detune_matches_the_synthesised_one(pitch, cents):
    measured = measure_detune_cents(_tone(pitch, cents)[None], [pitch], RATE)
    assert measured[0] == pytest.approx(cents, abs=2.0)


def test_noise_has_no_clear_pitch_and_is_left_alone():
    noise = np.random.default_rng(0).standard_normal((1, RATE)).astype(np.float32)
    detune = measure_detune_cents(noise, [60], RATE)
    assert np.isnan(detune[0])
    np.testing.assert_array_equal(retune(noise, detune), noise)


def test_retuned_notes_measure_in_tune():
    notes = np.stack([_tone(57, 30.0), _tone(76, -35.0), _tone(64, 0.2)])
    detune = measure_detune_cents(notes, [57, 76, 64], RATE)
    tuned = retune(notes, detune)
    assert tuned.shape == notes.shape
    np.testing.assert_allclose(measure_detune_cents(tuned, [57, 76, 64], RATE), 0.0, atol=2.0)
    np.testing.assert_array_equal(tuned[2], notes[2])  # under a cent: untouched


def test_retuning_and_a_rate_change_in_one_pass_leave_the_note_in_tune_at_the_new_rate():
    from fractions import Fraction

    notes = np.stack([_tone(45, 40.0), _tone(81, -25.0), _tone(60, 0.3)])
    detune = measure_detune_cents(notes, [45, 81, 60], RATE)
    tuned = retune(notes, detune, rate_ratio=Fraction(3, 1))
    assert tuned.shape == (3, 3 * RATE)
    np.testing.assert_allclose(measure_detune_cents(tuned, [45, 81, 60], 3 * RATE), 0.0, atol=2.0)
    # under a cent: only the rate changes, the waveform is the same signal at 3x the samples
    np.testing.assert_allclose(tuned[2, 3 * 1000:3 * 15000:3], notes[2, 1000:15000], atol=2e-3)

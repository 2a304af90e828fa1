"""Own-sample blend: weights, resampling to a pitch, the YIN pitch estimate, the crossfade, and the
one-shot bank path of GanBankSource that applies it."""
import numpy as np
import pytest
import soundfile

from models.bank_source import TimbreRequest
from models.gan_bank import GanBankSource
from models.one_shot import load_one_shot
from models.own_sample_blend import (OwnSampleBlend, blend_own_sample, blend_rows, estimate_pitch_midi,
                                     own_sample_weights, resample_to_pitch)
from models.pitch import midi_to_hz
from tests.test_gan_bank import make_tiny_model

RATE = 16_000


def harmonic_note(pitch: float, n_samples: int = RATE, first_harmonic: int = 1, rate: int = RATE) -> np.ndarray:
    """A decaying tone with harmonics 1/k from `first_harmonic` up to Nyquist, float32 [n_samples]."""
    t = np.arange(n_samples) / rate
    f0_hz = float(midi_to_hz(pitch))
    tone = sum(np.sin(2 * np.pi * k * f0_hz * t + k) / k
               for k in range(first_harmonic, 30) if k * f0_hz < rate / 2)
    return (tone * np.exp(-2.0 * t)).astype(np.float32)


def peak_hz(note: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(note * np.hanning(note.size), 8 * note.size))
    return float(np.argmax(spectrum) * RATE / (8 * note.size))


def test_weights_are_one_within_the_interval_then_fall_linearly_to_zero():
    weights = own_sample_weights([60, 63, 57, 64, 65, 66, 40], 60.0, OwnSampleBlend(3.0, 2.0))
    np.testing.assert_allclose(weights, [1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(own_sample_weights([60, 61], 60.2, OwnSampleBlend(0.5, 0.0)), [1.0, 0.0])


def test_a_negative_interval_is_refused():
    with pytest.raises(ValueError):
        OwnSampleBlend(-1.0, 2.0)


@pytest.mark.parametrize("semitones", [12.0, -12.0, 7.0, -5.0])
def test_resampling_moves_a_tone_by_the_interval(semitones):
    sine = np.sin(2 * np.pi * 440.0 * np.arange(RATE) / RATE).astype(np.float32)
    moved = resample_to_pitch(sine, semitones, RATE)
    assert moved.shape == (RATE,) and np.isclose(np.abs(moved).max(), 1.0)
    expected_hz = 440.0 * 2.0 ** (semitones / 12.0)
    assert abs(1200 * np.log2(peak_hz(moved[:RATE // 4]) / expected_hz)) < 5.0


@pytest.mark.parametrize("rate", [16_000, 32_000])
@pytest.mark.parametrize("pitch", [24.0, 36.0, 47.3, 60.0, 72.0, 96.0])
def test_yin_finds_the_pitch_of_harmonic_tones_at_any_rate(pitch, rate):
    assert abs(estimate_pitch_midi(harmonic_note(pitch, rate, rate=rate), rate) - pitch) < 0.15


def test_yin_finds_a_missing_fundamental_and_rejects_noise():
    assert abs(estimate_pitch_midi(harmonic_note(45.0, first_harmonic=2), RATE) - 45.0) < 0.15
    noise = np.random.default_rng(0).normal(size=RATE).astype(np.float32)
    assert np.isnan(estimate_pitch_midi(noise, RATE))
    assert np.isnan(estimate_pitch_midi(np.zeros(RATE, np.float32), RATE))


def test_blend_rows_keeps_pure_rows_exact_and_normalises_mixed_ones():
    rng = np.random.default_rng(1)
    generated, own = rng.uniform(-1, 1, (3, 64)), rng.uniform(-1, 1, (3, 64))
    mixed = blend_rows(generated, own, [0.0, 1.0, 0.3])
    np.testing.assert_allclose(mixed[0], generated[0], rtol=1e-6)
    np.testing.assert_allclose(mixed[1], own[1], rtol=1e-6)
    expected = 0.3 * own[2] + 0.7 * generated[2]
    np.testing.assert_allclose(mixed[2], expected / np.abs(expected).max(), rtol=1e-5)


def test_the_bank_plays_the_input_at_its_pitch_and_generated_notes_far_away():
    note = harmonic_note(60.0)
    pitches = [60, 62, 64, 84]
    generated = np.random.default_rng(2).uniform(-1, 1, (4, RATE)).astype(np.float32)
    bank = blend_own_sample(generated, pitches, note, 60.0, RATE, OwnSampleBlend(3.0, 2.0))
    np.testing.assert_allclose(bank[0], resample_to_pitch(note, 0.0, RATE), atol=1e-6)
    assert abs(1200 * np.log2(peak_hz(bank[1][:4000]) / midi_to_hz(62))) < 5.0
    assert not np.allclose(bank[2], generated[2]) and not np.allclose(bank[2], resample_to_pitch(note, 4.0, RATE))
    np.testing.assert_array_equal(bank[3], generated[3])
    np.testing.assert_array_equal(blend_own_sample(generated, pitches, note, np.nan, RATE, OwnSampleBlend()),
                                  generated)


def test_a_one_shot_bank_of_the_gan_source_blends_its_input(tmp_path):
    source = GanBankSource.from_dir(make_tiny_model(tmp_path / "model"))
    path = tmp_path / "tone.wav"
    soundfile.write(path, harmonic_note(60.0, source.n_samples), source.sample_rate, subtype="FLOAT")
    request, pitches = TimbreRequest("audio", path=str(path), refine=False), [60, 61, 90]
    source.own_sample_blend = None
    plain = source.render_bank(request, pitches)
    source.own_sample_blend = OwnSampleBlend(1.0, 2.0)
    generated_pitches = []
    render_conditioning = source.render_conditioning
    source.render_conditioning = lambda h, p, *rest: generated_pitches.extend(p) or render_conditioning(h, p, *rest)
    blended = source.render_bank(request, pitches)
    assert generated_pitches == [90]  # MIDI 60 and 61 (within 1 semitone) play the input alone: not generated
    one_shot = load_one_shot(path, source.sample_rate, source.n_samples)
    source_pitch = estimate_pitch_midi(one_shot, source.sample_rate)
    # G in a batch of one rounds differently from a batch of three (1e-5 of the peak after the inversion)
    np.testing.assert_allclose(blended, blend_own_sample(plain, pitches, one_shot, source_pitch, source.sample_rate,
                                                         source.own_sample_blend), atol=2e-4)
    np.testing.assert_allclose(blended[2], plain[2], atol=2e-4)
    preset = source.render_bank(TimbreRequest("preset", name="organ"), [60])
    source.own_sample_blend = None
    np.testing.assert_allclose(preset, source.render_bank(TimbreRequest("preset", name="organ"), [60]), atol=1e-5)

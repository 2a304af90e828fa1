"""models.spectral: STFT, mel filterbanks and GANSynth's instantaneous frequency, against analytic
references and librosa."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from models import spectral as sp


def _snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10.0 * np.log10(np.sum(reference.astype(np.float64) ** 2)
                                 / np.sum((reference.astype(np.float64) - estimate) ** 2)))


def _test_audio(n_samples: int = 4000, seed: int = 0) -> np.ndarray:
    """Two notes: white noise and a two-partial tone with an onset (float32 [2, n_samples])."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sp.SAMPLE_RATE
    tone = (np.sin(2 * np.pi * 220.0 * t) + 0.3 * np.sin(2 * np.pi * 661.0 * t + 1.0)) * (t > 0.05)
    return np.stack([0.5 * rng.standard_normal(n_samples), tone]).astype(np.float32)


def test_one_second_note_is_513_bins_by_63_frames():
    spec = sp.stft(np.zeros((1, sp.SAMPLE_RATE), dtype=np.float32))
    assert spec.shape == (1, 513, 63)
    assert spec.dtype == np.complex64


def test_stft_equals_librosa_stft():
    librosa = pytest.importorskip("librosa")
    audio = _test_audio(3001)
    expected = librosa.stft(audio, n_fft=sp.N_FFT, hop_length=sp.HOP_LENGTH, center=True, pad_mode="constant")
    ours = sp.stft(audio)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-5 * np.abs(expected).max())


def test_stft_of_bin_centred_sinusoid_has_analytic_peak():
    k, amplitude = 40, 0.7
    t = np.arange(8000)
    audio = (amplitude * np.cos(2 * np.pi * k * t / sp.N_FFT))[None].astype(np.float32)
    magnitude = np.abs(sp.stft(audio))[0, :, 5:-5]  # frames away from the edges
    assert np.all(np.argmax(magnitude, axis=0) == k)
    np.testing.assert_allclose(magnitude[k], amplitude * sp.hann_window().sum() / 2.0, rtol=1e-4)


@pytest.mark.parametrize("n_samples", [4000, 4001, 16000])
def test_istft_round_trip_is_accurate(n_samples):
    audio = _test_audio(n_samples)
    assert _snr_db(audio, sp.istft(sp.stft(audio), n_samples)) >= 60.0


def test_log_magnitude_floors_silence():
    spec = np.array([[[0.0, 1e-9, 2.0]]], dtype=np.complex64)
    np.testing.assert_allclose(sp.log_magnitude(spec), [[[np.log(sp.LOG_MAGNITUDE_FLOOR)] * 2 + [np.log(2.0)]]],
                               rtol=1e-6)
    np.testing.assert_allclose(sp.magnitude_from_log(sp.log_magnitude(spec)), [[[sp.LOG_MAGNITUDE_FLOOR] * 2 + [2.0]]], rtol=1e-5)


def test_if_round_trip_reconstructs_the_waveform():
    audio = _test_audio(4000)
    log_mag, inst_freq = sp.audio_to_magnitude_and_if(audio)
    assert inst_freq.min() >= -1.0 and inst_freq.max() <= 1.0
    rebuilt = sp.magnitude_and_if_to_audio(log_mag, inst_freq, audio.shape[1])
    assert _snr_db(audio, rebuilt) >= 60.0


def test_if_of_stationary_sinusoid_is_its_phase_advance_per_hop():
    f_hz = 1000.0 + 3.0  # off-bin on purpose
    t = np.arange(8000) / sp.SAMPLE_RATE
    audio = np.cos(2 * np.pi * f_hz * t)[None].astype(np.float32)
    _, inst_freq = sp.audio_to_magnitude_and_if(audio)
    k = int(round(f_hz * sp.N_FFT / sp.SAMPLE_RATE))
    advance = 2 * np.pi * f_hz * sp.HOP_LENGTH / sp.SAMPLE_RATE
    expected = (advance + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(inst_freq[0, k, 5:-5], expected / np.pi, atol=1e-3)


def test_instantaneous_frequency_inverts_by_cumulative_sum():
    rng = np.random.default_rng(1)
    phase = rng.uniform(-np.pi, np.pi, (2, 7, 11))
    rebuilt = sp.phase_from_instantaneous_frequency(sp.instantaneous_frequency(phase))
    np.testing.assert_allclose(np.exp(1j * rebuilt), np.exp(1j * phase), atol=1e-5)


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", ["slaney", None])
@pytest.mark.parametrize("n_mels,f_min_hz,f_max_hz", [(256, 0.0, None), (80, 30.0, 7600.0)])
def test_mel_filterbank_equals_librosa(htk, norm, n_mels, f_min_hz, f_max_hz):
    librosa = pytest.importorskip("librosa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's empty-filter warning is not under test
        expected = librosa.filters.mel(sr=sp.SAMPLE_RATE, n_fft=sp.N_FFT, n_mels=n_mels, fmin=f_min_hz,
                                       fmax=f_max_hz, htk=htk, norm=norm)
    ours = sp.mel_filterbank(sp.SAMPLE_RATE, sp.N_FFT, n_mels, f_min_hz, f_max_hz, htk=htk, norm=norm)
    assert ours.shape == (n_mels, sp.N_BINS)
    np.testing.assert_allclose(ours, expected, atol=1e-6 * np.abs(expected).max(), rtol=1e-5)


@pytest.mark.parametrize("htk", [False, True])
def test_mel_scale_round_trips(htk):
    f_hz = np.array([0.0, 100.0, 999.0, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(sp.mel_to_hz(sp.hz_to_mel(f_hz, htk), htk), f_hz, atol=1e-6)
    assert np.all(np.diff(sp.hz_to_mel(f_hz, htk)) > 0)


def test_mel_pseudo_inverse_satisfies_penrose_conditions():
    fb = sp.mel_filterbank(n_mels=64).astype(np.float64)
    inv = sp.mel_pseudo_inverse(fb).astype(np.float64)
    np.testing.assert_allclose(fb @ inv @ fb, fb, atol=1e-5 * np.abs(fb).max())
    np.testing.assert_allclose(inv @ fb @ inv, inv, atol=1e-4 * np.abs(inv).max())
    np.testing.assert_allclose(fb @ inv, (fb @ inv).T, atol=1e-5)


def test_mel_if_round_trip_is_exact_in_the_filterbank_row_space():
    fb = sp.mel_filterbank(n_mels=64, norm=None)  # peak-1 triangles: a well-scaled inverse
    inv = sp.mel_pseudo_inverse(fb).astype(np.float64)
    rng = np.random.default_rng(2)
    # Spectra in the filterbank's row space (pseudo-inverse images) survive the mel projection;
    # phases advancing by less than pi per hop need no unwrapping, so the round trip is exact.
    k = np.arange(sp.N_BINS)
    smooth = 1.0 + 0.5 * np.sin(k[None, :, None] / 40.0 + rng.uniform(0, 6, (2, 1, 9)))
    magnitude = np.einsum("km,mj,bjt->bkt", inv, fb, smooth)
    inside = slice(1, -1)  # no mel band weighs DC or Nyquist: they are the null space
    assert magnitude[:, inside].min() > 0.01
    mel_phase = np.cumsum(rng.uniform(-0.1 * np.pi, 0.1 * np.pi, (2, 64, 9)), axis=-1)
    phase = np.einsum("km,bmt->bkt", inv, mel_phase)
    assert np.abs(phase[..., 0]).max() < np.pi and np.abs(np.diff(phase, axis=-1)).max() < np.pi
    log_mag = sp.log_magnitude(magnitude)
    inst_freq = sp.instantaneous_frequency(phase)
    mel_log_mag, mel_if = sp.linear_to_mel_if(log_mag, inst_freq, fb)
    assert mel_log_mag.shape == mel_if.shape == (2, 64, 9)
    back_log_mag, back_if = sp.mel_to_linear_if(mel_log_mag, mel_if, fb, inv)
    rebuilt_phase = sp.phase_from_instantaneous_frequency(back_if)
    np.testing.assert_allclose(np.exp(1j * rebuilt_phase), np.exp(1j * phase), atol=1e-3)
    np.testing.assert_allclose(np.exp(back_log_mag)[:, inside], magnitude[:, inside], rtol=1e-3)


def test_map_note_chunks_equals_one_call_on_the_whole_batch():
    audio = _test_audio(3000)
    batch = np.concatenate([audio, 0.5 * audio, -audio])  # 6 notes in 3 slices
    whole = sp.stft(batch)
    np.testing.assert_array_equal(sp.map_note_chunks(sp.stft, batch, n_threads=3), whole)
    np.testing.assert_array_equal(sp.map_note_chunks(sp.stft, batch, n_threads=2, notes_per_chunk=4), whole)
    np.testing.assert_array_equal(sp.map_note_chunks(sp.stft, batch, n_threads=1, notes_per_chunk=1), whole)
    with pytest.raises(ValueError, match="batch size"):
        sp.map_note_chunks(np.add, batch, batch[:2])


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="audio"):
        sp.stft(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        sp.stft(np.full((1, 100), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="spectrogram"):
        sp.istft(np.zeros((3, 4), dtype=np.complex64), 100)
    with pytest.raises(ValueError, match="f_max_hz"):
        sp.mel_filterbank(f_max_hz=9000.0)
    with pytest.raises(ValueError, match="inst_freq must be"):
        sp.linear_to_mel_if(np.zeros((1, sp.N_BINS, 4)), np.zeros((1, sp.N_BINS - 1, 4)), sp.mel_filterbank())
    with pytest.raises(ValueError, match="log_mel_magnitude must be"):
        sp.mel_to_linear_if(np.zeros((1, 7, 4)), np.zeros((1, 7, 4)), sp.mel_filterbank())
    with pytest.raises(ValueError, match="differ"):
        sp.spectrogram_from_magnitude_and_if(np.zeros((1, 3, 4)), np.zeros((1, 3, 5)))

"""The procedural bank source: right shape, right pitch, bounded, and clear errors."""
import numpy as np
import pytest
import soundfile

from models.bank_source import TimbreRequest
from models.procedural_source import ProceduralBankSource
from models.timbre_sources import load_bank_source


def _peak_hz(note, sample_rate):
    spectrum = np.abs(np.fft.rfft(note * np.hanning(note.size)))
    return np.argmax(spectrum) * sample_rate / note.size


def test_bank_rows_follow_requested_pitches_in_order():
    source = ProceduralBankSource(n_samples=8000)
    bank = source.render_bank(TimbreRequest("preset", name="sine"), [69, 57, 81])
    assert bank.shape == (3, 8000) and bank.dtype == np.float32
    for row, expected_hz in zip(bank, (440.0, 220.0, 880.0)):
        assert abs(_peak_hz(row, source.sample_rate) - expected_hz) < 3.0
    assert np.abs(bank).max() <= 1.0 + 1e-6


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(KeyError, match="sine"):
        ProceduralBankSource().render_bank(TimbreRequest("preset", name="kazoo"), [60])


def test_audio_timbre_from_a_missing_file_names_it(tmp_path):
    missing = tmp_path / "rooster.wav"
    with pytest.raises(FileNotFoundError, match="rooster.wav"):
        ProceduralBankSource().render_bank(TimbreRequest("audio", path=str(missing)), [60])


def test_audio_timbre_from_a_real_file_renders(tmp_path):
    path = tmp_path / "saw.wav"
    t = np.arange(16000) / 16000
    soundfile.write(path, (2 * ((220 * t) % 1.0) - 1).astype(np.float32) * 0.5, 16000)
    bank = ProceduralBankSource(n_samples=4000).render_bank(TimbreRequest("audio", path=str(path)), [60])
    assert np.isfinite(bank).all() and np.abs(bank).max() > 0.5


def test_loading_a_missing_model_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_bank_source(tmp_path / "nowhere")


def test_a_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no manifest.json"):
        load_bank_source(tmp_path)

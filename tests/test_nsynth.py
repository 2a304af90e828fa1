"""The NSynth reader on a tiny generated NSynth-shaped folder."""
import json

import numpy as np
import pytest
import soundfile

from training.note_dataset import NoteStore
from training.nsynth import build_nsynth_store, read_examples


def _make_nsynth(root, notes):
    """notes: {split: [(note_str, pitch, amplitude)]} -> NSynth folders with 4 s WAVs."""
    t = np.arange(4 * 16_000) / 16_000
    for split, rows in notes.items():
        audio_dir = root / f"nsynth-{split}" / "audio"
        audio_dir.mkdir(parents=True)
        examples = {}
        for note_str, pitch, amplitude in rows:
            soundfile.write(audio_dir / f"{note_str}.wav", (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16_000)
            examples[note_str] = {"pitch": pitch, "velocity": 75, "instrument_str": note_str.rsplit("-", 2)[0],
                                  "instrument_family": 3, "instrument_source_str": "acoustic"}
        (root / f"nsynth-{split}" / "examples.json").write_text(json.dumps(examples))


def test_reader_keeps_the_88_keys_drops_silence_and_labels_splits(tmp_path):
    _make_nsynth(tmp_path, {
        "train": [("guitar_acoustic_000-057-075", 57, 0.3), ("guitar_acoustic_000-009-075", 9, 0.3),
                  ("guitar_acoustic_000-060-075", 60, 0.0)],
        "valid": [("bass_synthetic_001-040-075", 40, 0.5)],
    })
    summary = build_nsynth_store(tmp_path, tmp_path / "store", splits=("train", "valid"), seconds=0.5, progress=False)
    assert (summary["n_notes"], summary["n_silent_dropped"], summary["n_out_of_range"]) == (2, 1, 1)
    store = NoteStore(tmp_path / "store")
    assert store.n_samples == 8000
    assert store.pitch.tolist() == [57, 40]
    assert store.split.tolist() == ["train", "valid"]
    assert store.instrument == ["guitar_acoustic_000", "bass_synthetic_001"]
    assert np.abs(np.asarray(store.audio[:, :6000])).max(axis=1) == pytest.approx([1.0, 1.0], abs=1e-3)


def test_missing_examples_file_and_audio_are_errors_naming_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="nsynth-train"):
        read_examples(tmp_path / "nsynth-train")
    _make_nsynth(tmp_path, {"train": [("flute_000-060-075", 60, 0.3)]})
    (tmp_path / "nsynth-train" / "audio" / "flute_000-060-075.wav").unlink()
    with pytest.raises(FileNotFoundError, match="flute_000-060-075.wav"):
        build_nsynth_store(tmp_path, tmp_path / "store", splits=("train",), progress=False)
    assert not (tmp_path / "store").exists()


def test_malformed_examples_are_errors_naming_the_note(tmp_path):
    (tmp_path / "nsynth-test").mkdir()
    (tmp_path / "nsynth-test" / "examples.json").write_text(json.dumps({"x-060-075": {"pitch": 60}}))
    with pytest.raises(ValueError, match="x-060-075"):
        read_examples(tmp_path / "nsynth-test")


def test_a_store_above_16_khz_is_resampled_up_and_warns_that_the_top_band_is_empty(tmp_path):
    _make_nsynth(tmp_path, {"train": [("flute_acoustic_000-057-075", 57, 0.3)]})
    with pytest.warns(UserWarning, match="nothing above 8000 Hz"):
        build_nsynth_store(tmp_path, tmp_path / "store", splits=("train",), seconds=0.5, progress=False,
                           sample_rate=32_000)
    store = NoteStore(tmp_path / "store")
    assert (store.sample_rate, store.n_samples) == (32_000, 16_000)
    note = np.asarray(store.audio[0, :12_000], dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(note))
    freqs_hz = np.fft.rfftfreq(note.size, 1 / 32_000)
    assert abs(freqs_hz[np.argmax(spectrum)] - 220.0) < 3.0  # the tone kept its pitch through the resampler
    assert (spectrum[freqs_hz > 8_500] ** 2).sum() < 1e-6 * (spectrum ** 2).sum()

"""The memory-mapped note store: atomic writing, reading back, validation, torch Dataset."""
import json

import numpy as np
import pytest

from training.note_dataset import NoteDataset, NoteStore, NoteStoreError, NoteStoreWriter

N_SAMPLES = 64


def _write_store(path, n_notes=6):
    rng = np.random.default_rng(0)
    notes = rng.uniform(-1, 1, (n_notes, N_SAMPLES)).astype(np.float32)
    with NoteStoreWriter(path, n_samples=N_SAMPLES, sample_rate=16_000, attributes={"made_by": "test"}) as writer:
        for n, audio in enumerate(notes):
            writer.append(audio, pitch=60 + n % 3, instrument=f"font:{n // 3:03d}", family=n // 3,
                          velocity=100, source="font", split="valid" if n // 3 else "train")
    return notes


def test_store_round_trip_returns_the_written_notes_and_labels(tmp_path):
    notes = _write_store(tmp_path / "store")
    store = NoteStore(tmp_path / "store")
    np.testing.assert_array_equal(np.asarray(store.audio), notes)
    assert store.pitch.tolist() == [60, 61, 62, 60, 61, 62]
    assert store.instrument_names == ["font:000", "font:001"]
    assert store.instrument_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert store.indices("train").tolist() == [0, 1, 2]
    assert store.attributes["made_by"] == "test"


def test_lookup_finds_the_same_instrument_at_another_pitch(tmp_path):
    _write_store(tmp_path / "store")
    store = NoteStore(tmp_path / "store")
    assert store.lookup()[(1, 100, 62)] == 5


def test_failed_write_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with NoteStoreWriter(tmp_path / "store", n_samples=N_SAMPLES, sample_rate=16_000) as writer:
            writer.append(np.zeros(N_SAMPLES), pitch=60, instrument="a", family=0, velocity=1, source="s", split="train")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "store").exists()
    assert not (tmp_path / "store.partial").exists()


def test_wrong_note_length_is_rejected(tmp_path):
    with NoteStoreWriter(tmp_path / "store", n_samples=N_SAMPLES, sample_rate=16_000) as writer:
        with pytest.raises(ValueError, match="shape"):
            writer.append(np.zeros(N_SAMPLES + 1), pitch=60, instrument="a", family=0, velocity=1, source="s",
                          split="train")


def test_truncated_audio_file_is_an_error_naming_it(tmp_path):
    _write_store(tmp_path / "store")
    audio_path = tmp_path / "store" / "audio.f32"
    audio_path.write_bytes(audio_path.read_bytes()[:-4])
    with pytest.raises(NoteStoreError, match="audio.f32"):
        NoteStore(tmp_path / "store")


def test_corrupt_index_is_an_error_naming_it(tmp_path):
    _write_store(tmp_path / "store")
    (tmp_path / "store" / "index.json").write_text("{not json")
    with pytest.raises(NoteStoreError, match="index.json"):
        NoteStore(tmp_path / "store")
    (tmp_path / "store" / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(NoteStoreError, match="index.json"):
        NoteStore(tmp_path / "store")


def test_dataset_items_are_audio_pitch_and_instrument(tmp_path):
    notes = _write_store(tmp_path / "store")
    dataset = NoteDataset(NoteStore(tmp_path / "store"), split="valid")
    assert len(dataset) == 3
    audio, pitch, instrument = dataset[1]
    np.testing.assert_array_equal(audio.numpy(), notes[4])
    assert (pitch, instrument) == (61, 1)
    with pytest.raises(NoteStoreError, match="test"):
        NoteDataset(NoteStore(tmp_path / "store"), split="test")

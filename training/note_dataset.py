"""A memory-mapped store of one-shot notes with a JSON index, and a torch Dataset over it.

A store is a folder:
    audio.f32    float32 [n_notes, n_samples], raw little-endian, C order (memory-mapped)
    index.json   {"format": "latentsynth-notes", "version": 1, "sample_rate", "n_samples",
                  "n_notes", "attributes": {...}, "notes": {column -> list, one entry per note}}
Columns: pitch (MIDI), instrument (str), family (int), velocity (int), source (str), split (str).
Writers build the store in a temporary sibling folder and rename it at the end, so a crashed or
interrupted run leaves nothing half-written.

Public API:
    NoteStoreWriter(out_dir, n_samples, sample_rate, attributes)   context manager, .append(...)
    NoteStore(path)        .audio [n_notes, n_samples] memmap, .pitch/.family/... int arrays,
                           .instrument_names, .instrument_ids, .indices(split), .lookup
    NoteDataset(store, split)   torch Dataset of (audio [n_samples], pitch, instrument_id)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

STORE_FORMAT = "latentsynth-notes"
COLUMNS = ("pitch", "instrument", "family", "velocity", "source", "split")


class NoteStoreError(ValueError):
    """A note store folder is missing, corrupt or inconsistent."""


class NoteStoreWriter:
    """Append notes, then commit the folder atomically on a clean exit of the `with` block."""

    def __init__(self, out_dir: str | Path, n_samples: int, sample_rate: int, attributes: dict | None = None):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and any(self.out_dir.iterdir()):
            raise FileExistsError(f"output folder already exists and is not empty: {self.out_dir}")
        self.n_samples = int(n_samples)
        self.sample_rate = int(sample_rate)
        self.attributes = dict(attributes or {})
        self.columns: dict[str, list] = {name: [] for name in COLUMNS}
        self._temporary = self.out_dir.with_name(self.out_dir.name + ".partial")
        self._audio_file = None

    @property
    def n_notes(self) -> int:
        return len(self.columns["pitch"])

    def __enter__(self) -> "NoteStoreWriter":
        if self._temporary.exists():
            shutil.rmtree(self._temporary)
        self._temporary.mkdir(parents=True)
        self._audio_file = open(self._temporary / "audio.f32", "wb")
        return self

    def append(self, audio: np.ndarray, *, pitch: int, instrument: str, family: int, velocity: int,
               source: str, split: str) -> None:
        """Add one note: `audio` float [n_samples] at the store's rate, and its labels."""
        audio = np.asarray(audio, dtype="<f4")
        if audio.shape != (self.n_samples,):
            raise ValueError(f"note audio must have shape ({self.n_samples},), got {audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise ValueError(f"note audio of {instrument} pitch {pitch} has non-finite samples")
        self._audio_file.write(audio.tobytes())
        values = (int(pitch), str(instrument), int(family), int(velocity), str(source), str(split))
        for name, value in zip(COLUMNS, values):
            self.columns[name].append(value)

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._audio_file.close()
        if exc_type is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            return
        index = {
            "format": STORE_FORMAT, "version": 1, "sample_rate": self.sample_rate, "n_samples": self.n_samples,
            "n_notes": self.n_notes, "attributes": self.attributes, "notes": self.columns,
        }
        (self._temporary / "index.json").write_text(json.dumps(index))
        if self.out_dir.exists():
            self.out_dir.rmdir()  # empty, checked in __init__
        os.replace(self._temporary, self.out_dir)


class NoteStore:
    """Read side of a note store: memory-mapped audio plus label arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_path = self.path / "index.json"
        audio_path = self.path / "audio.f32"
        if not index_path.is_file():
            raise NoteStoreError(f"note store index not found: {index_path}")
        try:
            index = json.loads(index_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise NoteStoreError(f"{index_path}: not valid JSON ({error})") from error
        if not isinstance(index, dict) or index.get("format") != STORE_FORMAT:
            raise NoteStoreError(f"{index_path}: not a {STORE_FORMAT} index")
        self.sample_rate = int(index["sample_rate"])
        self.n_samples = int(index["n_samples"])
        self.n_notes = int(index["n_notes"])
        self.attributes = index.get("attributes", {})
        notes = index["notes"]
        for name in COLUMNS:
            if len(notes.get(name, ())) != self.n_notes:
                raise NoteStoreError(f"{index_path}: column {name!r} does not have {self.n_notes} entries")
        expected_bytes = self.n_notes * self.n_samples * 4
        if not audio_path.is_file() or audio_path.stat().st_size != expected_bytes:
            raise NoteStoreError(f"{audio_path}: missing or not {expected_bytes} bytes "
                                 f"({self.n_notes} notes x {self.n_samples} float32 samples)")
        self.audio = np.memmap(audio_path, dtype="<f4", mode="r", shape=(self.n_notes, self.n_samples))
        self.pitch = np.asarray(notes["pitch"], dtype=np.int64)
        self.family = np.asarray(notes["family"], dtype=np.int64)
        self.velocity = np.asarray(notes["velocity"], dtype=np.int64)
        self.instrument = list(notes["instrument"])
        self.source = list(notes["source"])
        self.split = np.asarray(notes["split"])
        self.instrument_names = sorted(set(self.instrument))
        name_to_id = {name: i for i, name in enumerate(self.instrument_names)}
        self.instrument_ids = np.asarray([name_to_id[name] for name in self.instrument], dtype=np.int64)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Note indices `int64 [n]` of a split ("train", "valid", ...), or all when None."""
        if split is None:
            return np.arange(self.n_notes)
        return np.flatnonzero(self.split == split)

    def lookup(self) -> dict[tuple[int, int, int], int]:
        """(instrument_id, velocity, pitch) -> note index: the same instrument at another pitch."""
        return {(int(i), int(v), int(p)): n for n, (i, v, p) in
                enumerate(zip(self.instrument_ids, self.velocity, self.pitch))}


class NoteDataset:
    """torch-style Dataset over one split: item -> (audio float32 [n_samples], pitch, instrument_id)."""

    def __init__(self, store: NoteStore, split: str | None = None):
        self.store = store
        self.note_indices = store.indices(split)
        if self.note_indices.size == 0:
            raise NoteStoreError(f"{store.path}: split {split!r} holds no notes")

    def __len__(self) -> int:
        return int(self.note_indices.size)

    def __getitem__(self, item: int):
        import torch

        note = int(self.note_indices[item])
        audio = torch.from_numpy(np.array(self.store.audio[note]))
        return audio, int(self.store.pitch[note]), int(self.store.instrument_ids[note])

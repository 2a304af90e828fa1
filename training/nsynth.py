"""Read the real NSynth data set into a note store, with GANStrument's filtering.

Layout read: ROOT/nsynth-{train,valid,test}/examples.json and ROOT/nsynth-{split}/audio/<note_str>.wav
(4 s, 16 kHz mono). Kept: MIDI pitches 21-108 (the 88 keys); the first `seconds` of each note,
peak-normalised with the exponential fade-out of `training.sf2_render.preprocess_note`; silent
notes dropped and counted. Labels: pitch, instrument (instrument_str), family (instrument_family),
velocity, source (instrument_source_str), split (train / valid / test).
NSynth is 16 kHz, so it holds nothing above 8 kHz: a store built at a higher `sample_rate` (the
default model's 32 kHz) is resampled up, warns that the top band stays empty, and records
`band_limit_hz` in its attributes.

Public API:
    read_examples(split_dir) -> dict            examples.json, validated
    build_nsynth_store(root, out_dir, splits, seconds, ...) -> summary dict
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from models.one_shot import read_sound_file
from training.sf2_render import SILENCE_PEAK, preprocess_note

NSYNTH_SAMPLE_RATE = 16_000
KEY_RANGE = (21, 108)
_REQUIRED = ("pitch", "velocity", "instrument_str", "instrument_family", "instrument_source_str")


def read_examples(split_dir: str | Path) -> dict:
    """examples.json of one NSynth split folder: {note_str: record}. A missing or malformed file
    raises FileNotFoundError/ValueError naming it."""
    path = Path(split_dir) / "examples.json"
    if not path.is_file():
        raise FileNotFoundError(f"NSynth examples file not found: {path}")
    try:
        examples = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(examples, dict):
        raise ValueError(f"{path}: expected an object of note_str -> record")
    for note_str, record in examples.items():
        missing = [key for key in _REQUIRED if not isinstance(record, dict) or key not in record]
        if missing:
            raise ValueError(f"{path}: note {note_str!r} lacks {missing}")
    return examples


def _read_note(path: Path, n_samples: int) -> np.ndarray:
    audio, rate = read_sound_file(path, "NSynth audio")
    if rate != NSYNTH_SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {rate} Hz, NSynth is {NSYNTH_SAMPLE_RATE} Hz")
    mono = audio.mean(axis=1)[:n_samples]
    return np.pad(mono, (0, n_samples - mono.size))


def build_nsynth_store(root: str | Path, out_dir: str | Path, splits=("train", "valid", "test"),
                       seconds: float = 1.0, fade_seconds: float = 0.1, fade_decay: float = 5.0,
                       progress: bool = True, sample_rate: int = NSYNTH_SAMPLE_RATE) -> dict:
    """Index and preprocess NSynth `splits` under `root` into a note store at `out_dir` (written
    atomically) at `sample_rate` (Hz; above NSynth's 16 kHz the notes are resampled up and a
    warning says the band above 8 kHz stays empty). Returns {"n_notes", "n_silent_dropped",
    "n_out_of_range", "out"}."""
    from tqdm import tqdm

    from training.note_dataset import NoteStoreWriter

    root = Path(root)
    split_examples = {split: read_examples(root / f"nsynth-{split}") for split in splits}
    if sample_rate < NSYNTH_SAMPLE_RATE or sample_rate % 1000:
        raise ValueError(f"sample_rate must be a multiple of 1000 Hz >= {NSYNTH_SAMPLE_RATE}, got {sample_rate}")
    if sample_rate > NSYNTH_SAMPLE_RATE:
        warnings.warn(f"NSynth is {NSYNTH_SAMPLE_RATE} Hz: resampled to {sample_rate} Hz its notes hold nothing above "
                      f"{NSYNTH_SAMPLE_RATE // 2} Hz, so a model trained on them plays band-limited banks",
                      stacklevel=2)
    source_samples = int(round(seconds * NSYNTH_SAMPLE_RATE))
    n_samples = int(round(seconds * sample_rate))
    n_dropped = n_out_of_range = 0
    with NoteStoreWriter(out_dir, n_samples=n_samples, sample_rate=sample_rate,
                         attributes={"source": "nsynth", "root": str(root), "splits": list(splits),
                                     "seconds": seconds, "band_limit_hz": NSYNTH_SAMPLE_RATE // 2}) as writer:
        for split, examples in split_examples.items():
            for note_str in tqdm(sorted(examples), desc=f"nsynth-{split}", disable=not progress):
                record = examples[note_str]
                pitch = int(record["pitch"])
                if not KEY_RANGE[0] <= pitch <= KEY_RANGE[1]:
                    n_out_of_range += 1
                    continue
                audio = _read_note(root / f"nsynth-{split}" / "audio" / f"{note_str}.wav", source_samples)
                if np.max(np.abs(audio)) < SILENCE_PEAK:
                    n_dropped += 1
                    continue
                if sample_rate != NSYNTH_SAMPLE_RATE:
                    audio = _upsampled(audio, sample_rate, n_samples)
                writer.append(preprocess_note(audio, sample_rate, fade_seconds, fade_decay),
                              pitch=pitch, instrument=str(record["instrument_str"]),
                              family=int(record["instrument_family"]), velocity=int(record["velocity"]),
                              source=str(record["instrument_source_str"]), split=split)
        writer.attributes.update({"n_silent_dropped": n_dropped, "n_out_of_range": n_out_of_range})
        n_notes = writer.n_notes
    return {"n_notes": n_notes, "n_silent_dropped": n_dropped, "n_out_of_range": n_out_of_range, "out": str(out_dir)}


def _upsampled(audio: np.ndarray, sample_rate: int, n_samples: int) -> np.ndarray:
    """One 16 kHz note `[m]` resampled to `sample_rate` (Hz), cut or padded to `[n_samples]`."""
    divisor = np.gcd(sample_rate, NSYNTH_SAMPLE_RATE)
    resampled = resample_poly(audio, sample_rate // divisor, NSYNTH_SAMPLE_RATE // divisor).astype(np.float32)
    return np.pad(resampled[:n_samples], (0, max(0, n_samples - resampled.size)))

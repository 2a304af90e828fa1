"""A disk cache of rendered bank rows, so `render` and a restarted `serve` reuse banks.

Layout: `<cache_dir>/<model hash>/<conditioning hash>/<pitch>.npy`, one float32 [n_samples] note
(the source's output, at its own rate) per file. The model hash covers every weight, config and
preset file of the model folder, so a retrained model never reads an old bank; the conditioning
hash covers the conditioning vector the source renders from (the GAN's h, the procedural point),
which the timbre request determines, and the note length. Files are written atomically (a
temporary name, then a rename), so a reader never sees half a note; a file of the wrong size is
rendered again. `prune` keeps the folder under a size limit, oldest timbres first.

Public API:
    default_cache_dir() -> Path       $LATENTSYNTH_CACHE, else $XDG_CACHE_HOME or ~/.cache, + latentsynth/banks
    model_hash(model_dir) -> str
    BankCache(cache_dir, model_dir, n_samples)
        .rows(source, conditioning, pitches) -> float32 [len(pitches), n_samples]
        .prune(max_bytes)
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_MAX_BYTES = 1 << 30
"""Size the cache folder is pruned to when it is opened (bytes)."""
MODEL_SUFFIXES = (".json", ".safetensors")
RENDERER_DIR = Path(__file__).resolve().parents[1] / "models"


def default_cache_dir() -> Path:
    """Where banks are cached: $LATENTSYNTH_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/latentsynth/banks."""
    if os.environ.get("LATENTSYNTH_CACHE"):
        return Path(os.environ["LATENTSYNTH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "latentsynth" / "banks"


def model_hash(model_dir: str | Path) -> str:
    """SHA-256 (hex, 16 characters) over the relative paths and bytes of the model folder's
    config, preset and weight files (*.json, *.safetensors) and of the renderer's code (models/*.py),
    so neither a retrained model nor a changed renderer reads an old bank."""
    digest = hashlib.sha256()
    for folder, pattern in ((Path(model_dir), "**/*"), (RENDERER_DIR, "*.py")):
        for path in sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix in MODEL_SUFFIXES + (".py",)):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class BankCache:
    """Rendered notes of one model on disk (see the module docstring)."""

    def __init__(self, cache_dir: str | Path, model_dir: str | Path, n_samples: int):
        self.folder = Path(cache_dir) / model_hash(model_dir)
        self.n_samples = int(n_samples)

    def _timbre_folder(self, conditioning: np.ndarray) -> Path:
        key = np.ascontiguousarray(conditioning, dtype=np.float32).tobytes() + str(self.n_samples).encode()
        return self.folder / hashlib.sha256(key).hexdigest()[:24]

    def rows(self, source, conditioning: np.ndarray, pitches: Sequence[int]) -> np.ndarray:
        """Notes of `conditioning` at MIDI `pitches`: cached ones read, the rest rendered by
        `source.render_pitches` and stored. float32 [len(pitches), n_samples]."""
        folder = self._timbre_folder(conditioning)
        out = np.zeros((len(pitches), self.n_samples), dtype=np.float32)
        missing = []
        for row, pitch in enumerate(pitches):
            note = _read(folder / f"{int(pitch)}.npy", self.n_samples)
            if note is None:
                missing.append(row)
            else:
                out[row] = note
        if missing:
            rendered = source.render_pitches(conditioning, [pitches[row] for row in missing])
            folder.mkdir(parents=True, exist_ok=True)
            for row, note in zip(missing, rendered):
                out[row] = note
                _write(folder / f"{int(pitches[row])}.npy", note)
        os.utime(folder)  # recently used timbres are pruned last
        return out

    def prune(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """Remove the least recently used timbre folders (of every model) until the cache holds at
        most `max_bytes`."""
        root = self.folder.parent
        if not root.is_dir():
            return
        timbres = [t for model in root.iterdir() if model.is_dir() for t in model.iterdir() if t.is_dir()]
        sizes = {t: sum(f.stat().st_size for f in t.iterdir()) for t in timbres}
        total = sum(sizes.values())
        for timbre in sorted(timbres, key=lambda t: t.stat().st_mtime):
            if total <= max_bytes:
                break
            shutil.rmtree(timbre, ignore_errors=True)
            total -= sizes[timbre]


def _read(path: Path, n_samples: int) -> np.ndarray | None:
    try:
        note = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if note.shape != (n_samples,) or note.dtype != np.float32 or not np.all(np.isfinite(note)):
        return None
    return note


def _write(path: Path, note: np.ndarray) -> None:
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(temporary, np.asarray(note, dtype=np.float32))
    os.replace(temporary, path)

"""A disk cache of rendered bank rows, so `render` and a restarted `serve` reuse banks.

Layout: `<cache_dir>/<model hash>/<conditioning hash>/<pitch>.npy`, one float32 [n_samples] note
(the source's output, at its own rate) per file, and beside it `<pitch>.<layout tag>.npy`, the
same note prepared for the kernel at a device rate (retuned, resampled, its sustain loop baked:
float32 [bank_frames]), so a warm bank costs a file read and no signal processing. The model hash
covers every weight, config and preset file of the model folder and the code that renders and
prepares notes, so neither a retrained model nor a changed renderer reads an old bank; the conditioning
hash covers the conditioning vector the source renders from (the GAN's h, the procedural point),
which the timbre request determines, and the note length. Files are written atomically (a
temporary name, then a rename), so a reader never sees half a note; a file of the wrong size is
rendered again. With `defer_writes` the notes are kept in memory (and read from there) until
`flush`, so a live render does not wait for the disk: the bank worker writes them a slice at a
time while no urgent bank waits (and all of them when it stops).
`prune` keeps the folder under a size limit, oldest timbres first.

Public API:
    default_cache_dir() -> Path       $LATENTSYNTH_CACHE, else $XDG_CACHE_HOME or ~/.cache, + latentsynth/banks
    model_hash(model_dir) -> str
    BankCache(cache_dir, model_dir, n_samples, defer_writes=False)
        .rows(source, conditioning, pitches) -> float32 [len(pitches), n_samples]
        .prepared_rows(source, conditioning, pitches, layout, prepare) -> float32 [len(pitches), bank_frames]
        .pending_writes -> int;  .flush()
        .prune(max_bytes)
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:  # for annotations only: the audio process imports this module for its paths
    from rt_engine.banks.bank_layout import BankLayout

DEFAULT_MAX_BYTES = 1 << 30
"""Size the cache folder is pruned to when it is opened (bytes)."""
MODEL_SUFFIXES = (".json", ".safetensors")
REPOSITORY = Path(__file__).resolve().parents[2]
RENDERER_FILES = ("models/*.py", "rt_engine/banks/bank_render.py", "rt_engine/banks/bank_tuning.py",
                  "rt_engine/banks/bank_layout.py")
"""The code that renders and prepares a bank (globs relative to the package root)."""


def default_cache_dir() -> Path:
    """Where banks are cached: $LATENTSYNTH_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/latentsynth/banks."""
    if os.environ.get("LATENTSYNTH_CACHE"):
        return Path(os.environ["LATENTSYNTH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "latentsynth" / "banks"


def model_hash(model_dir: str | Path) -> str:
    """SHA-256 (hex, 16 characters) over the relative paths and bytes of the model folder's
    config, preset and weight files (*.json, *.safetensors) and of the code that renders and
    prepares notes (`RENDERER_FILES`), so neither a retrained model nor a changed renderer reads
    an old bank."""
    digest = hashlib.sha256()
    model = Path(model_dir)
    files = [(model, p) for p in model.glob("**/*") if p.suffix in MODEL_SUFFIXES]
    files += [(REPOSITORY, p) for pattern in RENDERER_FILES for p in REPOSITORY.glob(pattern)]
    for folder, path in sorted((f, p) for f, p in files if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class BankCache:
    """Rendered notes of one model on disk (see the module docstring)."""

    def __init__(self, cache_dir: str | Path, model_dir: str | Path, n_samples: int, defer_writes: bool = False):
        self.folder = Path(cache_dir) / model_hash(model_dir)
        self.n_samples = int(n_samples)
        self.defer_writes = defer_writes
        self._pending: dict[Path, np.ndarray] = {}

    @property
    def pending_writes(self) -> int:
        """Notes made and not yet written (`defer_writes`)."""
        return len(self._pending)

    def flush(self, max_notes: int | None = None) -> None:
        """Write the deferred notes to disk, oldest first: all, or at most `max_notes` of them."""
        for path in list(self._pending)[:max_notes]:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, self._pending.pop(path))

    def _timbre_folder(self, conditioning: np.ndarray) -> Path:
        key = np.ascontiguousarray(conditioning, dtype=np.float32).tobytes() + str(self.n_samples).encode()
        return self.folder / hashlib.sha256(key).hexdigest()[:24]

    def rows(self, source, conditioning: np.ndarray, pitches: Sequence[int], store: bool = True) -> np.ndarray:
        """Notes of `conditioning` at MIDI `pitches`: cached ones read, the rest rendered by
        `source.render_pitches` and (`store`) written. float32 [len(pitches), n_samples]."""
        folder = self._timbre_folder(conditioning)
        out = self._read_or_make(folder, "", pitches, self.n_samples,
                                 lambda missing: source.render_pitches(conditioning, missing), store)
        if folder.is_dir():
            os.utime(folder)  # recently used timbres are pruned last
        return out

    def prepared_rows(self, source, conditioning: np.ndarray, pitches: Sequence[int], layout: BankLayout,
                      prepare: Callable[[np.ndarray, list[int]], np.ndarray], store: bool = True) -> np.ndarray:
        """Notes of `conditioning` at MIDI `pitches` prepared for `layout`: cached ones read, the
        rest made by `prepare(notes [m, n_samples], their pitches) -> [m, bank_frames]` from
        `rows` and (`store`) written. float32 [len(pitches), layout.bank_frames]."""
        return self._read_or_make(
            self._timbre_folder(conditioning), f".{_layout_tag(layout)}", pitches, layout.bank_frames,
            lambda missing: prepare(self.rows(source, conditioning, missing, store), missing), store)

    def _read_or_make(self, folder: Path, suffix: str, pitches: Sequence[int], length: int,
                      make: Callable[[list[int]], np.ndarray], store: bool) -> np.ndarray:
        """Files `<pitch><suffix>.npy` of `folder` read (or their deferred notes), the missing ones
        made by `make(their pitches)` and (`store`) written or deferred: float32 [len(pitches), length]."""
        out = np.zeros((len(pitches), length), dtype=np.float32)
        missing = []
        for row, pitch in enumerate(pitches):
            path = folder / f"{int(pitch)}{suffix}.npy"
            note = self._pending.get(path)
            if note is None:
                note = _read(path, length)
            if note is None:
                missing.append(row)
            else:
                out[row] = note
        if missing:
            made = make([int(pitches[row]) for row in missing])
            if store and not self.defer_writes:
                folder.mkdir(parents=True, exist_ok=True)
            for row, note in zip(missing, made):
                out[row] = note
                path = folder / f"{int(pitches[row])}{suffix}.npy"
                if store and self.defer_writes:
                    self._pending[path] = out[row].copy()  # its own note: the caller may change `out`
                elif store:
                    _write(path, note)
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


def _layout_tag(layout: BankLayout) -> str:
    """The part of a prepared note's file name that names its layout (device rate and geometry)."""
    return (f"{layout.device_rate}hz-{layout.source_rate}-{layout.bank_frames}-{layout.loop_start}-"
            f"{layout.loop_end}-{layout.xfade_frames}")


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

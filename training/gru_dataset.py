"""The GRU's training set: G renders every timbre-grid node x a pitch set; mu-law clips + conditioning.

A dataset is a folder:
    audio_mu.u8        uint8 [n_clips, n_samples] mu-law classes, raw C order (memory-mapped)
    conditioning.f32   float32 [n_clips, 3] = (x, y, MIDI pitch) per clip, raw little-endian
    index.json         {"format": "latentsynth-gru-data", "version": 1, "n_clips", "n_samples",
                        "sample_rate", "n_classes", "grid_size", "pitches", "config": {...}}
Grid node (row, column) has x = column / (size - 1), y = row / (size - 1): the GRU learns the
nominal grid coordinates, G renders at the node's (SOM-adapted) conditioning vector.

Training windows are `window + 1` consecutive classes of one clip (inputs mu[:-1], targets mu[1:])
with the clip's conditioning repeated per sample, float32 [window, 3] (Sound Model Factory: 256-sample
sequences, conditioned per sample on the continuous grid coordinates and pitch).
The folder is written under a temporary name and renamed at the end: never half-written.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.mu_law import mu_law_encode
from models.pitch import midi_to_hz

DATA_FORMAT = "latentsynth-gru-data"

ConditioningRenderer = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(h float32 [batch, conditioning_dim], MIDI pitches int [batch]) -> audio float32 [batch, n_samples]."""


class GruDatasetError(ValueError):
    """A GRU dataset folder is missing, corrupt or inconsistent."""


@dataclass(frozen=True)
class GruDatasetConfig:
    """What to render for the GRU: pitches, the part of each note kept, the level."""

    pitches: tuple = (40, 45, 48, 52, 55, 57, 60, 62, 64, 67, 69, 72, 76, 79, 84)
    """MIDI pitches rendered at the grid nodes."""
    pitches_per_node: int = 0
    """0: every node x every pitch. k > 0: node n gets k pitches spread over the range, indices
    (n + j * (len(pitches) // k)) mod len(pitches) for j < k, so the grid as a whole covers every
    pitch at a k / len(pitches) share of the rendering cost."""
    clip_start_s: float = 0.0
    """Start of the kept part of each render (s)."""
    clip_seconds: float = 1.0
    """Length of the kept part (s); clipped to the render length."""
    peak: float = 0.9
    """Each clip is peak-normalised to this level before mu-law encoding (silent clips stay silent)."""
    render_batch: int = 32
    """Notes per G call."""
    seed: int = 0
    """G's noise seed (same for every node, so the grid is the only source of variation)."""
    n_classes: int = 256

    def __post_init__(self):
        if not self.pitches or any(not 0 <= int(p) <= 127 for p in self.pitches):
            raise ValueError(f"pitches must be a non-empty list of MIDI numbers 0..127, got {self.pitches}")
        if self.clip_start_s < 0 or self.clip_seconds <= 0:
            raise ValueError(f"clip_start_s must be >= 0 and clip_seconds > 0, got {self.clip_start_s}, {self.clip_seconds}")
        if not 0 < self.peak <= 1:
            raise ValueError(f"peak must be in (0, 1], got {self.peak}")
        if not 0 <= self.pitches_per_node <= len(self.pitches):
            raise ValueError(f"pitches_per_node must be in [0, {len(self.pitches)}], got {self.pitches_per_node}")
        if self.render_batch < 1:
            raise ValueError(f"render_batch must be >= 1, got {self.render_batch}")


def node_coordinates(size: int) -> np.ndarray:
    """Grid coordinates of every node, row-major: float32 [size * size, 2] = (x, y) in [0, 1]."""
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(t, t, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


def pitch_assignment(n_nodes: int, config: GruDatasetConfig) -> np.ndarray:
    """MIDI pitches rendered at each node: int64 [n_nodes, k] (k = len(pitches) or pitches_per_node)."""
    pitches = np.array([int(p) for p in config.pitches], dtype=np.int64)
    if config.pitches_per_node == 0:
        return np.tile(pitches, (n_nodes, 1))
    k = config.pitches_per_node
    indices = (np.arange(n_nodes)[:, None] + np.arange(k)[None, :] * (len(pitches) // k)) % len(pitches)
    return pitches[indices]


def encode_clips(audio: np.ndarray, peak: float, n_classes: int = 256) -> np.ndarray:
    """Peak-normalise each clip to `peak` and mu-law encode. audio: float [batch, n_samples]
    -> uint8 [batch, n_samples] (int16 if n_classes > 256)."""
    audio = np.asarray(audio, dtype=np.float64)
    if not np.all(np.isfinite(audio)):
        raise ValueError("rendered audio contains NaN or infinite samples")
    level = np.abs(audio).max(axis=1, keepdims=True)
    normalised = np.where(level > 1e-6, audio * (peak / np.maximum(level, 1e-12)), 0.0)
    return mu_law_encode(normalised, n_classes).astype(_class_dtype(n_classes))


def build_gru_dataset(
    out_dir: str | Path,
    nodes: np.ndarray,
    render: ConditioningRenderer,
    sample_rate: int,
    config: GruDatasetConfig,
    progress: bool = True,
) -> Path:
    """Render every grid node x pitch with `render` and store the mu-law clips.

    nodes: float32 [size, size, conditioning_dim] (e.g. `TimbreGrid.nodes`); render: see
    `ConditioningRenderer`; sample_rate (Hz) of the renders. Returns the dataset folder.
    Raises FileExistsError if `out_dir` exists and is not empty.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"GRU dataset folder already exists and is not empty: {out_dir}")
    nodes = np.asarray(nodes, dtype=np.float32)
    if nodes.ndim != 3 or nodes.shape[0] != nodes.shape[1]:
        raise ValueError(f"grid nodes must be [size, size, conditioning_dim], got {nodes.shape}")
    size = nodes.shape[0]
    node_pitches = pitch_assignment(size * size, config)  # [n_nodes, pitches per node]
    per_node = node_pitches.shape[1]
    h = np.repeat(nodes.reshape(size * size, -1), per_node, axis=0)  # node-major
    xy = np.repeat(node_coordinates(size), per_node, axis=0)
    clip_pitch = node_pitches.reshape(-1)
    start = int(round(config.clip_start_s * sample_rate))
    n_clips = len(h)

    temporary = out_dir.with_name(out_dir.name + ".partial")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    n_samples = None
    try:
        with open(temporary / "audio_mu.u8", "wb") as audio_file:
            bar = tqdm(total=n_clips, desc="GRU data", unit="note", disable=not progress)
            for first in range(0, n_clips, config.render_batch):
                chunk = slice(first, min(first + config.render_batch, n_clips))
                audio = np.asarray(render(h[chunk], clip_pitch[chunk]), dtype=np.float32)
                if audio.ndim != 2 or audio.shape[0] != chunk.stop - chunk.start:
                    raise ValueError(f"renderer returned shape {audio.shape} for {chunk.stop - chunk.start} notes")
                stop = min(audio.shape[1], start + int(round(config.clip_seconds * sample_rate)))
                if stop - start < 2:
                    raise ValueError(f"clip_start_s {config.clip_start_s} leaves no audio in renders of "
                                     f"{audio.shape[1]} samples")
                if n_samples is None:
                    n_samples = stop - start
                audio_file.write(np.ascontiguousarray(encode_clips(audio[:, start:stop], config.peak, config.n_classes)).tobytes())
                bar.update(chunk.stop - chunk.start)
            bar.close()
        conditioning = np.concatenate([xy, clip_pitch[:, None].astype(np.float32)], axis=1).astype("<f4")
        (temporary / "conditioning.f32").write_bytes(conditioning.tobytes())
        index = {
            "format": DATA_FORMAT, "version": 1, "n_clips": n_clips, "n_samples": n_samples,
            "sample_rate": int(sample_rate), "n_classes": config.n_classes, "grid_size": size,
            "pitches": sorted(set(clip_pitch.tolist())), "config": dataclasses.asdict(config),
        }
        (temporary / "index.json").write_text(json.dumps(index, indent=2))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if out_dir.exists():
        out_dir.rmdir()
    temporary.rename(out_dir)
    return out_dir


class GruDataset:
    """A stored GRU dataset (memory-mapped) and its training windows.

    `.mu` uint8 [n_clips, n_samples], `.conditioning` float32 [n_clips, 3] = (x, y, pitch).
    As a torch-style dataset, item i is the i-th non-overlapping window (deterministic); training
    usually draws random windows with `sample_batch`.
    """

    def __init__(self, folder: str | Path, window: int = 256):
        self.folder = Path(folder)
        index_path = self.folder / "index.json"
        if not index_path.is_file():
            raise GruDatasetError(f"GRU dataset index not found: {index_path}")
        try:
            index = json.loads(index_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise GruDatasetError(f"{index_path}: not valid JSON ({error})") from error
        if not isinstance(index, dict) or index.get("format") != DATA_FORMAT:
            raise GruDatasetError(f"{index_path}: not a {DATA_FORMAT} index")
        try:
            self.n_clips = int(index["n_clips"])
            self.n_samples = int(index["n_samples"])
            self.sample_rate = int(index["sample_rate"])
            self.n_classes = int(index["n_classes"])
        except (KeyError, TypeError, ValueError) as error:
            raise GruDatasetError(f"{index_path}: missing or bad field ({error})") from error
        self.index = index
        self.mu = self._open(self.folder / "audio_mu.u8", _class_dtype(self.n_classes), (self.n_clips, self.n_samples))
        self.conditioning = np.array(self._open(self.folder / "conditioning.f32", "<f4", (self.n_clips, 3)))
        if window < 1 or window + 1 > self.n_samples:
            raise ValueError(f"window must be in [1, {self.n_samples - 1}] for clips of {self.n_samples} samples, got {window}")
        self.window = int(window)
        self.windows_per_clip = (self.n_samples - 1) // self.window
        config = index.get("config") if isinstance(index.get("config"), dict) else {}
        self.clip_start_samples = int(round(float(config.get("clip_start_s", 0.0)) * self.sample_rate))
        """Samples between each note's onset and its clip's first sample."""

    @staticmethod
    def _open(path: Path, dtype, shape: tuple) -> np.ndarray:
        if not path.is_file():
            raise GruDatasetError(f"GRU dataset file not found: {path}")
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if path.stat().st_size != expected:
            raise GruDatasetError(f"{path}: {path.stat().st_size} bytes, expected {expected} for {shape} {np.dtype(dtype)}")
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)

    def __len__(self) -> int:
        return self.n_clips * self.windows_per_clip

    def __getitem__(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Window `item`: (mu int64 [window + 1], conditioning float32 [window, 3])."""
        if not 0 <= item < len(self):
            raise IndexError(f"window {item} out of range [0, {len(self)})")
        clip, slot = divmod(item, self.windows_per_clip)
        offset = slot * self.window
        mu = self.mu[clip, offset:offset + self.window + 1].astype(np.int64)
        return mu, np.repeat(self.conditioning[clip][None, :], self.window, axis=0)

    def sample_batch(self, rng: np.random.Generator, batch_size: int, clips: np.ndarray | None = None,
                     with_ages: bool = False) -> tuple:
        """Random windows (uniform clip among `clips`, default all; uniform offset):
        (mu int64 [batch, window + 1], conditioning float32 [batch, window, 3]), and with `with_ages`
        the age of each window's first target, mu[:, 1], in samples since its note's onset (int64 [batch])."""
        if clips is None:
            clips = rng.integers(0, self.n_clips, size=batch_size)
        else:
            clips = np.asarray(clips)[rng.integers(0, len(clips), size=batch_size)]
        offsets = rng.integers(0, self.n_samples - self.window, size=batch_size)
        positions = offsets[:, None] + np.arange(self.window + 1)[None, :]
        mu = np.asarray(self.mu[clips[:, None], positions], dtype=np.int64)
        conditioning = np.repeat(self.conditioning[clips][:, None, :], self.window, axis=1)
        if with_ages:
            return mu, conditioning, (self.clip_start_samples + offsets + 1).astype(np.int64)
        return mu, conditioning


def window_phase(mu: np.ndarray, pitch: np.ndarray, sample_rate: int, n_classes: int = 256,
                 n_harmonics: int = 3) -> np.ndarray:
    """Phase (radians, [0, 2 pi)) of each window's fundamental at its target samples, for the GRU's
    oscillator input (`models.gru.GruSynth`).

    mu: int [batch, window + 1] classes (a `sample_batch` window); pitch: MIDI [batch] (steady within
    the window). Each decoded window x[n] is fitted by weighted least squares (Hann weights) with
    sum_k a_k cos(k w n) + b_k sin(k w n), k = 1..n_harmonics, at the nominal w = 2 pi f0 / sample_rate.
    Fitting the harmonics jointly keeps them from leaking into the fundamental when the window holds
    about one period (low notes); phi_0 = atan2(-b_1, a_1) is the fundamental's phase at n = 0 and the
    result is phi_0 + w n for n = 1..window. Returns float32 [batch, window]."""
    from models.mu_law import mu_law_decode

    x = mu_law_decode(np.asarray(mu), n_classes).astype(np.float64)
    n = np.arange(x.shape[1], dtype=np.float64)
    omega = 2.0 * np.pi * midi_to_hz(pitch) / float(sample_rate)
    angles = omega[:, None, None] * np.arange(1, n_harmonics + 1)[None, :, None] * n[None, None, :]
    basis = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)  # [batch, 2K, samples]
    weights = np.hanning(x.shape[1] + 2)[1:-1]
    normal = np.einsum("bin,bjn->bij", basis * weights, basis) + 1e-6 * np.eye(2 * n_harmonics)
    coefficients = np.linalg.solve(normal, np.einsum("bin,bn->bi", basis * weights, x)[..., None])[..., 0]
    start = np.arctan2(-coefficients[:, n_harmonics], coefficients[:, 0])
    return np.mod(start[:, None] + omega[:, None] * n[None, 1:], 2.0 * np.pi).astype(np.float32)


def _class_dtype(n_classes: int):
    return np.uint8 if n_classes <= 256 else np.int16

"""`latentsynth train grid`: four corner timbres -> SOM-adapted timbre grid (Sound Model Factory Sec. 3.1).

    latentsynth train grid [--config training/configs/grid_default.json] [--corners A B C D]
                           [--size 21] [--model models/pretrained/default] [--out DIR]

Corners are preset names, audio files (.wav/.flac/.ogg/.aif/.aiff: a one-shot sound through the GAN's
feature extractor), latent points as a `.npy` file holding a float vector [conditioning_dim], or the
vector written inline as comma-separated numbers. Order: A (x 0, y 0), B (x 1, y 0), C (x 0, y 1),
D (x 1, y 1). With no corners given, `presets.json`'s "corners" in the model folder, else the first
four presets.

With `coarse_size` set (the default config: 11), a coarse mesh is adapted first, resampled to `size`
and refined, which reaches a given evenness in far fewer renders than adapting the fine mesh alone.
The default config uses direction-scaled weights with p = 8 (`training.som_grid`): on the shipped GAN
the raw Eq. 1 weights even only the fastest-changing diagonal; `"direction_scaled": false,
"distance_power": 1` is the paper's Eq. 1 as printed.

Writes the grid (config.json + model.safetensors + metadata.json with before/after metrics) to
`--out` (default `<model>/grid/`), plus `som_adaptation.png` (the paper's Fig. 2) and `metrics.json`
there and in the run folder. The adaptation is short and restarts from scratch (`--resume` is ignored).

The conditioning space comes from the GAN (`models.gan_bank.GanBankSource`) when `<model>/gan/`
exists, else from `ProceduralBankSource` (h = (x, y) of the procedural additive source), so
the pipeline runs, and is tested, without a trained GAN.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.procedural_source import ProceduralBankSource
from models.timbre_sources import load_bank_source, source_name
from training.config_files import build_dataclass, read_config_json

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "grid_default.json"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff")


@dataclass(frozen=True)
class GridTrainConfig:
    """Everything `train grid` does, saved beside its outputs."""

    model_dir: str = "models/pretrained/default"
    corners: tuple = ()
    """Four corner specs (see the module doc); empty = presets.json "corners" or the first 4 presets."""
    size: int = 21
    n_iterations: int = 60
    step_size: float = 0.2
    distance_power: float = 1.0
    hold_edges: bool = True
    direction_scaled: bool = False
    """Scale each neighbour distance by its direction's mean before the power (see `training.som_grid`)."""
    coarse_size: int = 0
    """> 1: first adapt a coarse_size x coarse_size mesh (cheap), resample it to `size` and refine:
    the large-scale moves, which spread slowly over a fine mesh, are done where they are cheap."""
    coarse_iterations: int = 20
    spectrogram_pitches: tuple = (48, 60, 72)
    """Pitches whose G spectrograms, concatenated, are each node's feature for the L2 distance."""
    seed: int = 0
    """G's noise seed for every render."""
    render_batch: int = 64
    out: str = ""
    """Grid folder; empty = <model_dir>/grid."""
    run_dir: str = "runs/grid"

    def __post_init__(self):
        if self.corners and len(self.corners) != 4:
            raise ValueError(f"a grid needs exactly 4 corners (A B C D), got {len(self.corners)}: {list(self.corners)}")
        if self.size < 2:
            raise ValueError(f"grid size must be >= 2, got {self.size}")
        if self.coarse_size < 0 or self.coarse_iterations < 0:
            raise ValueError("coarse_size and coarse_iterations must be >= 0")
        if not self.spectrogram_pitches:
            raise ValueError("spectrogram_pitches must name at least one MIDI pitch")


def load_conditioning_source(model_dir: str | Path):
    """The timbre source of `model_dir` (`models.timbre_sources`) when it holds a model, else the
    procedural source seen as the conditioning space h = (x, y)."""
    try:
        source_name(model_dir)
    except (FileNotFoundError, ValueError):
        return ProceduralBankSource()
    return load_bank_source(model_dir)


def resolve_corner(source, spec: str) -> np.ndarray:
    """A corner spec (preset name, audio path, .npy latent point, or inline "a,b,c,...") -> float32
    [conditioning_dim]. Raises ValueError/FileNotFoundError/KeyError naming the spec."""
    from models.bank_source import TimbreRequest

    spec = str(spec)
    dim = int(source.conditioning_dim)
    if spec.lower().endswith(".npy"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"corner latent point file not found: {spec}")
        try:
            vector = np.load(spec, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"corner {spec}: not a readable .npy array ({error})") from error
    elif spec.lower().endswith(AUDIO_SUFFIXES):
        vector = source.conditioning_for(TimbreRequest(kind="audio", path=spec))
    elif "," in spec:
        try:
            vector = np.array([float(part) for part in spec.split(",")])
        except ValueError:
            raise ValueError(f"corner {spec!r}: an inline latent point must be comma-separated numbers") from None
    else:
        vector = source.conditioning_for(TimbreRequest(kind="preset", name=spec))
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vector.shape != (dim,):
        raise ValueError(f"corner {spec!r} has {vector.size} values, the conditioning space has {dim}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"corner {spec!r} contains NaN or infinite values")
    return vector


def default_corners(model_dir: str | Path, source) -> tuple:
    """presets.json's "corners" in `model_dir`, else the source's first four presets."""
    presets_file = Path(model_dir) / "presets.json"
    if presets_file.is_file():
        try:
            corners = json.loads(presets_file.read_text()).get("corners")
        except (json.JSONDecodeError, AttributeError) as error:
            raise ValueError(f"{presets_file}: not a JSON object ({error})") from error
        if corners:
            return tuple(corners)
    names = source.preset_names()
    if len(names) < 4:
        raise ValueError(f"no corners given and the model has only {len(names)} presets; pass --corners A B C D")
    return tuple(names[:4])


def spectrogram_features(source, pitches: tuple, seed: int, batch: int):
    """A `FeatureRenderer` for the SOM: conditioning h [n, dim] -> float32 [n, n_pitches * n_bins *
    n_frames], the source's log-magnitude spectrograms at each pitch, flattened and concatenated."""

    def render(h: np.ndarray) -> np.ndarray:
        parts = []
        for pitch in pitches:
            rows = []
            for first in range(0, len(h), batch):
                chunk = h[first:first + batch]
                spectrogram = source.render_spectrogram(chunk, np.full(len(chunk), int(pitch)), seed=seed)
                rows.append(np.asarray(spectrogram, dtype=np.float32).reshape(len(chunk), -1))
            parts.append(np.concatenate(rows))
        return np.concatenate(parts, axis=1)

    return render


def train_grid(config: GridTrainConfig, source=None, progress: bool = True) -> dict:
    """Resolve the corners, adapt the grid, save it with metrics and the Fig. 2 PNG.
    `source` defaults to `load_conditioning_source(config.model_dir)`. Returns the metrics report."""
    from models.timbre_grid import GridConfig, TimbreGrid
    from training.som_grid import (SomConfig, adapt_grid, bilinear_mesh, grid_metrics, metrics_report,
                                   plot_adaptation, resample_mesh)

    started = time.time()
    source = source if source is not None else load_conditioning_source(config.model_dir)
    corner_specs = tuple(config.corners) or default_corners(config.model_dir, source)
    corners = np.stack([resolve_corner(source, spec) for spec in corner_specs])
    som = SomConfig(n_iterations=config.n_iterations, step_size=config.step_size,
                    distance_power=config.distance_power, hold_edges=config.hold_edges,
                    direction_scaled=config.direction_scaled)
    render = spectrogram_features(source, tuple(config.spectrogram_pitches), config.seed, config.render_batch)
    initial_features = render(bilinear_mesh(corners, config.size).reshape(-1, corners.shape[1]))
    initial_features = initial_features.reshape(config.size, config.size, -1)
    start_nodes, coarse_history = None, []
    if 1 < config.coarse_size < config.size and config.coarse_iterations > 0:
        coarse_nodes, _, coarse_history = adapt_grid(
            corners, config.coarse_size, render, dataclasses.replace(som, n_iterations=config.coarse_iterations),
            progress=progress)
        start_nodes = resample_mesh(coarse_nodes, config.size)
    nodes, features, history = adapt_grid(corners, config.size, render, som, progress=progress, initial_nodes=start_nodes)
    history = [{**grid_metrics(initial_features), "step_size": 0.0, "accepted": True, "mesh": "bilinear"}] + history
    report = metrics_report(history)
    report.update({"corners": list(corner_specs), "size": config.size, "seconds": round(time.time() - started, 1),
                   "source": type(source).__name__, "model_dir": str(config.model_dir)})
    metadata = {"report": report, "history": history, "coarse_history": coarse_history,
                "train_config": dataclasses.asdict(config)}
    grid_config = GridConfig(size=config.size, conditioning_dim=int(corners.shape[1]),
                             corner_labels=tuple(str(spec) for spec in corner_specs))
    out = Path(config.out) if config.out else Path(config.model_dir) / "grid"
    TimbreGrid(nodes, grid_config, metadata).save(out)
    title = f"SOM grid {config.size}x{config.size}: cv {report['before']['cv']:.3f} -> {report['after']['cv']:.3f}, " \
            f"max {report['before']['max']:.3g} -> {report['after']['max']:.3g}"
    for folder in {out, Path(config.run_dir)}:
        folder.mkdir(parents=True, exist_ok=True)
        plot_adaptation(initial_features, nodes, features, corners, folder / "som_adaptation.png", title=title)
        (folder / "metrics.json").write_text(json.dumps(report, indent=2))
    return report


def load_train_config(path: str | Path | None, overrides: dict[str, Any]) -> GridTrainConfig:
    """The config from JSON `path` (default grid_default.json) with non-None `overrides` applied."""
    path = Path(path) if path else DEFAULT_CONFIG
    return build_dataclass(GridTrainConfig, read_config_json(path), path, overrides)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Grid options beside train's --config/--out/--resume."""
    parser.add_argument("--corners", nargs=4, metavar=("A", "B", "C", "D"), default=None,
                        help="grid: corner timbres: preset names, audio files, .npy latent points or 'a,b,...'")
    parser.add_argument("--size", type=int, default=None, help="grid: nodes per side (default 21)")
    parser.add_argument("--model", default=None, help="grid/GRU: model folder holding gan/ (default models/pretrained/default)")
    parser.add_argument("--iterations", type=int, default=None, help="grid: SOM iterations")


def run_from_cli(args: argparse.Namespace) -> int:
    """Entry point for `latentsynth train grid` (args: .config, .out, .resume, and add_arguments')."""
    overrides = {
        "corners": getattr(args, "corners", None),
        "size": getattr(args, "size", None),
        "model_dir": getattr(args, "model", None),
        "n_iterations": getattr(args, "iterations", None),
        "out": getattr(args, "out", None),
    }
    config = load_train_config(getattr(args, "config", None), overrides)
    report = train_grid(config)
    print(json.dumps({key: report[key] for key in ("before", "after", "cv_reduction", "max_reduction", "seconds")}, indent=2))
    return 0

"""The timbre grid the runtime reads: conditioning vectors on a size x size mesh, read bilinearly.

Layout: `nodes` is float32 [size, size, conditioning_dim], indexed [row, column] = [y index, x index];
grid coordinate (x, y) in [0, 1]^2 maps to (column, row) = (x, y) * (size - 1). Corners A B C D sit at
(0, 0), (1, 0), (0, 1), (1, 1). `training.som_grid` builds and adapts grids; this module only holds,
reads, saves and loads them.

Public API:
    GridConfig(size, conditioning_dim, corner_labels)
    TimbreGrid(nodes, config, metadata).conditioning_at(x, y) -> float32 [conditioning_dim]
    bilinear_lookup(nodes [size, size, dim], xy [n, 2]) -> float32 [n, dim]
    load_grid(folder) -> TimbreGrid
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from models.checkpoint import CheckpointError, load_config, load_metadata, save_checkpoint


@dataclass(frozen=True)
class GridConfig:
    """What a saved grid needs to be rebuilt: its size, the conditioning space, the corner labels."""

    size: int = 21
    conditioning_dim: int = 2
    corner_labels: tuple = ("A", "B", "C", "D")

    def __post_init__(self):
        if self.size < 2:
            raise ValueError(f"grid size must be >= 2, got {self.size}")
        if self.conditioning_dim < 1:
            raise ValueError(f"conditioning_dim must be >= 1, got {self.conditioning_dim}")
        if len(self.corner_labels) != 4:
            raise ValueError(f"a grid has 4 corner labels, got {len(self.corner_labels)}")


def bilinear_lookup(nodes: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear interpolation over a mesh: nodes [size, size, dim] (rows y, columns x), grid points
    xy float [n, 2] in [0, 1] (clipped) -> float32 [n, dim]."""
    nodes = np.asarray(nodes, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64)
    last = nodes.shape[0] - 1
    column = np.clip(xy[:, 0], 0.0, 1.0) * last
    row = np.clip(xy[:, 1], 0.0, 1.0) * last
    c0 = np.minimum(np.floor(column).astype(np.int64), last - 1)
    r0 = np.minimum(np.floor(row).astype(np.int64), last - 1)
    fx = (column - c0)[:, None]
    fy = (row - r0)[:, None]
    value = ((1 - fx) * (1 - fy) * nodes[r0, c0] + fx * (1 - fy) * nodes[r0, c0 + 1]
             + (1 - fx) * fy * nodes[r0 + 1, c0] + fx * fy * nodes[r0 + 1, c0 + 1])
    return value.astype(np.float32)


class TimbreGrid:
    """An adapted timbre grid: conditioning vectors on a size x size mesh, read bilinearly."""

    def __init__(self, nodes: np.ndarray, config: GridConfig, metadata: dict | None = None):
        nodes = np.asarray(nodes, dtype=np.float32)
        expected = (config.size, config.size, config.conditioning_dim)
        if nodes.shape != expected:
            raise ValueError(f"grid nodes have shape {nodes.shape}, config says {expected}")
        if not np.all(np.isfinite(nodes)):
            raise ValueError("grid nodes contain NaN or infinite values")
        self.nodes = nodes
        self.config = config
        self.metadata = dict(metadata or {})

    @property
    def size(self) -> int:
        return self.config.size

    @property
    def conditioning_dim(self) -> int:
        return self.config.conditioning_dim

    def conditioning_at(self, x: float, y: float) -> np.ndarray:
        """Conditioning at grid point (x, y) in [0, 1] (clipped), bilinear over the four nearest nodes.
        Returns float32 [conditioning_dim]."""
        return self.conditioning_at_points(np.array([[x, y]], dtype=np.float64))[0]

    def conditioning_at_points(self, xy: np.ndarray) -> np.ndarray:
        """Vectorised `conditioning_at`: xy float [n, 2] -> float32 [n, conditioning_dim]."""
        xy = np.asarray(xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"xy must be [n, 2], got shape {xy.shape}")
        if not np.all(np.isfinite(xy)):
            raise ValueError("grid coordinates must be finite")
        return bilinear_lookup(self.nodes, xy)

    def save(self, folder: str | Path) -> Path:
        """Write config.json + model.safetensors (`nodes`) + metadata.json to `folder`."""
        import torch  # heavy, needed only to save (training): the runtime only loads grids

        return save_checkpoint(folder, self.config, {"nodes": torch.from_numpy(self.nodes.copy())}, self.metadata)


def load_grid(folder: str | Path) -> TimbreGrid:
    """Load a grid saved by `TimbreGrid.save`; a missing or bad file is a CheckpointError naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"timbre grid folder not found: {folder}")
    config = load_config(folder, GridConfig)
    path = folder / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"timbre grid weights not found: {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from error
    if "nodes" not in tensors:
        raise CheckpointError(f"{path}: no 'nodes' tensor (found {sorted(tensors)})")
    try:
        return TimbreGrid(tensors["nodes"], config, load_metadata(folder))
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from error

"""The 2-D timbre grid: four corner timbres -> an N x N mesh in G's conditioning space, smoothed by a
self-organising map (Sound Model Factory, Sec. 3.1, Eq. 1).

Layout: `nodes` is float32 [size, size, conditioning_dim], indexed [row, column] = [y index, x index];
grid coordinate (x, y) in [0, 1]^2 maps to (column, row) = (x, y) * (size - 1). Corners, in the order
the user names them (A B C D): A = (x 0, y 0), B = (x 1, y 0), C = (x 0, y 1), D = (x 1, y 1).

SOM adaptation (Eq. 1): every node moves towards its 8 neighbours, each pull weighted by the L2
distance between the spectrograms G renders at the two nodes,

    g_ij += delta_ij * sum_{mn in N8(ij)} w_mn * (g_mn - g_ij),   w_mn = d(S_ij, S_mn)^p,

so a node drifts towards the neighbour it sounds most different from, and large perceptual steps shrink
(p = 1 is Eq. 1). With `direction_scaled`, each distance is first divided by the mean distance of its
neighbour direction over the grid (right/left, down/up and the two diagonals), w_mn = (d / mean_dir d)^p.
On an anisotropic map (here G's map changes ~2.5x faster along one diagonal than the other) raw weights
with p > 1 let the fastest direction's pulls swamp the others, so only that direction gets evened;
scaled weights even every direction against its own scale, which is what `grid_metrics`' cv measures.
A per-direction constant leaves 1-D lines (held edges) and maps even in every direction unchanged.
The step is normalised per node, delta_ij = delta / sum_mn w_mn: each node moves a
fraction delta of the way to the distance-weighted centroid of its neighbours. The fixed points are
Eq. 1's, and the usable delta does not depend on how large or uneven the distances are (a global delta
must be smaller than 1 / the largest weight sum, which stalls the rest of the grid).
Corners are pinned; with `hold_edges` each edge is adapted as a 1-D map along the line between its two
corners (pulled by its two on-line neighbours only), so it stays on that line. `adapt_grid` rejects a
step that raises the coefficient of variation and halves the step size (a too-large step folds the mesh:
updating all nodes at once is stable along a line only for delta below about 1 / (p + 1), beyond it
two nodes across a large gap both jump into it and collide).
Eq. 1's fixed point evens distances only partly (in 1-D, d ~ s^(1/(p+1)) for a local sensitivity s);
a larger `distance_power` p evens them more.

Metrics (`grid_metrics`) compare neighbour distances per grid step (diagonals divided by sqrt(2)); the
coefficient of variation is taken within each neighbour direction, so an evenly spaced map scores 0.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.timbre_grid import bilinear_lookup

# All 8 neighbours of a node.
NEIGHBOUR_OFFSETS = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))

FeatureRenderer = Callable[[np.ndarray], np.ndarray]
"""Maps conditioning vectors float32 [n, conditioning_dim] to flat spectrogram features [n, n_features]."""


@dataclass(frozen=True)
class SomConfig:
    """SOM adaptation settings (Eq. 1)."""

    n_iterations: int = 60
    step_size: float = 0.2
    """delta: the fraction of the way to the weighted neighbour centroid each node moves per step."""
    distance_power: float = 1.0
    """p: pull weight = distance^p. 1 is Eq. 1; larger evens distances more strongly."""
    hold_edges: bool = True
    """Keep edge nodes on the line between their corners (the paper's NSynth setting)."""
    direction_scaled: bool = False
    """Divide each neighbour distance by its direction's grid mean before the power (False: Eq. 1's
    raw distances)."""

    def __post_init__(self):
        if self.n_iterations < 0:
            raise ValueError(f"n_iterations must be >= 0, got {self.n_iterations}")
        if not 0.0 < self.step_size <= 1.0:
            raise ValueError(f"step_size must be in (0, 1], got {self.step_size}")
        if self.distance_power <= 0:
            raise ValueError(f"distance_power must be > 0, got {self.distance_power}")


def bilinear_mesh(corners: np.ndarray, size: int) -> np.ndarray:
    """The regular bilinear mesh between four corners.

    corners: float [4, conditioning_dim] in order A (x0 y0), B (x1 y0), C (x0 y1), D (x1 y1).
    Returns float32 [size, size, conditioning_dim], indexed [y index, x index].
    """
    corners = np.asarray(corners, dtype=np.float64)
    if corners.ndim != 2 or corners.shape[0] != 4:
        raise ValueError(f"corners must be [4, conditioning_dim], got shape {corners.shape}")
    if size < 2:
        raise ValueError(f"grid size must be >= 2, got {size}")
    t = np.linspace(0.0, 1.0, size)
    return bilinear_points(corners, t[None, :].repeat(size, 0), t[:, None].repeat(size, 1))


def bilinear_points(corners: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points of the bilinear surface spanned by `corners` [4, dim] at coordinates x, y (any equal
    shapes, in [0, 1]). Returns float32 [*x.shape, dim]."""
    corners = np.asarray(corners, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)[..., None]
    y = np.asarray(y, dtype=np.float64)[..., None]
    a, b, c, d = corners
    return ((1 - x) * (1 - y) * a + x * (1 - y) * b + (1 - x) * y * c + x * y * d).astype(np.float32)


def resample_mesh(nodes: np.ndarray, size: int) -> np.ndarray:
    """A mesh [n, n, dim] resampled bilinearly to [size, size, dim] (coarse-to-fine adaptation):
    corners are kept exactly and edge nodes stay on their edge lines."""
    t = np.linspace(0.0, 1.0, size)
    y, x = np.meshgrid(t, t, indexing="ij")
    return bilinear_lookup(nodes, np.stack([x.ravel(), y.ravel()], axis=1)).reshape(size, size, -1)


def mesh_coordinates(nodes: np.ndarray, corners: np.ndarray, n_iterations: int = 20) -> np.ndarray:
    """Grid coordinates (x, y) of each node: the least-squares inverse of the bilinear surface of
    `corners` (Gauss-Newton from each node's nominal position), used to draw an adapted mesh.

    nodes: float [size, size, dim]; corners: float [4, dim]. Returns float32 [size, size, 2] = (x, y).
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    corners = np.asarray(corners, dtype=np.float64)
    size = nodes.shape[0]
    t = np.linspace(0.0, 1.0, size)
    x = t[None, :].repeat(size, 0)
    y = t[:, None].repeat(size, 1)
    a, b, c, d = corners
    for _ in range(n_iterations):
        xe, ye = x[..., None], y[..., None]
        residual = bilinear_points(corners, x, y).astype(np.float64) - nodes
        d_dx = (1 - ye) * (b - a) + ye * (d - c)
        d_dy = (1 - xe) * (c - a) + xe * (d - b)
        # 2x2 normal equations per node
        j11 = (d_dx * d_dx).sum(-1)
        j12 = (d_dx * d_dy).sum(-1)
        j22 = (d_dy * d_dy).sum(-1)
        g1 = (d_dx * residual).sum(-1)
        g2 = (d_dy * residual).sum(-1)
        det = j11 * j22 - j12 * j12
        det = np.where(np.abs(det) < 1e-12, 1e-12, det)
        x = np.clip(x - (j22 * g1 - j12 * g2) / det, -0.5, 1.5)  # clipped: a folded surface has no inverse
        y = np.clip(y - (j11 * g2 - j12 * g1) / det, -0.5, 1.5)
    return np.stack([x, y], axis=-1).astype(np.float32)


def neighbour_slices(size: int):
    """For each of the 8 neighbour offsets (dr, dc): ((dr, dc), node index, neighbour index), where
    the two index pairs of slices select, on a [size, size, ...] grid, every node that has that
    neighbour and the neighbour itself, aligned."""
    for dr, dc in NEIGHBOUR_OFFSETS:
        node = (slice(max(0, -dr), size - max(0, dr)), slice(max(0, -dc), size - max(0, dc)))
        neighbour = (slice(max(0, dr), size + min(0, dr)), slice(max(0, dc), size + min(0, dc)))
        yield (dr, dc), node, neighbour


def pair_distances(features: np.ndarray) -> list[np.ndarray]:
    """L2 distances between neighbouring nodes' features, one array per direction that visits every
    8-neighbour pair once: right, down, down-right, down-left (row step, column step = (0, 1), (1, 0),
    (1, 1), (1, -1)).

    features: float [size, size, n_features]. Returns 4 float64 arrays: [size, size-1], [size-1, size],
    [size-1, size-1], [size-1, size-1] (right, down, down-right, down-left neighbours).
    """
    f = np.asarray(features, dtype=np.float64)
    right = np.linalg.norm(f[:, 1:] - f[:, :-1], axis=-1)
    down = np.linalg.norm(f[1:, :] - f[:-1, :], axis=-1)
    down_right = np.linalg.norm(f[1:, 1:] - f[:-1, :-1], axis=-1)
    down_left = np.linalg.norm(f[1:, :-1] - f[:-1, 1:], axis=-1)
    return [right, down, down_right, down_left]


def step_distances(features: np.ndarray) -> np.ndarray:
    """Every 8-neighbour pair's feature distance once, per grid step (diagonals / sqrt(2)).
    features: [size, size, n_features]. Returns float64 [n_pairs]."""
    right, down, down_right, down_left = pair_distances(features)
    return np.concatenate([right.ravel(), down.ravel(), down_right.ravel() / np.sqrt(2), down_left.ravel() / np.sqrt(2)])


def grid_metrics(features: np.ndarray) -> dict:
    """Neighbour-distance statistics of a grid. features: [size, size, n_features].

    max, mean: of all 8-neighbour distances per grid step (`step_distances`);
    cv: the coefficient of variation (std / mean) of the distances within each of the 4 neighbour
        directions, averaged over directions. A map that is even along every direction scores 0 even
        when one direction changes faster than another (which no mesh with pinned corners can undo);
    node_cv: the coefficient of variation of `node_mean_distance` (the field contoured in Fig. 2).
    """
    distances = step_distances(features)
    mean = float(distances.mean())
    direction_cvs = [float(d.std() / d.mean()) if d.mean() > 0 else 0.0 for d in pair_distances(features)]
    node_means = node_mean_distance(features)
    return {
        "max": float(distances.max()),
        "mean": mean,
        "cv": float(np.mean(direction_cvs)),
        "node_cv": float(node_means.std() / node_means.mean()) if node_means.mean() > 0 else 0.0,
    }


def node_mean_distance(features: np.ndarray) -> np.ndarray:
    """Mean feature distance per grid step from each node to its (up to 8) neighbours (diagonals / sqrt(2)):
    the quantity contoured in the paper's Fig. 2. features: [size, size, n_features] -> float64 [size, size]."""
    f = np.asarray(features, dtype=np.float64)
    size = f.shape[0]
    total = np.zeros((size, size))
    count = np.zeros((size, size))
    for (dr, dc), node, neighbour in neighbour_slices(size):
        step = np.hypot(dr, dc)
        total[node] += np.linalg.norm(f[node] - f[neighbour], axis=-1) / step
        count[node] += 1
    return total / count


def som_step(nodes: np.ndarray, features: np.ndarray, config: SomConfig) -> np.ndarray:
    """One SOM update (Eq. 1) of every node; the four corner nodes stay where they are.

    nodes: float [size, size, dim] (conditioning vectors); features: [size, size, n_features] (their
    spectrograms, flattened). Returns the new nodes, float32 [size, size, dim].
    """
    g = np.asarray(nodes, dtype=np.float64)
    f = np.asarray(features, dtype=np.float64)
    size = g.shape[0]
    update = np.zeros_like(g)
    weight_sum = np.zeros((size, size))
    for _, node, neighbour in neighbour_slices(size):
        distance = np.linalg.norm(f[node] - f[neighbour], axis=-1)
        if config.direction_scaled:  # opposite offsets see the same pairs, hence the same scale
            distance = distance / max(float(distance.mean()), 1e-30)
        weight = distance ** config.distance_power
        update[node] += weight[..., None] * (g[neighbour] - g[node])
        weight_sum[node] += weight
    update *= (config.step_size / np.maximum(weight_sum, 1e-30))[..., None]
    if config.hold_edges:  # each edge is a 1-D SOM along its line: pulled by its two on-line neighbours
        for edge in ((0, slice(None)), (-1, slice(None)), (slice(None), 0), (slice(None), -1)):
            update[edge] = _line_update(g[edge], f[edge], config)
    for corner in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        update[corner] = 0.0
    return (g + update).astype(np.float32)


def _line_update(g: np.ndarray, f: np.ndarray, config: SomConfig) -> np.ndarray:
    """Eq. 1 along a line of nodes g [n, dim] with features f [n, n_features]: each inner node moves
    towards its two line neighbours; the end nodes (corners) do not move. Returns the update [n, dim]."""
    weight = np.linalg.norm(f[1:] - f[:-1], axis=-1) ** config.distance_power  # [n - 1] between nodes
    left, right = weight[:-1, None], weight[1:, None]
    pull = left * (g[:-2] - g[1:-1]) + right * (g[2:] - g[1:-1])
    update = np.zeros_like(g)
    update[1:-1] = config.step_size * pull / np.maximum(left + right, 1e-30)
    return update


def adapt_grid(
    corners: np.ndarray,
    size: int,
    render_features: FeatureRenderer,
    config: SomConfig,
    progress: bool = True,
    initial_nodes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Build the bilinear mesh and adapt it with `config.n_iterations` SOM steps (Eq. 1).

    Safeguard: a step that raises the coefficient of variation (`grid_metrics` cv) is rejected and the
    step size halved; an accepted step grows it by 1.25x, up to `config.step_size`. (A too-large step
    folds the mesh: nodes overtake their neighbours and the distances blow up.)

    corners: [4, dim]; render_features: conditioning [n, dim] -> features [n, n_features];
    initial_nodes: [size, size, dim] to start from (e.g. a `resample_mesh`ed coarse result) instead of
    the bilinear mesh; its corners must be `corners`. Returns (adapted nodes float32 [size, size, dim], their features [size, size, n_features],
    history: one metrics dict per iteration plus the initial mesh's first, each with the step size
    tried and whether it was accepted; the result is the last accepted entry).
    """
    from tqdm import tqdm

    corners = np.asarray(corners, dtype=np.float32)
    nodes = bilinear_mesh(corners, size)
    if initial_nodes is not None:
        if np.shape(initial_nodes) != nodes.shape:
            raise ValueError(f"initial_nodes must be {nodes.shape}, got {np.shape(initial_nodes)}")
        nodes = np.asarray(initial_nodes, dtype=np.float32).copy()
        nodes[0, 0], nodes[0, -1], nodes[-1, 0], nodes[-1, -1] = corners  # pinned exactly
    dim = nodes.shape[-1]

    def render(grid_nodes: np.ndarray) -> np.ndarray:
        flat = np.asarray(render_features(grid_nodes.reshape(-1, dim)), dtype=np.float32)
        if flat.ndim < 2 or flat.shape[0] != size * size:
            raise ValueError(f"render_features returned shape {flat.shape}, expected [{size * size}, n_features]")
        return flat.reshape(size, size, -1)

    features = render(nodes)
    current = grid_metrics(features)
    history = [{**current, "step_size": 0.0, "accepted": True}]
    step_size = config.step_size
    bar = tqdm(range(config.n_iterations), desc="SOM", unit="it", disable=not progress)
    for _ in bar:
        candidate = som_step(nodes, features, dataclasses.replace(config, step_size=step_size))
        candidate_features = render(candidate)
        metrics = grid_metrics(candidate_features)
        accepted = metrics["cv"] <= current["cv"]
        history.append({**metrics, "step_size": step_size, "accepted": bool(accepted)})
        if accepted:
            nodes, features, current = candidate, candidate_features, metrics
            step_size = min(config.step_size, 1.25 * step_size)
        else:
            step_size *= 0.5
        bar.set_postfix(cv=f"{current['cv']:.3f}", max=f"{current['max']:.3g}", step=f"{step_size:.3g}")
    return nodes, features, history


def plot_adaptation(
    initial_features: np.ndarray,
    adapted_nodes: np.ndarray,
    adapted_features: np.ndarray,
    corners: np.ndarray,
    path: str | Path,
    title: str = "",
) -> Path:
    """The paper's Fig. 2 as a PNG: (a) initial mesh over its mean-neighbour-distance contour,
    (b) the adapted mesh over the initial contour, (c) the adapted distances at the adapted mesh
    positions, (d) the adapted distances as played (nominal grid positions). Same colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = initial_features.shape[0]
    t = np.linspace(0.0, 1.0, size)
    initial_map = node_mean_distance(initial_features)
    adapted_map = node_mean_distance(adapted_features)
    coordinates = mesh_coordinates(adapted_nodes, corners)
    levels = np.linspace(0.0, max(initial_map.max(), adapted_map.max()) * 1.0001, 16)
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.6))
    panels = (("(a) initial mesh", initial_map, None), ("(b) adapted mesh over (a)", initial_map, coordinates),
              ("(c) adapted distances at mesh positions", None, coordinates), ("(d) adapted distances as played", adapted_map, None))
    for axis, (label, field, mesh) in zip(axes, panels):
        if field is not None:
            image = axis.contourf(t, t, field, levels=levels, cmap="viridis")
        else:
            image = axis.tricontourf(coordinates[..., 0].ravel(), coordinates[..., 1].ravel(), adapted_map.ravel(),
                                     levels=levels, cmap="viridis")
        grid_xy = mesh if mesh is not None else np.stack(np.meshgrid(t, t), axis=-1)
        axis.plot(grid_xy[..., 0], grid_xy[..., 1], color="white", linewidth=0.5)
        axis.plot(grid_xy[..., 0].T, grid_xy[..., 1].T, color="white", linewidth=0.5)
        axis.set_title(label, fontsize=10)
        axis.set_xlabel("x")
        axis.set_xlim(-0.02, 1.02)
        axis.set_ylim(-0.02, 1.02)
        axis.set_aspect("equal")
    axes[0].set_ylabel("y")
    figure.colorbar(image, ax=axes, shrink=0.8, label="mean spectrogram distance to 8 neighbours, per step")
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def metrics_report(history: list[dict]) -> dict:
    """Before/after summary of an adaptation history (from `adapt_grid`), with relative changes."""
    accepted = [entry for entry in history if entry.get("accepted", True)]
    before, after = accepted[0], accepted[-1]
    return {
        "before": before,
        "after": after,
        "cv_reduction": 1.0 - after["cv"] / before["cv"] if before["cv"] > 0 else 0.0,
        "max_reduction": 1.0 - after["max"] / before["max"] if before["max"] > 0 else 0.0,
    }



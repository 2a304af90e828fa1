"""SOM timbre grid: mesh geometry, Eq. 1 adaptation on analytic maps, metrics, save/load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.checkpoint import CheckpointError
from models.procedural_source import ProceduralBankSource
from models.timbre_grid import GridConfig, TimbreGrid, load_grid
from training.som_grid import (
    SomConfig,
    adapt_grid,
    bilinear_mesh,
    bilinear_points,
    grid_metrics,
    mesh_coordinates,
    metrics_report,
    node_mean_distance,
    pair_distances,
    plot_adaptation,
    resample_mesh,
    som_step,
)

UNIT_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)


def warped_features(h: np.ndarray) -> np.ndarray:
    """An analytic 'spectrogram' map with a sharp border at x = 0.5 (like Fig. 2's border) and a
    milder one along y. h: [n, 2] -> [n, 2]."""
    u, v = h[:, 0], h[:, 1]
    return np.stack([u + np.tanh((u - 0.5) / 0.08), 0.5 * (v + 0.5 * np.tanh((v - 0.5) / 0.15))], axis=1)


def linear_features(h: np.ndarray) -> np.ndarray:
    """A linear map R^3 -> R^4: perceptually even in every direction up to a fixed linear change."""
    matrix = np.array([[1.0, 0.2, 0.0, 0.5], [0.0, 0.7, 0.3, -0.2], [0.1, 0.0, 1.0, 0.4]])
    return h @ matrix


def test_bilinear_mesh_puts_corners_in_the_documented_order_and_interpolates_linearly():
    rng = np.random.default_rng(0)
    corners = rng.normal(size=(4, 5)).astype(np.float32)
    mesh = bilinear_mesh(corners, 5)
    assert mesh.shape == (5, 5, 5)
    np.testing.assert_allclose(mesh[0, 0], corners[0], atol=1e-6)   # A: x 0, y 0
    np.testing.assert_allclose(mesh[0, -1], corners[1], atol=1e-6)  # B: x 1, y 0
    np.testing.assert_allclose(mesh[-1, 0], corners[2], atol=1e-6)  # C: x 0, y 1
    np.testing.assert_allclose(mesh[-1, -1], corners[3], atol=1e-6)  # D: x 1, y 1
    np.testing.assert_allclose(mesh[0, 2], 0.5 * (corners[0] + corners[1]), atol=1e-6)
    np.testing.assert_allclose(mesh[2, 2], corners.mean(axis=0), atol=1e-6)


def test_bilinear_mesh_rejects_wrong_corner_count():
    with pytest.raises(ValueError, match="corners"):
        bilinear_mesh(np.zeros((3, 4)), 5)


def test_mesh_coordinates_invert_the_bilinear_surface():
    rng = np.random.default_rng(1)
    corners = rng.normal(size=(4, 6))
    x = rng.uniform(0, 1, size=(7, 7))
    y = rng.uniform(0, 1, size=(7, 7))
    coordinates = mesh_coordinates(bilinear_points(corners, x, y), corners)
    np.testing.assert_allclose(coordinates[..., 0], x, atol=1e-4)
    np.testing.assert_allclose(coordinates[..., 1], y, atol=1e-4)


def test_metrics_of_an_even_map_have_zero_variation_and_the_analytic_step():
    mesh = bilinear_mesh(UNIT_CORNERS, 11)
    features = 3.0 * mesh  # every grid step (1/10) is 0.3 apart, diagonals 0.3 * sqrt(2)
    metrics = grid_metrics(features)
    assert metrics["cv"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["node_cv"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["mean"] == pytest.approx(0.3, rel=1e-5)
    assert metrics["max"] == pytest.approx(0.3, rel=1e-5)
    np.testing.assert_allclose(node_mean_distance(features), 0.3, rtol=1e-5)


def test_directional_cv_ignores_anisotropy_but_sees_unevenness():
    mesh = bilinear_mesh(UNIT_CORNERS, 11)
    anisotropic = mesh * np.array([1.0, 4.0])  # y changes 4x faster than x, evenly
    assert grid_metrics(anisotropic)["cv"] == pytest.approx(0.0, abs=1e-5)
    uneven = np.stack([mesh[..., 0] ** 2, mesh[..., 1]], axis=-1)  # steps grow along x
    right_steps = np.diff(np.linspace(0, 1, 11) ** 2)
    right, down, _, _ = pair_distances(uneven)
    np.testing.assert_allclose(right, np.tile(right_steps, (11, 1)), rtol=1e-5)
    np.testing.assert_allclose(down, 0.1, rtol=1e-5)
    # down is even (cv 0), right has the analytic cv; the diagonals add a positive amount
    assert grid_metrics(uneven)["cv"] > 0.25 * right_steps.std() / right_steps.mean()
    assert grid_metrics(uneven)["max"] == pytest.approx(right_steps.max(), rel=1e-5)


@pytest.mark.parametrize("direction_scaled", [False, True])
def test_an_even_mesh_is_a_fixed_point_of_the_som_update(direction_scaled):
    rng = np.random.default_rng(2)
    corners = rng.normal(size=(4, 3)).astype(np.float32)
    corners[3] = corners[1] + corners[2] - corners[0]  # a flat parallelogram: the bilinear mesh is affine
    mesh = bilinear_mesh(corners, 9)
    features = linear_features(mesh.reshape(-1, 3)).reshape(9, 9, -1)
    config = SomConfig(step_size=0.5, distance_power=3.0, hold_edges=True, direction_scaled=direction_scaled)
    np.testing.assert_allclose(som_step(mesh, features, config), mesh, atol=1e-5)


def exponential_features(h: np.ndarray) -> np.ndarray:
    """Sensitivity along x grows as e^(2x) (local rate 2 e^(2x)); y is linear. h: [n, 2] -> [n, 2]."""
    return np.stack([np.exp(2.0 * h[:, 0]), h[:, 1]], axis=1)


def test_a_held_edge_with_uneven_sensitivity_reaches_the_eq1_fixed_point():
    size = 9
    even_steps = np.diff(np.exp(2.0 * np.linspace(0, 1, size)))
    spreads = []
    for power in (1.0, 3.0):
        # a simultaneous update of all nodes is stable for step sizes below 1 / (p + 1)
        config = SomConfig(step_size=0.5 / (power + 1), distance_power=power, hold_edges=True)
        nodes = bilinear_mesh(UNIT_CORNERS, size)
        for _ in range(400):
            nodes = som_step(nodes, exponential_features(nodes.reshape(-1, 2)).reshape(size, size, -1), config)
        x = nodes[0, :, 0].astype(np.float64)  # the bottom edge, a 1-D line from corner A to corner B
        np.testing.assert_allclose(nodes[0, :, 1], 0.0, atol=1e-7)
        assert x[0] == 0.0 and x[-1] == 1.0 and np.all(np.diff(x) > 0)
        distance = np.diff(np.exp(2.0 * x))
        # Eq. 1 on a line: each inner node balances its two pulls, d_left^p * dx_left = d_right^p * dx_right
        balance = distance ** power * np.diff(x)
        np.testing.assert_allclose(balance, balance.mean(), rtol=1e-3)
        spreads.append(distance.max() / distance.min())
    # d ~ s^(1/(p+1)): evener than the even grid (spread e^1.75), and more so for the larger power
    assert even_steps.max() / even_steps.min() > spreads[0] > spreads[1] > 1.0


def diagonal_features(h: np.ndarray) -> np.ndarray:
    """A map ~4x faster along the (1, 1) diagonal than along (1, -1), with a sharp border at x = 0.5.
    h: [n, 2] -> [n, 2]."""
    u = h[:, 0] + 0.5 * np.tanh((h[:, 0] - 0.5) / 0.08)
    v = h[:, 1]
    return np.stack([4.0 * (u + v), u - v], axis=1)


def test_direction_scaled_weights_even_an_anisotropic_map_more_than_raw_weights():
    results = {}
    for scaled in (False, True):
        config = SomConfig(n_iterations=40, step_size=0.5, distance_power=4.0, hold_edges=True, direction_scaled=scaled)
        _, features, history = adapt_grid(UNIT_CORNERS, 11, diagonal_features, config, progress=False)
        results[scaled] = metrics_report(history)
        np.testing.assert_allclose(results[scaled]["after"]["cv"], grid_metrics(features)["cv"])
    assert results[True]["after"]["cv"] < results[False]["after"]["cv"]
    assert results[True]["cv_reduction"] >= 0.30


def test_som_on_a_warped_map_evens_distances_and_keeps_corners_pinned_and_edges_on_lines():
    size = 15
    nodes, features, history = adapt_grid(UNIT_CORNERS, size, warped_features,
                                          SomConfig(n_iterations=60, step_size=0.3, hold_edges=True), progress=False)
    report = metrics_report(history)
    assert report["cv_reduction"] >= 0.30
    assert history[-1]["max"] < history[0]["max"]
    for index, corner in zip(((0, 0), (0, -1), (-1, 0), (-1, -1)), UNIT_CORNERS):
        np.testing.assert_array_equal(nodes[index], corner)
    np.testing.assert_allclose(nodes[0, :, 1], 0.0, atol=1e-6)    # bottom edge stays at y = 0
    np.testing.assert_allclose(nodes[-1, :, 1], 1.0, atol=1e-6)   # top edge at y = 1
    np.testing.assert_allclose(nodes[:, 0, 0], 0.0, atol=1e-6)    # left edge at x = 0
    np.testing.assert_allclose(nodes[:, -1, 0], 1.0, atol=1e-6)   # right edge at x = 1
    # nodes crowd towards the steep border at x = 0.5: the middle column gap shrinks
    middle = size // 2
    assert nodes[middle, middle + 1, 0] - nodes[middle, middle, 0] < 1.0 / (size - 1)
    np.testing.assert_allclose(features, warped_features(nodes.reshape(-1, 2)).reshape(size, size, -1), atol=1e-6)


def test_som_with_free_edges_still_pins_corners():
    nodes, _, history = adapt_grid(UNIT_CORNERS, 9, warped_features,
                                   SomConfig(n_iterations=10, step_size=0.3, hold_edges=False), progress=False)
    np.testing.assert_array_equal(nodes[0, 0], UNIT_CORNERS[0])
    np.testing.assert_array_equal(nodes[-1, -1], UNIT_CORNERS[3])
    assert history[-1]["cv"] < history[0]["cv"]


def test_adapt_grid_rejects_a_renderer_with_the_wrong_row_count():
    with pytest.raises(ValueError, match="render_features"):
        adapt_grid(UNIT_CORNERS, 5, lambda h: h[:3], SomConfig(n_iterations=1), progress=False)


def test_conditioning_at_is_bilinear_over_nodes():
    rng = np.random.default_rng(3)
    nodes = rng.normal(size=(5, 5, 4)).astype(np.float32)
    grid = TimbreGrid(nodes, GridConfig(size=5, conditioning_dim=4))
    np.testing.assert_allclose(grid.conditioning_at(0.25, 0.5), nodes[2, 1], atol=1e-6)
    np.testing.assert_allclose(grid.conditioning_at(1.0, 1.0), nodes[4, 4], atol=1e-6)
    np.testing.assert_allclose(grid.conditioning_at(0.125, 0.0), 0.5 * (nodes[0, 0] + nodes[0, 1]), atol=1e-6)
    expected = 0.25 * (nodes[1, 1] + nodes[1, 2] + nodes[2, 1] + nodes[2, 2])
    np.testing.assert_allclose(grid.conditioning_at(0.375, 0.375), expected, atol=1e-6)
    np.testing.assert_allclose(grid.conditioning_at(-3.0, 7.0), nodes[4, 0], atol=1e-6)  # clipped
    assert grid.conditioning_at(0.3, 0.6).dtype == np.float32


def test_conditioning_at_on_an_unadapted_grid_equals_the_corner_bilinear():
    rng = np.random.default_rng(4)
    corners = rng.normal(size=(4, 3)).astype(np.float32)
    grid = TimbreGrid(bilinear_mesh(corners, 21), GridConfig(size=21, conditioning_dim=3))
    xy = rng.uniform(0, 1, size=(20, 2))
    np.testing.assert_allclose(grid.conditioning_at_points(xy), bilinear_points(corners, xy[:, 0], xy[:, 1]), atol=1e-5)


def test_grid_rejects_non_finite_nodes_and_bad_points():
    nodes = np.zeros((3, 3, 2), dtype=np.float32)
    nodes[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TimbreGrid(nodes, GridConfig(size=3, conditioning_dim=2))
    grid = TimbreGrid(np.zeros((3, 3, 2)), GridConfig(size=3, conditioning_dim=2))
    with pytest.raises(ValueError, match="finite"):
        grid.conditioning_at(float("nan"), 0.5)


def test_grid_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    config = GridConfig(size=4, conditioning_dim=3, corner_labels=("flute", "brass", "x.wav", "organ"))
    grid = TimbreGrid(rng.normal(size=(4, 4, 3)), config, {"metrics": {"cv": 0.5}})
    grid.save(tmp_path / "grid")
    loaded = load_grid(tmp_path / "grid")
    assert loaded.config == config
    np.testing.assert_array_equal(loaded.nodes, grid.nodes)
    assert loaded.metadata == {"metrics": {"cv": 0.5}}
    np.testing.assert_array_equal(loaded.conditioning_at(0.4, 0.7), grid.conditioning_at(0.4, 0.7))


def test_load_grid_names_the_bad_file(tmp_path):
    grid = TimbreGrid(np.zeros((3, 3, 2)), GridConfig(size=3, conditioning_dim=2))
    folder = grid.save(tmp_path / "grid")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_grid(folder)
    with pytest.raises(CheckpointError, match="not found"):
        load_grid(tmp_path / "missing")


def test_load_grid_rejects_nodes_that_do_not_match_the_config(tmp_path):
    folder = TimbreGrid(np.zeros((3, 3, 2)), GridConfig(size=3, conditioning_dim=2)).save(tmp_path / "grid")
    record = json.loads((folder / "config.json").read_text())
    record["config"]["size"] = 4
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="shape"):
        load_grid(folder)


def test_plot_adaptation_writes_a_png(tmp_path):
    nodes, features, _ = adapt_grid(UNIT_CORNERS, 7, warped_features, SomConfig(n_iterations=3), progress=False)
    initial = warped_features(bilinear_mesh(UNIT_CORNERS, 7).reshape(-1, 2)).reshape(7, 7, -1)
    path = plot_adaptation(initial, nodes, features, UNIT_CORNERS, tmp_path / "fig2.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_grid_on_the_procedural_source_writes_grid_metrics_and_figure(tmp_path):
    from training.train_grid import DEFAULT_CONFIG, GridTrainConfig, load_train_config, train_grid

    config = load_train_config(DEFAULT_CONFIG.parent / "grid_tiny.json", {"corners": ["sine", "saw", "organ", "0.5,0.1"], "size": 4, "n_iterations": 2,
                                      "spectrogram_pitches": [60], "out": str(tmp_path / "grid"),
                                      "run_dir": str(tmp_path / "run")})
    assert isinstance(config, GridTrainConfig)
    report = train_grid(config, source=ProceduralBankSource(n_samples=2048), progress=False)
    grid = load_grid(tmp_path / "grid")
    assert grid.config.corner_labels == ("sine", "saw", "organ", "0.5,0.1")
    np.testing.assert_allclose(grid.conditioning_at(0, 0), [0.0, 0.0])      # sine's (x, y)
    np.testing.assert_allclose(grid.conditioning_at(1, 0), [1.0, 1.0])      # saw's
    np.testing.assert_allclose(grid.conditioning_at(1, 1), [0.5, 0.1], atol=1e-6)  # the inline point
    assert len(grid.metadata["history"]) == 4  # the bilinear mesh, then adapt_grid's start + 2 steps
    assert {"max", "mean", "cv", "node_cv"} <= set(report["before"])
    for folder in (tmp_path / "grid", tmp_path / "run"):
        assert (folder / "som_adaptation.png").is_file()
        assert json.loads((folder / "metrics.json").read_text())["corners"][0] == "sine"


def test_resolve_corner_names_bad_specs(tmp_path):
    from training.train_grid import resolve_corner

    source = ProceduralBankSource(n_samples=256)
    with pytest.raises(KeyError, match="nosuch"):
        resolve_corner(source, "nosuch")
    with pytest.raises(ValueError, match="3 values"):
        resolve_corner(source, "1,2,3")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        resolve_corner(source, str(tmp_path / "missing.npy"))
    np.save(tmp_path / "point.npy", np.array([0.25, 0.75]))
    np.testing.assert_allclose(resolve_corner(source, str(tmp_path / "point.npy")), [0.25, 0.75])


def test_train_grid_cli_options_reach_the_grid(tmp_path, capsys):
    import argparse

    from training import train_grid, train_gru

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--out")
    parser.add_argument("--resume", action="store_true")
    train_grid.add_arguments(parser)
    train_gru.add_arguments(parser)  # one `train` parser takes both option sets
    config = tmp_path / "grid.json"
    config.write_text(json.dumps({"n_iterations": 1, "spectrogram_pitches": [60], "run_dir": str(tmp_path / "run")}))
    args = parser.parse_args(["--config", str(config), "--out", str(tmp_path / "grid"), "--size", "3",
                              "--model", str(tmp_path / "no_gan"), "--corners", "sine", "saw", "flute", "organ"])
    assert train_grid.run_from_cli(args) == 0
    grid = load_grid(tmp_path / "grid")
    assert grid.size == 3 and grid.config.corner_labels == ("sine", "saw", "flute", "organ")
    assert "cv_reduction" in json.loads(capsys.readouterr().out)


def test_coarse_to_fine_keeps_corners_and_edges_and_beats_the_bilinear_mesh(tmp_path):
    from training.train_grid import GridTrainConfig, train_grid

    class WarpedSource:
        conditioning_dim = 2

        def render_spectrogram(self, h, pitches, seed=0):
            return warped_features(np.asarray(h))[:, :, None]

    config = GridTrainConfig(corners=("0,0", "1,0", "0,1", "1,1"), size=13, coarse_size=5, coarse_iterations=15,
                             n_iterations=5, step_size=0.5, spectrogram_pitches=(60,), out=str(tmp_path / "grid"),
                             run_dir=str(tmp_path / "run"))
    report = train_grid(config, source=WarpedSource(), progress=False)
    grid = load_grid(tmp_path / "grid")
    np.testing.assert_array_equal(grid.nodes[-1, -1], [1.0, 1.0])
    np.testing.assert_allclose(grid.nodes[0, :, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(grid.nodes[:, -1, 0], 1.0, atol=1e-6)
    bilinear = warped_features(bilinear_mesh(UNIT_CORNERS, 13).reshape(-1, 2)).reshape(13, 13, -1)
    assert report["before"]["cv"] == pytest.approx(grid_metrics(bilinear)["cv"])
    assert report["cv_reduction"] >= 0.30 and report["max_reduction"] > 0
    assert len(grid.metadata["coarse_history"]) == 16


def test_train_grid_direction_scaled_option_reaches_the_som(tmp_path):
    from training.train_grid import GridTrainConfig, train_grid

    class DiagonalSource:
        conditioning_dim = 2

        def render_spectrogram(self, h, pitches, seed=0):
            return diagonal_features(np.asarray(h))[:, :, None]

    reports = {}
    for scaled in (False, True):
        config = GridTrainConfig(corners=("0,0", "1,0", "0,1", "1,1"), size=11, n_iterations=40, step_size=0.5,
                                 distance_power=4.0, direction_scaled=scaled, spectrogram_pitches=(60,),
                                 out=str(tmp_path / f"grid_{scaled}"), run_dir=str(tmp_path / f"run_{scaled}"))
        reports[scaled] = train_grid(config, source=DiagonalSource(), progress=False)
        _, _, history = adapt_grid(UNIT_CORNERS, 11, diagonal_features,
                                   SomConfig(n_iterations=40, step_size=0.5, distance_power=4.0, direction_scaled=scaled),
                                   progress=False)
        assert reports[scaled]["after"]["cv"] == pytest.approx(metrics_report(history)["after"]["cv"], rel=1e-6)
    assert reports[True]["after"]["cv"] < reports[False]["after"]["cv"]


def test_resample_mesh_of_a_bilinear_mesh_is_the_finer_bilinear_mesh():
    rng = np.random.default_rng(6)
    corners = rng.normal(size=(4, 3))
    np.testing.assert_allclose(resample_mesh(bilinear_mesh(corners, 4), 10), bilinear_mesh(corners, 10), atol=1e-5)


SHIPPED_GRID = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "default" / "grid"


@pytest.mark.skipif(not (SHIPPED_GRID / "config.json").is_file(), reason="default grid not shipped yet")
def test_shipped_grid_loads_and_its_adaptation_evened_the_distances():
    grid = load_grid(SHIPPED_GRID)
    assert grid.size >= 2 and len(grid.config.corner_labels) == 4
    report = grid.metadata["report"]
    assert report["after"]["cv"] < report["before"]["cv"]
    assert report["after"]["max"] < report["before"]["max"]
    centre = grid.conditioning_at(0.5, 0.5)
    assert centre.shape == (grid.conditioning_dim,) and np.all(np.isfinite(centre))

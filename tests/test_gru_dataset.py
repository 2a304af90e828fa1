"""GRU dataset: grid nodes x pitches rendered, mu-law stored, windows with per-sample conditioning."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from models.mu_law import mu_law_decode
from training.gru_dataset import (
    GruDataset,
    GruDatasetConfig,
    GruDatasetError,
    build_gru_dataset,
    encode_clips,
    node_coordinates,
    pitch_assignment,
)

SAMPLE_RATE = 16000
N_RENDER_SAMPLES = 800


def fake_render(h: np.ndarray, pitches: np.ndarray) -> np.ndarray:
    """Additive tones: the pitch sets f0, h[:, 0] the level and h[:, 1] the 2nd-harmonic weight.
    [batch, 2], [batch] -> [batch, N_RENDER_SAMPLES]."""
    time_s = np.arange(N_RENDER_SAMPLES) / SAMPLE_RATE
    f0_hz = 440.0 * 2.0 ** ((np.asarray(pitches, dtype=np.float64)[:, None] - 69) / 12)
    tone = np.sin(2 * np.pi * f0_hz * time_s) + h[:, 1:2] * np.sin(4 * np.pi * f0_hz * time_s)
    return (0.1 + h[:, 0:1]) * tone


def make_nodes(size: int) -> np.ndarray:
    """Nodes whose conditioning is (0.5 x, y): [size, size, 2]."""
    xy = node_coordinates(size).reshape(size, size, 2)
    return np.stack([0.5 * xy[..., 0], xy[..., 1]], axis=-1).astype(np.float32)


def test_node_coordinates_are_row_major_with_x_along_columns():
    xy = node_coordinates(3)
    np.testing.assert_allclose(xy[1], [0.5, 0.0])   # row 0, column 1
    np.testing.assert_allclose(xy[3], [0.0, 0.5])   # row 1, column 0
    np.testing.assert_allclose(xy[8], [1.0, 1.0])


def test_encode_clips_normalises_peak_and_keeps_silence_silent():
    audio = np.stack([np.linspace(-0.2, 0.1, 50), np.zeros(50)])
    classes = encode_clips(audio, peak=0.8)
    assert classes.dtype == np.uint8
    decoded = mu_law_decode(classes)
    assert np.abs(decoded[0]).max() == pytest.approx(0.8, rel=0.03)
    np.testing.assert_array_equal(classes[1], 128)
    with pytest.raises(ValueError, match="NaN"):
        encode_clips(np.array([[0.0, np.nan]]), peak=0.8)


def test_build_stores_every_node_and_pitch_with_its_conditioning(tmp_path):
    size = 3
    config = GruDatasetConfig(pitches=(48, 60), clip_start_s=0.0125, clip_seconds=0.025, render_batch=4, peak=0.9)
    folder = build_gru_dataset(tmp_path / "data", make_nodes(size), fake_render, SAMPLE_RATE, config, progress=False)
    dataset = GruDataset(folder, window=256)
    assert dataset.n_clips == size * size * 2
    assert dataset.n_samples == 400  # 0.025 s at 16 kHz, from sample 200
    assert not (tmp_path / "data.partial").exists()
    xy = node_coordinates(size)
    for clip in range(dataset.n_clips):
        node, pitch_index = divmod(clip, 2)
        np.testing.assert_allclose(dataset.conditioning[clip], [*xy[node], (48, 60)[pitch_index]])
        row, column = divmod(node, size)
        expected = fake_render(make_nodes(size)[row, column][None], np.array([(48, 60)[pitch_index]]))[0, 200:600]
        expected = 0.9 * expected / np.abs(expected).max()
        # mu-law quantisation error: half a class step of the compressed value, expanded
        np.testing.assert_allclose(mu_law_decode(dataset.mu[clip]), expected, atol=0.02)
    index = json.loads((tmp_path / "data" / "index.json").read_text())
    assert index["pitches"] == [48, 60] and index["grid_size"] == size


def test_windows_are_contiguous_clip_slices_with_repeated_conditioning(tmp_path):
    config = GruDatasetConfig(pitches=(57,), clip_seconds=0.05, render_batch=3)
    build_gru_dataset(tmp_path / "data", make_nodes(2), fake_render, SAMPLE_RATE, config, progress=False)
    dataset = GruDataset(tmp_path / "data", window=64)
    assert len(dataset) == 4 * ((800 - 1) // 64)
    mu, conditioning = dataset[dataset.windows_per_clip + 2]
    np.testing.assert_array_equal(mu, dataset.mu[1, 128:193])
    assert conditioning.shape == (64, 3)
    np.testing.assert_array_equal(conditioning, np.repeat(dataset.conditioning[1][None], 64, axis=0))
    with pytest.raises(IndexError):
        dataset[len(dataset)]

    mu_batch, conditioning_batch = dataset.sample_batch(np.random.default_rng(0), 16)
    assert mu_batch.shape == (16, 65) and mu_batch.dtype == np.int64
    assert conditioning_batch.shape == (16, 64, 3) and conditioning_batch.dtype == np.float32
    for row in range(16):
        clip = int(np.flatnonzero((dataset.conditioning == conditioning_batch[row, 0]).all(axis=1))[0])
        haystack = np.lib.stride_tricks.sliding_window_view(np.asarray(dataset.mu[clip]), 65)
        assert (haystack == mu_batch[row]).all(axis=1).any()
        assert (conditioning_batch[row] == conditioning_batch[row, 0]).all()

    again, _, ages = dataset.sample_batch(np.random.default_rng(0), 16, with_ages=True)
    np.testing.assert_array_equal(again, mu_batch)  # the same draws
    start = int(round(config.clip_start_s * SAMPLE_RATE))
    for row in range(16):  # the age of the first target is its index in the clip, plus the clip's start
        clip = int(np.flatnonzero((dataset.conditioning == conditioning_batch[row, 0]).all(axis=1))[0])
        first = ages[row] - start
        np.testing.assert_array_equal(dataset.mu[clip, first - 1:first + 64], mu_batch[row])


def test_build_refuses_a_non_empty_folder_and_leaves_nothing_after_a_failed_render(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    config = GruDatasetConfig(pitches=(60,))
    with pytest.raises(FileExistsError, match="data"):
        build_gru_dataset(tmp_path / "data", make_nodes(2), fake_render, SAMPLE_RATE, config, progress=False)

    def broken_render(h, pitches):
        return np.full((len(h), 100), np.nan)

    with pytest.raises(ValueError, match="NaN"):
        build_gru_dataset(tmp_path / "other", make_nodes(2), broken_render, SAMPLE_RATE, config, progress=False)
    assert not (tmp_path / "other").exists() and not (tmp_path / "other.partial").exists()


def test_opening_a_truncated_dataset_names_the_file(tmp_path):
    config = GruDatasetConfig(pitches=(60,), clip_seconds=0.01)
    build_gru_dataset(tmp_path / "data", make_nodes(2), fake_render, SAMPLE_RATE, config, progress=False)
    path = tmp_path / "data" / "audio_mu.u8"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(GruDatasetError, match="audio_mu.u8"):
        GruDataset(tmp_path / "data", window=16)
    with pytest.raises(GruDatasetError, match="index.json"):
        GruDataset(tmp_path / "missing")


def test_config_rejects_bad_pitches():
    with pytest.raises(ValueError, match="pitches"):
        GruDatasetConfig(pitches=(200,))


def test_pitches_per_node_cycles_through_the_pitch_set_evenly(tmp_path):
    config = GruDatasetConfig(pitches=(40, 50, 60, 70, 80), pitches_per_node=2)
    assigned = pitch_assignment(10, config)
    assert assigned.shape == (10, 2)
    assert all(len(set(row)) == 2 for row in assigned.tolist())
    values, counts = np.unique(assigned, return_counts=True)
    assert values.tolist() == [40, 50, 60, 70, 80] and counts.tolist() == [4] * 5
    folder = build_gru_dataset(tmp_path / "data", make_nodes(2), fake_render, SAMPLE_RATE,
                               dataclasses.replace(config, clip_seconds=0.01), progress=False)
    dataset = GruDataset(folder, window=16)
    assert dataset.n_clips == 8
    np.testing.assert_array_equal(dataset.conditioning[:, 2], pitch_assignment(4, config).reshape(-1))
    with pytest.raises(ValueError, match="pitches_per_node"):
        GruDatasetConfig(pitches=(40, 50), pitches_per_node=3)


@pytest.mark.parametrize("pitch, n_samples", [(69.0, 257), (36.0, 129)], ids=["several-periods", "under-one-period"])
def test_window_phase_recovers_the_fundamental_phase_of_a_sinusoid(pitch, n_samples):
    from models.mu_law import mu_law_encode
    from training.gru_dataset import window_phase

    omega = 2 * np.pi * 440.0 * 2 ** ((pitch - 69.0) / 12) / SAMPLE_RATE
    starts = np.array([0.0, 1.0, -2.5, 3.0])
    n = np.arange(n_samples)
    audio = 0.6 * np.cos(starts[:, None] + omega * n) + 0.2 * np.cos(2 * (starts[:, None] + omega * n) + 0.4)
    phase = window_phase(mu_law_encode(audio), np.full(4, pitch), SAMPLE_RATE)
    assert phase.shape == (4, n_samples - 1) and phase.dtype == np.float32
    expected = starts[:, None] + omega * n[None, 1:]
    error = np.angle(np.exp(1j * (phase - expected)))
    assert np.abs(error).max() < 0.15  # mu-law quantisation and the 2nd harmonic's leakage
    assert phase.min() >= 0 and phase.max() < 2 * np.pi

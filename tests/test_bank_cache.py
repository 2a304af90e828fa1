"""The disk cache of rendered bank rows: hits skip the source, a changed model or a damaged file
renders again, pruning drops the least recently used timbres."""
import os

import numpy as np
import pytest

from rt_engine.banks.bank_cache import BankCache, model_hash
from rt_engine.banks.bank_layout import BankLayout

N_SAMPLES = 64


class CountingSource:
    """Notes whose samples encode (conditioning, pitch); counts what it renders."""

    def __init__(self):
        self.rendered: list[int] = []

    def render_pitches(self, conditioning, pitches):
        self.rendered += list(pitches)
        return np.stack([np.full(N_SAMPLES, conditioning[0] + p, dtype=np.float32) for p in pitches])


@pytest.fixture()
def model(tmp_path):
    folder = tmp_path / "model"
    (folder / "gan").mkdir(parents=True)
    (folder / "gan" / "config.json").write_text('{"class": "GanConfig", "config": {}}')
    (folder / "presets.json").write_text('{"presets": {}}')
    return folder


def test_cached_rows_are_read_back_without_rendering(tmp_path, model):
    source, h = CountingSource(), np.array([0.25, 0.5], dtype=np.float32)
    first = BankCache(tmp_path / "cache", model, N_SAMPLES).rows(source, h, [60, 61])
    again = BankCache(tmp_path / "cache", model, N_SAMPLES).rows(source, h, [61, 62, 60])
    assert source.rendered == [60, 61, 62]
    np.testing.assert_array_equal(first[:, 0], [60.25, 61.25])
    np.testing.assert_array_equal(again[:, 0], [61.25, 62.25, 60.25])
    assert BankCache(tmp_path / "cache", model, N_SAMPLES).rows(source, h + 1, [60])[0, 0] == 61.25
    assert source.rendered[-1] == 60  # another conditioning is another timbre


def test_prepared_rows_are_read_back_per_layout_without_preparing_again(tmp_path, model):
    source, h = CountingSource(), np.array([0.5], dtype=np.float32)
    prepared: list[int] = []

    def prepare(notes, pitches):  # stands for retune + resample + loop
        prepared.extend(pitches)
        return np.zeros((len(pitches), layout.bank_frames), dtype=np.float32) + notes[:, :1] + 0.125

    layout = BankLayout.create(N_SAMPLES * 100, N_SAMPLES * 200, N_SAMPLES * 10)
    cache = BankCache(tmp_path / "cache", model, N_SAMPLES * 10)
    source_rows = lambda conditioning, pitches: np.stack(  # noqa: E731
        [np.full(N_SAMPLES * 10, conditioning[0] + p, dtype=np.float32) for p in pitches])
    source.render_pitches = lambda c, p: (source.rendered.extend(p), source_rows(c, p))[1]
    first = cache.prepared_rows(source, h, [60, 61], layout, prepare)
    again = cache.prepared_rows(source, h, [61, 60, 62], layout, prepare)
    assert first.shape == (2, layout.bank_frames) and again.shape == (3, layout.bank_frames)
    np.testing.assert_array_equal(again[:2, 0], [61.625, 60.625])
    assert prepared == [60, 61, 62] and source.rendered == [60, 61, 62]
    layout = BankLayout.create(N_SAMPLES * 100, N_SAMPLES * 150, N_SAMPLES * 10)  # another device rate
    assert cache.prepared_rows(source, h, [60], layout, prepare).shape == (1, layout.bank_frames)
    assert prepared == [60, 61, 62, 60] and source.rendered == [60, 61, 62]  # prepared again, not rendered


def test_a_changed_model_or_a_damaged_file_renders_again(tmp_path, model):
    source, h = CountingSource(), np.array([0.0], dtype=np.float32)
    cache = BankCache(tmp_path / "cache", model, N_SAMPLES)
    cache.rows(source, h, [60, 61])
    before = model_hash(model)
    (model / "presets.json").write_text('{"presets": {"new": [1.0]}}')
    assert model_hash(model) != before
    BankCache(tmp_path / "cache", model, N_SAMPLES).rows(source, h, [60])
    (note,) = [p for p in cache.folder.rglob("61.npy")]
    note.write_bytes(note.read_bytes()[:40])
    assert cache.rows(source, h, [61])[0, 0] == 61.0
    assert source.rendered == [60, 61, 60, 61]


def test_pruning_drops_the_least_recently_used_timbres_first(tmp_path, model):
    source = CountingSource()
    cache = BankCache(tmp_path / "cache", model, N_SAMPLES)
    for k in range(3):
        cache.rows(source, np.array([float(k)], dtype=np.float32), [60])
    folders = sorted(cache.folder.iterdir(), key=lambda f: f.stat().st_mtime)
    os.utime(folders[0], (1, 1))  # the first timbre was used longest ago
    size = sum(f.stat().st_size for f in folders[0].iterdir())
    cache.prune(max_bytes=2 * size)
    assert not folders[0].exists() and folders[1].exists() and folders[2].exists()


def test_deferred_notes_are_read_from_memory_until_flushed_in_slices(tmp_path, model):
    source, h = CountingSource(), np.array([0.5], dtype=np.float32)
    cache = BankCache(tmp_path / "cache", model, N_SAMPLES, defer_writes=True)
    first = cache.rows(source, h, [60, 61, 62])
    assert cache.pending_writes == 3 and not list(cache.folder.rglob("*.npy"))
    np.testing.assert_array_equal(cache.rows(source, h, [61])[0], first[1])  # from memory
    assert source.rendered == [60, 61, 62]
    cache.flush(max_notes=2)
    assert cache.pending_writes == 1 and len(list(cache.folder.rglob("*.npy"))) == 2
    cache.flush()
    assert cache.pending_writes == 0
    again = BankCache(tmp_path / "cache", model, N_SAMPLES).rows(source, h, [62, 60])
    np.testing.assert_array_equal(again, first[[2, 0]])
    assert source.rendered == [60, 61, 62]  # read back, not rendered

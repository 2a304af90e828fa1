"""The engine's one held-note table (rt_engine.core.held_notes): notes keyed by id, bounded by the
polyphony, read by the sampler voices, the GRU voices and the bank manager's boost."""
import time
import tracemalloc

import numpy as np
import pytest
import torch

from models.gru import GruSynth, GruSynthConfig
from models.gru_stream import stream_weights
from rt_engine.core import held_notes
from rt_engine.core.engine import Engine
from rt_engine.gru.gru_layer import EVENT_CAPACITY, GruLayer
from rt_engine.core.held_notes import HeldNotes, pitch_note_id
from rt_engine.io.midi_map import midi_note_id
from tests.support.static_banks import StaticBanks

RATE = 48_000
BLOCK = 256
TINY = GruSynthConfig(n_layers=1, hidden_size=16, embedding_size=4, conditioning_size=4)


def test_two_notes_at_one_pitch_are_two_entries_and_release_by_id_frees_one():
    table = HeldNotes(8)
    table.press(1, 60.0, 1)
    table.press(2, 60.0, 2)
    assert len(table) == 2 and table.release(1).note_id == 1
    assert 1 not in table and table.get(2).pitch == 60.0 and table.pitches() == [60.0]
    table.press(3, 60.0, 3)
    assert table.release_pitch(60.0, 2) == [2]      # one channel's notes at the pitch
    assert table.release_pitch(60.0, 0) == [3] and len(table) == 0  # slot 0: any channel


def test_the_table_is_bounded_oldest_forgotten_first_and_glides_move_the_pitch_index():
    table = HeldNotes(4)
    forgotten = [table.press(note_id, 40.0 + note_id, 0) for note_id in range(10)]
    assert [ids for ids in forgotten if ids] == [[0], [1], [2], [3], [4], [5]]
    assert table.pitches() == [46.0, 47.0, 48.0, 49.0] and table.newest().note_id == 9
    table.press(7, 70.0, 0)  # a re-strike moves the id to the newest, forgetting nothing
    assert table.pitches() == [46.0, 48.0, 49.0, 70.0] and table.newest().note_id == 7
    table.set_pitch(8, 72.0)
    assert table.release_pitch(48.0, 0) == [] and table.release_pitch(72.0, 0) == [8]
    assert table.resize(1) == [6, 9] and table.pitches() == [70.0]
    with pytest.raises(ValueError, match="capacity"):
        table.resize(0)


def test_derived_ids_are_negative_and_distinct_per_channel_and_pitch():
    ids = {pitch_note_id(slot, pitch) for slot in range(17) for pitch in (0.0, 60.0, 60.5, 127.0)}
    assert len(ids) == 17 * 4 and max(ids) < 0


def _engine(**options):
    t = np.arange(8000) / 16000
    rows = np.stack([0.9 * np.sin(2 * np.pi * 440.0 * 2 ** ((p - 69) / 12) * t) for p in (48, 60, 72)])
    torch.manual_seed(0)
    layer = GruLayer(stream_weights(GruSynth(TINY), "int8"), 16000, threaded=False, temperature=0.0,
                     voices=4)
    engine = Engine(StaticBanks(rows.astype(np.float32), [48, 60, 72], 16000, RATE), RATE,
                    max_block=BLOCK, stream_layer=layer, gru_gain=0.3, **options)
    return engine, layer


def _render(engine, layer, n_blocks):
    out = []
    for _ in range(n_blocks):
        layer.render_available()
        out.append(engine.process(BLOCK).copy())
    return np.concatenate(out, axis=1)


def test_releasing_one_of_two_same_pitch_mpe_notes_leaves_exactly_the_other_in_both_layers():
    """Two notes at MIDI 60 on MPE channels 0 and 1 sound twice one note (both layers: identical sampler
    voices and argmax GRU voices); releasing channel 0's leaves exactly channel 1's note alone."""
    onset, release = 1000, RATE // 4
    both, both_layer = _engine()
    alone, alone_layer = _engine()
    for channel in (0, 1):
        both.note_on(60, 40, note_id=midi_note_id(channel, 60), channel=channel, at_frame=onset)
    alone.note_on(60, 40, note_id=midi_note_id(1, 60), channel=1, at_frame=onset)
    both.note_off(note_id=midi_note_id(0, 60), channel=0, at_frame=release)
    n_blocks = RATE // BLOCK
    out_both, out_alone = _render(both, both_layer, n_blocks), _render(alone, alone_layer, n_blocks)
    held = slice(onset + RATE // 20, release)
    np.testing.assert_allclose(out_both[:, held], 2 * out_alone[:, held], atol=2e-6)
    settled = slice(release + RATE // 2, None)  # after the 0.25 s release (sampler) and 0.08 s (GRU)
    np.testing.assert_array_equal(out_both[:, settled], out_alone[:, settled])
    assert np.sqrt(np.mean(out_alone[:, settled] ** 2)) > 1e-3
    assert both.status()["voices"] == 1 and both_layer.snapshot()["held"] == [60.0]
    assert both_layer.snapshot()["sounding_voices"] == 1
    both.note_off(note_id=midi_note_id(1, 60), channel=1)
    _render(both, both_layer, RATE // BLOCK)
    assert both.status()["voices"] == 0 and not both_layer.is_active()


def test_ten_thousand_note_ids_cost_constant_time_and_bounded_memory():
    """The hostile client of issue 12: 10,000 held ids (and 3,000 more). Each note-on costs the same at
    the end as at the start, the table stays within the polyphony (64 notes) and its memory does not
    grow; releasing them all is quick."""
    engine, layer = _engine(n_voices=64)
    most_requested = [0]  # the most held pitches the bank manager's boost was handed

    def note_requested(pitch, held):
        most_requested[0] = max(most_requested[0], len(held))

    engine.banks.note_requested = note_requested
    per_note_s = []
    for start in range(0, 10_000, 1000):
        spent = 0.0
        for note_id in range(start, start + 1000):
            t0 = time.perf_counter()
            engine.note_on(36 + note_id % 48, 100, note_id=note_id)
            spent += time.perf_counter() - t0
            if note_id % 64 == 63:  # the callback's blocks, as a live server renders them meanwhile
                _render(engine, layer, 1)
        per_note_s.append(spent / 1000)
    assert len(engine._held) == 64 and most_requested[0] == 48  # distinct pitches of 64 notes
    table_bytes = []
    tracemalloc.start()
    for start in range(10_000, 13_000, 1000):
        for note_id in range(start, start + 1000):
            engine.note_on(36 + note_id % 48, 100, note_id=note_id)
        table_bytes.append(sum(stat.size for stat in tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, held_notes.__file__)]).statistics("filename")))
        _render(engine, layer, 1)
    tracemalloc.stop()
    release_s = 0.0
    for note_id in range(13_000):
        t0 = time.perf_counter()
        engine.note_off(note_id=note_id)
        release_s += time.perf_counter() - t0
        if note_id % 64 == 63:
            _render(engine, layer, 1)
    print(f"note-on s per 1000: {np.round(np.array(per_note_s) * 1e6, 1)} us; note-offs "
          f"{release_s:.3f} s (13,000); table bytes {table_bytes}")
    assert len(layer._events) + len(layer._pending) <= 2 * EVENT_CAPACITY
    assert np.median(per_note_s[-3:]) < 3 * np.median(per_note_s[1:4]) + 20e-6, per_note_s
    assert max(per_note_s[1:]) < 200e-6 and release_s < 1.0, (per_note_s, release_s)  # 1st: warm-up
    assert max(table_bytes) - min(table_bytes) < 1024 and max(table_bytes) < 64 * 1024, table_bytes
    _render(engine, layer, RATE // BLOCK)
    assert len(engine._held) == 0 and engine.status()["voices"] == 0

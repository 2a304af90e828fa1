"""The GRU stream layer with a tiny random model: timing, ring protocol, voice behaviour."""
import time

import numpy as np
import pytest
import torch

from models.gru import GruSynth, GruSynthConfig, save_gru
from models.gru_stream import stream_weights
from rt_engine.gru_layer import N_CONTROL, GruLayer, control_block, control_block_reference

RATE = 48000
TINY = GruSynthConfig(n_layers=1, hidden_size=16, embedding_size=4, conditioning_size=4)


def _weights(seed=0):
    torch.manual_seed(seed)
    return stream_weights(GruSynth(TINY), "int8")


def _layer(**options):
    ring, positions = np.zeros(8192, np.float32), np.zeros(2, np.int64)
    layer = GruLayer(_weights(), 16000, **options)
    layer.prepare(RATE, ring, positions)
    return layer, ring, positions


def _consume(layer, ring, positions, n_frames, block_sizes=(256,)):
    """Play the audio callback's part: read blocks from the ring after letting the layer render."""
    out, index, capacity = [], 0, ring.shape[0]
    while sum(part.shape[0] for part in out) < n_frames:
        layer.render_available()
        written, read = int(positions[0]), int(positions[1])
        assert 0 <= written - read <= capacity
        take = min(block_sizes[index % len(block_sizes)], written - read)
        out.append(ring[(read + np.arange(take)) % capacity].copy())
        positions[1] = read + take
        index += 1
    return np.concatenate(out)[:n_frames]


def test_control_kernel_equals_its_reference():
    rng = np.random.default_rng(0)
    control = rng.uniform(0, 1, N_CONTROL)
    control[[2, 6, 10]] = [40.0, 3.0, 0.0]
    expected_control = control.copy()
    conditioning, expected_conditioning = np.zeros((64, 3), np.float32), np.zeros((64, 3), np.float32)
    envelope, expected_envelope = np.zeros(64, np.float32), np.zeros(64, np.float32)
    control_block(control, conditioning, envelope)
    control_block_reference(expected_control, expected_conditioning, expected_envelope)
    np.testing.assert_allclose(control, expected_control, rtol=1e-12)
    np.testing.assert_allclose(conditioning, expected_conditioning, rtol=1e-6)
    np.testing.assert_allclose(envelope, expected_envelope, rtol=1e-6)


def test_a_note_event_lands_on_its_frame():
    outputs = {}
    for onset in (3000, 3030):
        layer, ring, positions = _layer()
        layer.note_on(60.0, 100.0, at_frame=onset)
        outputs[onset] = _consume(layer, ring, positions, 9000)
    delay_frames = 16 * 3  # the resampler's 16-sample delay at 16 -> 48 kHz
    assert not outputs[3000][:3000 - delay_frames].any()
    assert outputs[3000][3000 - delay_frames:3000 + delay_frames].any()
    np.testing.assert_array_equal(outputs[3030][3030:], outputs[3000][3000:-30])
    assert not outputs[3030][:3030 - delay_frames].any()


def test_output_does_not_depend_on_how_the_callback_reads_the_ring():
    streams = []
    for block_sizes in ((256,), (64, 1000, 3, 517)):
        layer, ring, positions = _layer()
        layer.note_on(62.0, 90.0, at_frame=500)
        layer.timbre_xy(0.9, 0.1, 0.05, at_frame=2000)
        layer.note_off(62.0, at_frame=6000)
        streams.append(_consume(layer, ring, positions, 12000, block_sizes))
    np.testing.assert_array_equal(streams[0], streams[1])


def test_the_layer_renders_no_further_ahead_than_declared():
    layer, ring, positions = _layer()
    layer.render_available(max_blocks=1000)
    assert layer.ahead_frames <= positions[0] - positions[1] < layer.ahead_frames + layer.latency_frames
    written = int(positions[0])
    layer.render_available()
    assert positions[0] == written


def test_a_held_note_sustains_and_release_ends_in_silence():
    layer, ring, positions = _layer(release_s=0.05)
    layer.note_on(60.0, 127.0, at_frame=0)
    layer.note_off(60.0, at_frame=RATE)
    out = _consume(layer, ring, positions, 2 * RATE)
    held = out[2400:RATE].reshape(-1, 2400)
    assert np.all(np.sqrt(np.mean(held ** 2, axis=1)) > 1e-3)
    tail = RATE + int(0.05 * RATE) + 2 * 48 + 3
    assert not out[tail:].any() and not layer.is_active()


def test_last_note_priority_with_portamento_and_fall_back():
    layer, ring, positions = _layer()
    layer.set_glide(0.1)
    layer.note_on(60.0, 100.0, at_frame=0)
    layer.note_on(64.0, 100.0, at_frame=RATE // 10)
    _consume(layer, ring, positions, RATE // 10 + RATE // 20)
    glide_start = RATE // 10 // 3 - 16  # model sample of the second note: frame / 3 - resampler delay
    progress = (layer.snapshot()["rendered_samples"] - glide_start) / 1600
    assert 0 < progress < 1
    assert layer.snapshot()["pitch"] == pytest.approx(60.0 + 4.0 * progress, abs=1e-6)
    _consume(layer, ring, positions, RATE // 10)
    assert layer.snapshot()["pitch"] == 64.0 and layer.snapshot()["held"] == [60.0, 64.0]
    layer.note_off(64.0)
    _consume(layer, ring, positions, RATE // 4)
    assert layer.snapshot()["pitch"] == 60.0 and layer.is_active()


def test_note_pitch_timbre_and_bend_glide_to_their_targets():
    layer, ring, positions = _layer()
    layer.note_on(60.0, 100.0)
    layer.note_pitch(72.0, 0.2)
    layer.timbre_xy(1.0, 0.0, 0.2)
    layer.pitch_bend(2.0)
    _consume(layer, ring, positions, RATE // 10)
    snapshot = layer.snapshot()
    assert 64.0 < snapshot["pitch"] < 68.5 and 0.5 < snapshot["x"] < 0.8 and 0.2 < snapshot["y"] < 0.5
    assert snapshot["bend"] == pytest.approx(2.0, abs=1e-3)
    _consume(layer, ring, positions, RATE // 5)
    snapshot = layer.snapshot()
    assert (snapshot["pitch"], snapshot["x"], snapshot["y"]) == (72.0, 1.0, 0.0)


def test_panic_silences_within_a_few_milliseconds():
    layer, ring, positions = _layer(release_s=1.0)
    layer.note_on(60.0, 127.0)
    _consume(layer, ring, positions, 4800)
    layer.panic()
    out = _consume(layer, ring, positions, RATE // 2)
    last_sound = np.nonzero(out)[0].max()
    assert last_sound < layer.latency_frames + int(0.005 * RATE) + 2 * 48 + 3
    assert not layer.is_active()


def test_worker_thread_fills_the_ring_and_stops(tmp_path):
    torch.manual_seed(1)
    save_gru(tmp_path / "gru", GruSynth(TINY))
    layer = GruLayer.from_dir(tmp_path / "gru")
    ring, positions = np.zeros(8192, np.float32), np.zeros(2, np.int64)
    layer.start(RATE, ring, positions)
    layer.note_on(60.0, 100.0)
    deadline = time.monotonic() + 10.0
    while positions[0] < layer.ahead_frames and time.monotonic() < deadline:
        time.sleep(0.01)
    layer.stop()
    assert positions[0] >= layer.ahead_frames and layer._thread is None


def test_a_ring_smaller_than_the_render_ahead_is_rejected():
    layer = GruLayer(_weights(), 16000)
    with pytest.raises(ValueError, match="ring"):
        layer.prepare(RATE, np.zeros(100, np.float32), np.zeros(2, np.int64))


def test_an_unthreaded_layer_renders_only_when_asked():
    layer = GruLayer(_weights(), 16000, threaded=False)
    ring, positions = np.zeros(8192, np.float32), np.zeros(2, np.int64)
    layer.start(RATE, ring, positions)
    time.sleep(0.05)
    assert positions[0] == 0
    assert layer.render_available() >= layer.ahead_frames
    layer.stop()


def test_a_full_event_queue_counts_and_drops_instead_of_blocking():
    from rt_engine.gru_layer import EVENT_CAPACITY

    layer = GruLayer(_weights(), 16000, threaded=False)
    for _ in range(EVENT_CAPACITY + 5):
        layer.pitch_bend(0.5)
    assert layer.dropped_events == 5

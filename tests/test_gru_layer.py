"""The GRU stream layer with a tiny random model: timing, ring protocol, voice behaviour."""
import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from models.gru import GruSynth, GruSynthConfig, save_gru
from models.gru_stream import copy_state, stream_weights
from rt_engine.gru.gru_layer import (EVENT_CAPACITY, FADE_S, MAX_VOICES, MUTE_TAIL_S, N_CONTROL, WAKE_S, GruLayer,
                                 control_block, control_block_reference)
from rt_engine.gru.gru_voices import C_BEND, C_PITCH

RATE = 48000
TINY = GruSynthConfig(n_layers=1, hidden_size=16, embedding_size=4, conditioning_size=4)
DEFAULT_GRU = Path(__file__).resolve().parents[1] / "models" / "pretrained" / "default" / "gru"


def _weights(seed=0):
    torch.manual_seed(seed)
    return stream_weights(GruSynth(TINY), "int8")


def _layer(**options):
    ring, positions = np.zeros(8192, np.float32), np.zeros(2, np.int64)
    layer = GruLayer(_weights(), 16000, **{"voices": 1, "threaded": False, **options})  # driven by the test
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
        layer.note_on(60, 60.0, 100.0, at_frame=onset)
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
        layer.note_on(62, 62.0, 90.0, at_frame=500)
        layer.timbre_xy(0.9, 0.1, 0.05, at_frame=2000)
        layer.note_off(62, at_frame=6000)
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
    layer.note_on(60, 60.0, 127.0, at_frame=0)
    layer.note_off(60, at_frame=RATE)
    out = _consume(layer, ring, positions, 2 * RATE)
    held = out[2400:RATE].reshape(-1, 2400)
    assert np.all(np.sqrt(np.mean(held ** 2, axis=1)) > 1e-3)
    tail = RATE + int(0.05 * RATE) + 2 * 48 + 3
    assert not out[tail:].any() and not layer.is_active()


def test_last_note_priority_with_portamento_and_fall_back():
    layer, ring, positions = _layer()
    layer.set_glide(0.1)
    layer.note_on(60, 60.0, 100.0, at_frame=0)
    layer.note_on(64, 64.0, 100.0, at_frame=RATE // 10)
    _consume(layer, ring, positions, RATE // 10 + RATE // 20)
    glide_start = RATE // 10 // 3 - 16  # model sample of the second note: frame / 3 - resampler delay
    progress = (layer.snapshot()["rendered_samples"] - glide_start) / 1600
    assert 0 < progress < 1
    assert layer.snapshot()["pitch"] == pytest.approx(60.0 + 4.0 * progress, abs=1e-6)
    _consume(layer, ring, positions, RATE // 10)
    assert layer.snapshot()["pitch"] == 64.0 and layer.snapshot()["held"] == [64.0]
    layer.note_off(64, fallback=(60, 60.0, -1))  # the engine's table names the newest note still held
    _consume(layer, ring, positions, RATE // 4)
    assert layer.snapshot()["pitch"] == 60.0 and layer.is_active()


def test_note_pitch_timbre_and_bend_glide_to_their_targets():
    layer, ring, positions = _layer()
    layer.note_on(60, 60.0, 100.0)
    layer.note_pitch(60, 72.0, 0.2)
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
    layer.note_on(60, 60.0, 127.0)
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
    layer.note_on(60, 60.0, 100.0)
    deadline = time.monotonic() + 10.0
    while positions[0] < layer.ahead_frames and time.monotonic() < deadline:
        time.sleep(0.01)
    layer.stop()
    assert positions[0] >= layer.ahead_frames and layer._thread is None


def test_the_worker_sleeps_until_the_ring_is_half_a_block_short_of_the_render_ahead():
    layer, _, positions = _layer()
    half_block = layer._frames.shape[0] // 2
    for fill, expected_s in [(layer.ahead_frames + 96, (96 + half_block) / RATE),
                             (layer.ahead_frames - half_block, WAKE_S[0]), (0, WAKE_S[0]),
                             (layer.ahead_frames + RATE, WAKE_S[1])]:
        positions[:] = (10_000 + fill, 10_000)
        assert layer.wait_s() == pytest.approx(expected_s)


def test_the_worker_wakes_about_once_per_block_while_the_callback_drains_the_ring(tmp_path):
    """A consumer taking 128-frame periods at real time for 1 s, a note held: the ring never runs
    dry and the worker wakes at most 1.6 times per block it renders (a worker polling every quarter
    block wakes about 3.5 times). On an idle machine the ring stays above the overload mark; with
    other jobs on the cores the worker may be scheduled late enough to dip below it, which is the
    overload behaviour's own test (`test_behind_real_time_the_worker_sheds_...`)."""
    torch.manual_seed(1)
    save_gru(tmp_path / "gru", GruSynth(TINY))
    layer = GruLayer.from_dir(tmp_path / "gru")
    ring, positions = np.zeros(8192, np.float32), np.zeros(2, np.int64)
    wakes, lowest = [0], [np.inf]
    wait_s = layer.wait_s

    def counted_wait_s():
        wakes[0] += 1
        return wait_s()

    layer.wait_s = counted_wait_s
    layer.start(RATE, ring, positions)
    layer.note_on(60, 60.0, 100.0)
    period_s, started = 128 / RATE, time.perf_counter()
    for period in range(int(1.0 / period_s)):
        time.sleep(max(started + (period + 1) * period_s - time.perf_counter(), 0.0))
        if period > 10:
            lowest[0] = min(lowest[0], int(positions[0] - positions[1]))
        positions[1] = min(int(positions[1]) + 128, int(positions[0]))
    seconds = time.perf_counter() - started
    layer.stop()
    blocks_per_s = layer.model_rate_hz / layer.block_samples
    assert layer.shed_voices == 0 and lowest[0] > 0
    assert wakes[0] / seconds <= 1.6 * blocks_per_s


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
    from rt_engine.gru.gru_layer import EVENT_CAPACITY

    layer = GruLayer(_weights(), 16000, threaded=False)
    for _ in range(EVENT_CAPACITY + 5):
        layer.pitch_bend(0.5)
    assert layer.dropped_events == 5


def test_a_temperature_event_switches_to_the_argmax_chain_at_its_sample(monkeypatch):
    import rt_engine.gru.gru_layer as gru_layer_module
    from models.gru_stream import gru_stream_sample, new_state

    layer, ring, positions = _layer(temperature=1.0)
    segments = []

    def recording_kernel(weights, state, conditioning, control_interval, temperature, out_mu):
        gru_stream_sample(weights, state, conditioning, control_interval, temperature, out_mu)
        if state is layer._voices[0].gru:
            segments.append((np.full(out_mu.shape[0], temperature), conditioning.copy(), out_mu.copy()))

    monkeypatch.setattr(gru_layer_module, "gru_stream_sample", recording_kernel)
    delay = layer._resampler.delay_input_samples
    switch, n_samples = 1001, 2000  # model samples; frame = 3 * (sample + resampler delay) at 16 -> 48 kHz
    layer.note_on(60, 60.0, 100.0, at_frame=3 * delay)
    layer.set_temperature(0.0, at_frame=3 * (switch + delay))
    _consume(layer, ring, positions, 3 * n_samples)
    temperatures, conditioning, mu = (np.concatenate(parts)[:n_samples] for parts in zip(*segments))
    assert layer.late_events == 0 and layer.snapshot()["temperature"] == 0.0
    np.testing.assert_array_equal(temperatures, np.where(np.arange(n_samples) < switch, 1.0, 0.0))
    np.testing.assert_array_equal(conditioning, np.tile(np.float32([0.5, 0.5, 60.0]), (n_samples, 1)))

    weights, interval = layer.weights, layer.control_interval
    state = new_state(weights, seed=0)
    expected = np.zeros(n_samples, np.int64)
    gru_stream_sample(weights, state, conditioning[:switch], interval, 1.0, expected[:switch])
    sampled_on = copy_state(state)
    gru_stream_sample(weights, state, conditioning[switch:], interval, 0.0, expected[switch:])
    np.testing.assert_array_equal(mu, expected)
    # the oracle can tell the temperatures apart: sampling on (or argmax from the start) differs
    kept = np.zeros(n_samples - switch, np.int64)
    gru_stream_sample(weights, sampled_on, conditioning[switch:], interval, 1.0, kept)
    argmax_from_start = np.zeros(switch, np.int64)
    gru_stream_sample(weights, new_state(weights), conditioning[:switch], interval, 0.0, argmax_from_start)
    assert (kept != mu[switch:]).mean() > 0.5 and (argmax_from_start != mu[:switch]).mean() > 0.5


def test_a_negative_or_nan_temperature_is_rejected():
    layer = GruLayer(_weights(), 16000, threaded=False)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            layer.set_temperature(bad)


class _TemperatureLayer:
    """The part of a StreamLayer the engine's GRU temperature path uses, recording the calls."""

    latency_frames = 512

    def __init__(self):
        self.calls = []
        self.follower = None

    def start(self, sample_rate, ring, positions, events=None):
        self.follower = events

    def follow_events(self):
        from rt_engine.core.layer_api import apply_event

        for record in self.follower.drain():
            apply_event(self, record)

    def stop(self):
        pass

    def is_active(self):
        return False

    def set_temperature(self, temperature, at_frame=None):
        self.calls.append((temperature, at_frame))

    def set_mix_gain(self, gain, at_frame=None):
        pass

    def set_voices(self, n_voices):
        self.calls.append(("voices", n_voices))


def test_the_engine_delays_gru_temperature_by_the_layers_declared_latency():
    from tests.support.static_banks import StaticBanks
    from rt_engine.core.engine import Engine

    rows = np.sin(np.arange(4000) * 0.05)[None].astype(np.float32)
    layer = _TemperatureLayer()
    engine = Engine(StaticBanks(rows, [60], 16000, RATE), RATE, max_block=256, stream_layer=layer)
    assert engine.gru_temperature(0.25, at_frame=1000) and engine.gru_temperature(2.0)
    layer.follow_events()
    assert layer.calls == [(0.25, 1000 + 512), (2.0, engine.frame + engine.block + 512)]
    assert engine.gru_voices(3) and layer.calls[-1] == ("voices", 3)
    engine.close()


def test_at_mix_gain_zero_the_gru_is_not_computed_and_runs_out_its_tail():
    layer, ring, positions = _layer()
    layer.set_mix_gain(0.0, at_frame=0)
    layer.note_on(60, 60.0, 100.0, at_frame=0)
    out = _consume(layer, ring, positions, RATE // 4)
    assert layer.snapshot()["computed_samples"] == 0 and not out.any() and layer.is_active()
    layer.set_mix_gain(1.0, at_frame=RATE // 2)
    layer.set_mix_gain(0.0, at_frame=RATE)
    _consume(layer, ring, positions, 2 * RATE)
    tail_samples = int(round(MUTE_TAIL_S * 16000))
    computed = layer.snapshot()["computed_samples"]  # the tail ends at the end of its block
    assert 16000 // 2 + tail_samples <= computed < 16000 // 2 + tail_samples + layer.block_samples


def test_raising_the_mix_gain_restarts_a_held_note_as_from_silence():
    """A note held while muted, unmuted at frame F, sounds as the same note started at F (argmax, no attack)."""
    unmute = 3 * 4800
    muted, ring, positions = _layer(temperature=0.0, attack_s=0.0)
    muted.set_mix_gain(0.0, at_frame=0)
    muted.note_on(60, 60.0, 100.0, at_frame=0)
    muted.set_mix_gain(1.0, at_frame=unmute)
    resumed = _consume(muted, ring, positions, RATE // 2)
    fresh, ring, positions = _layer(temperature=0.0, attack_s=0.0)
    fresh.note_on(60, 60.0, 100.0, at_frame=unmute)
    started = _consume(fresh, ring, positions, RATE // 2)
    delay_frames = 16 * 3
    assert not resumed[:unmute - delay_frames].any()
    assert np.sqrt(np.mean(resumed[unmute + 4800:] ** 2)) > 1e-3
    np.testing.assert_allclose(resumed[unmute + delay_frames:], started[unmute + delay_frames:], atol=1e-6)


def test_pending_events_are_bounded_and_applied_in_time_order():
    layer, ring, positions = _layer()
    layer.note_on(60, 60.0, 100.0, at_frame=0)
    for k in range(600):  # dated pitch events arriving newest first: the latest date (k = 0) wins
        layer.note_pitch(60, 60.0 + k % 12, 0.0, at_frame=9600 - 3 * k)
    _consume(layer, ring, positions, 12000)
    assert layer.snapshot()["pitch"] == 60.0 and layer.dropped_events == 0
    for _ in range(3):  # a flood dated far ahead: the heap holds EVENT_CAPACITY, the rest is counted
        for k in range(EVENT_CAPACITY):
            layer.note_pitch(60, 72.0, 0.0, at_frame=100 * RATE + k)
        _consume(layer, ring, positions, 256)
    assert len(layer._pending) == EVENT_CAPACITY and layer.dropped_events == 2 * EVENT_CAPACITY


def test_a_fifth_note_on_four_voices_steals_the_oldest():
    layer, ring, positions = _layer(voices=4)
    for k, pitch in enumerate((60.0, 62.0, 64.0, 65.0, 67.0)):
        layer.note_on(int(pitch), pitch, 100.0, at_frame=480 * k)
    _consume(layer, ring, positions, 4800)
    snapshot = layer.snapshot()
    assert snapshot["held"] == [62.0, 64.0, 65.0, 67.0] and snapshot["steals"] == 1
    assert snapshot["sounding_voices"] == 4 and snapshot["pitch"] == 67.0
    layer.note_off(64)
    layer.note_on(69, 69.0, 100.0)  # takes the released voice, not a held one
    _consume(layer, ring, positions, 4800)
    assert layer.snapshot()["held"] == [62.0, 65.0, 67.0, 69.0] and layer.snapshot()["steals"] == 1
    for pitch in (62.0, 65.0, 67.0, 69.0):
        layer.note_off(int(pitch))
    _consume(layer, ring, positions, RATE // 2)
    assert not layer.is_active() and layer.snapshot()["sounding_voices"] == 0


def test_one_voice_retriggers_or_glides_by_the_legato_mode():
    for legato in (True, False):
        layer, ring, positions = _layer(voices=1, legato=legato, attack_s=0.05)
        layer.set_glide(0.1)
        layer.note_on(60, 60.0, 127.0, at_frame=0)
        layer.note_on(64, 64.0, 127.0, at_frame=RATE // 5)
        _consume(layer, ring, positions, RATE // 5 + 480)
        snapshot = layer.snapshot()
        if legato:
            assert 60.0 < snapshot["pitch"] < 64.0 and snapshot["envelope"] == 1.0
        else:  # at once, from a fresh state and a new attack
            assert snapshot["pitch"] == 64.0 and snapshot["envelope"] < 1.0


def test_voice_count_is_bounded_and_changes_live():
    with pytest.raises(ValueError, match="voices"):
        _layer(voices=0)
    layer, ring, positions = _layer(voices=2)
    with pytest.raises(ValueError, match="voices"):
        layer.set_voices(MAX_VOICES + 1)
    layer.note_on(60, 60.0, 100.0)
    layer.set_voices(3)
    _consume(layer, ring, positions, RATE // 2)
    assert layer.n_voices == 3 and not layer.is_active()


@pytest.mark.skipif(not (DEFAULT_GRU / "config.json").is_file(), reason="needs the shipped GRU")
@pytest.mark.parametrize("voices", [4, 1])
def test_a_three_note_chord_sounds_its_three_pitches(voices):
    ring, positions = np.zeros(8192, np.float32), np.zeros(2, np.int64)
    layer = GruLayer.from_dir(DEFAULT_GRU, temperature=0.0, voices=voices)
    layer.prepare(RATE, ring, positions)
    chord = (48.0, 52.0, 55.0)
    for pitch in chord:
        layer.note_on(int(pitch), pitch, 100.0, at_frame=0)
    out = _consume(layer, ring, positions, RATE)[RATE // 4:]
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    hz = np.fft.rfftfreq(out.size, 1.0 / RATE)

    def peak(midi):  # strongest bin within a quarter tone of the note's fundamental
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        return spectrum[(hz > f0 * 2 ** (-0.5 / 12)) & (hz < f0 * 2 ** (0.5 / 12))].max()

    floor = np.median(spectrum[(hz > 100) & (hz < 250)])
    sounding = [peak(midi) > 30 * floor for midi in chord]
    assert sounding == ([True] * 3 if voices > 1 else [False, False, True])  # one voice: the last note


def test_the_osc_voice_bound_is_the_layers():
    from rt_engine.osc.osc_registry import MAX_GRU_VOICES

    assert MAX_GRU_VOICES == MAX_VOICES


@pytest.mark.skipif(not (DEFAULT_GRU / "config.json").is_file(), reason="needs the shipped GRU")
@pytest.mark.parametrize("voices", [1, 2])  # 1: retrigger mode; 2: a third note steals the oldest
def test_a_steal_or_retrigger_fades_the_cut_note_instead_of_clicking(voices):
    """The largest sample-to-sample step within 10 ms of each of 8 steals (at different phases) stays
    within 1.3x the largest step of the steady notes elsewhere; a hard cut of the old note (the layer
    without its tail fade) jumps 2.5-2.8x on the shipped GRU."""
    ring, positions = np.zeros(8192, np.float32), np.zeros(2, np.int64)
    layer = GruLayer.from_dir(DEFAULT_GRU, temperature=0.0, voices=voices, legato=False)
    layer.prepare(RATE, ring, positions)
    for note_id, pitch in enumerate((48.0, 55.0)[:voices]):
        layer.note_on(note_id, pitch, 127.0, at_frame=0)
    steals = [RATE // 4 + k * (RATE // 8 + 37) for k in range(8)]
    for k, frame in enumerate(steals):
        layer.note_on(10 + k, (52.0, 48.0)[k % 2], 127.0, at_frame=frame)
    step = np.abs(np.diff(_consume(layer, ring, positions, RATE // 4 + 9 * (RATE // 8))))
    near = np.zeros(step.size, bool)
    near[:RATE // 10] = True  # the first attack
    for frame in steals:
        near[frame - 100:frame + 500] = True
    steady, at_steal = step[~near].max(), max(step[frame - 100:frame + 500].max() for frame in steals)
    assert layer.steals == (8 if voices > 1 else 0) and steady > 1e-3
    assert at_steal < 1.3 * steady, (at_steal, steady)
    assert FADE_S * RATE < 500 - 100  # the fade ends inside the measured window


def _stop_progress_monitor() -> None:
    """An earlier test's progress bar leaves tqdm's monitor thread in this process, waking every 10 s and
    making a lock each time; stop it so that only the audio path's objects are counted."""
    import tqdm

    tqdm.tqdm.monitor_interval = 0
    if tqdm.tqdm.monitor is not None:
        tqdm.tqdm.monitor.exit()
        tqdm.tqdm.monitor = None


def test_the_audio_path_in_steady_state_leaves_no_python_objects_behind():
    """600 blocks of the engine's callback plus the GRU worker's renders (4 voices sounding, the timbre
    gliding) leave no new container object (what the garbage collector tracks and scans) behind, so the
    collector never gets work from the audio path (`serve` freezes what start-up made with gc.freeze)."""
    from tests.support.static_banks import StaticBanks
    from rt_engine.core.engine import Engine

    rows = np.sin(np.arange(4000) * 0.05)[None].astype(np.float32)
    ring, positions = np.zeros(16384, np.float32), np.zeros(2, np.int64)
    layer = GruLayer(_weights(), 16000, threaded=False, voices=4)
    engine = Engine(StaticBanks(rows, [60], 16000, RATE), RATE, max_block=256, stream_layer=layer, gru_gain=1.0)

    def blocks(n_blocks):
        for _ in range(n_blocks):
            layer.render_available()
            engine.process(256)

    for note_id, pitch in enumerate((48.0, 52.0, 55.0, 60.0)):
        engine.note_on(pitch, 100.0, note_id=note_id)
    engine.timbre_xy(0.9, 0.1, 30.0)
    blocks(300)  # warm-up: kernels loaded, caches filled
    _stop_progress_monitor()
    gc.collect()
    gc.disable()
    try:
        before = {id(thing) for thing in gc.get_objects()}
        blocks(600)
        after = gc.get_objects()
        new = [thing for thing in after if id(thing) not in before and thing is not before]
    finally:
        gc.enable()
    assert layer.snapshot()["sounding_voices"] == 4 and layer.computed_samples > 4 * 12000
    threads = [thread.name for thread in threading.enumerate()]
    assert len(new) <= 1, ([type(thing).__name__ for thing in new][:20], threads)  # the set `before` itself
    engine.close()


def test_each_note_follows_its_own_channels_bend():
    """MPE: two notes at MIDI 60 on channels 0 and 1; channel 1 bends +2 and only its note's conditioning
    moves; a note started later on channel 1 starts at the bend; channel -1 bends them all."""
    layer, ring, positions = _layer(voices=4)
    layer.note_on(1, 60.0, 100.0, channel=0)
    layer.note_on(2, 60.0, 100.0, channel=1)
    layer.pitch_bend(2.0, channel=1)
    _consume(layer, ring, positions, RATE // 10)
    pitch = {voice.note_id: voice.control[C_PITCH] + voice.control[C_BEND] for voice in layer._voices if voice.held}
    assert pitch[1] == 60.0 and pitch[2] == pytest.approx(62.0, abs=1e-6)
    layer.note_on(3, 64.0, 100.0, channel=1)
    _consume(layer, ring, positions, 480)
    newest = layer.snapshot()
    assert (newest["pitch"], newest["bend"]) == (64.0, 2.0)  # no glide up from 0 at its onset
    layer.pitch_bend(-1.0)
    _consume(layer, ring, positions, RATE // 10)
    assert all(voice.control[C_BEND] == pytest.approx(-1.0, abs=1e-6) for voice in layer._voices if voice.held)


@pytest.mark.parametrize("threaded", [True, False])
def test_behind_real_time_the_worker_sheds_tails_and_released_voices_but_offline_never(threaded):
    """A worker that finds the ring under half its render-ahead stops the released voices and cuts
    the block's steals instead of fading them on a tail; held notes play on. Offline rendering (no
    deadline) never sheds."""
    layer, ring, positions = _layer(voices=3, threaded=threaded, release_s=1.0)
    for k, pitch in enumerate((60.0, 62.0, 64.0)):
        layer.note_on(int(pitch), pitch, 100.0, at_frame=480 * k)
    _consume(layer, ring, positions, 4800)
    layer.note_off(62)                        # released: would sound on for its 1 s release
    _consume(layer, ring, positions, 2400)
    sounding = lambda voices: sum(bool(voice.sounding()) for voice in voices)
    assert sounding(layer._voices) == 3
    positions[1] = positions[0]               # the callback drained the ring: the worker is behind
    layer.note_on(65, 65.0, 100.0)            # takes the released note's voice
    layer.note_on(67, 67.0, 100.0)            # a steal of the oldest held note (60)
    layer.render_available(max_blocks=1)
    held = sorted(voice.control[C_PITCH] for voice in layer._voices if voice.held)
    assert held == [64.0, 65.0, 67.0] and layer.steals == 1
    if threaded:
        assert layer.snapshot()["shed_voices"] == 2   # the released note and the stolen one
        assert all(tail.order == 0 for tail in layer._tails)     # no tail took the stolen note
    else:
        assert layer.shed_voices == 0 and any(tail.order > 0 for tail in layer._tails)


def test_through_the_engine_a_pitch_release_falls_back_and_a_channel_release_ends_the_notes():
    """The layer follows the engine's event stream: notes without ids, released by pitch, reach the
    GRU voice with the fall-back the engine's held-note table names; all-notes-off ends them."""
    from tests.support.static_banks import StaticBanks
    from rt_engine.core.engine import Engine

    rows = np.sin(np.arange(4000) * 0.05)[None].astype(np.float32)
    layer = GruLayer(_weights(), 16000, threaded=False, voices=1, temperature=0.0)
    engine = Engine(StaticBanks(rows, [60], 16000, RATE), RATE, max_block=256, stream_layer=layer, gru_gain=1.0)

    def play(seconds):
        for _ in range(int(seconds * RATE) // 256):
            layer.render_available()
            engine.process(256)

    engine.note_on(60.0, 100.0)
    engine.note_on(64.0, 100.0)
    play(0.1)
    assert layer.snapshot()["held"] == [64.0]
    engine.note_off(pitch=64.0)
    play(0.1)
    assert layer.snapshot()["pitch"] == 60.0 and layer.snapshot()["held"] == [60.0]  # fell back
    engine.note_on(67.0, 100.0, channel=3)
    engine.all_notes_off()
    play(0.3)
    assert layer.snapshot()["held"] == [] and not layer.is_active() and layer.dropped_events == 0
    engine.close()

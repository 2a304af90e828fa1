"""The engine through its control API: exact scheduling, pitch, voices, pedal, timbre blends,
no clicks, limiter ceiling, staged polyphony, the stream layer, block-size invariance."""
import time

import numpy as np
import pytest

from rt_engine.core import voice_kernel as vk
from rt_engine.core.engine import Engine, load_kernels
from rt_engine.core.held_notes import pitch_note_id
from rt_engine.core.layer_api import apply_event
from tests.support.static_banks import StaticBanks

RATE = 48_000
SOURCE_RATE = 16_000
PITCHES = [57, 60, 69, 72, 81]


def _hz(pitch):
    return 440.0 * 2 ** ((pitch - 69) / 12)


def _sine_rows(pitches, n_samples=8000, hz_of=_hz):
    t = np.arange(n_samples) / SOURCE_RATE
    return np.stack([0.9 * np.sin(2 * np.pi * hz_of(p) * t) for p in pitches]).astype(np.float32)


def _engine(n_voices=8, block=256, banks=None, **kwargs):
    banks = banks or StaticBanks(_sine_rows(PITCHES), PITCHES, SOURCE_RATE, RATE)
    return Engine(banks, RATE, max_block=block, n_voices=n_voices, **kwargs)


def _render(engine, n_frames, block=256):
    return np.concatenate([engine.process(min(block, n_frames - k)).copy()
                           for k in range(0, n_frames, block)], axis=1)


def _peak_hz(signal):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    k = int(np.argmax(spectrum))
    # parabolic refinement of the peak bin
    a, b, c = np.log(spectrum[k - 1:k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * RATE / signal.size


def _amplitude_at(signal, hz):
    t = np.arange(signal.size) / RATE
    window = np.hanning(signal.size)
    return 2 * abs(np.sum(signal * window * np.exp(-2j * np.pi * hz * t))) / window.sum()


@pytest.mark.parametrize("at_frame", [256 * 3, 256 * 3 + 1, 1000, 256 * 4 - 1])
def test_dated_note_starts_exactly_at_its_frame(at_frame):
    engine = _engine()
    assert engine.note_on(69, 100, at_frame=at_frame)
    out = _render(engine, 256 * 6)
    onset = int(np.nonzero(np.abs(out[0]) > 0)[0][0])
    assert onset == at_frame
    assert engine.status()["late"] == 0


def test_undated_and_late_commands_play_at_the_next_block():
    engine = _engine()
    _render(engine, 1024)
    engine.note_on(69, 100)                    # undated
    engine.note_on(72, 100, at_frame=10)       # long past: late
    out = _render(engine, 512)
    assert int(np.nonzero(np.abs(out[0]) > 0)[0][0]) == 0
    assert engine.status()["late"] == 1 and engine.status()["voices"] == 2


def test_streaming_block_size_does_not_change_the_output():
    outputs = []
    for block in (64, 256, 1000):
        engine = _engine(block=1024)
        engine.note_on(60, 90, note_id=1, at_frame=300)
        engine.pitch_bend(-1, 1.0, at_frame=2000)
        engine.note_pitch(1, 64.0, 0.05, at_frame=5000)
        engine.note_on(72, 60, at_frame=7001)
        engine.note_off(note_id=1, at_frame=9000)
        outputs.append(_render(engine, 12_000, block))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)
    np.testing.assert_allclose(outputs[0], outputs[2], atol=1e-6)


@pytest.mark.parametrize("pitch", [69.0, 70.0, 66.5, 75.0])
def test_the_expected_pitch_sounds(pitch):
    engine = _engine()
    engine.note_on(pitch, 100)
    out = _render(engine, RATE // 2)
    assert abs(_peak_hz(out[0, 4800:]) / _hz(pitch) - 1) < 0.002


def test_pitch_bend_and_glide_move_the_pitch():
    engine = _engine()
    engine.note_on(69, 100, note_id=5, channel=2)
    engine.pitch_bend(2, 2.0)
    engine.pitch_bend(3, -2.0)  # another channel: no effect
    out = _render(engine, RATE // 2)
    assert abs(_peak_hz(out[0, 4800:]) / _hz(71) - 1) < 0.002
    engine.pitch_bend(2, 0.0)
    engine.note_pitch(5, 64.0, glide_s=0.1)
    out = _render(engine, RATE // 2)
    assert abs(_peak_hz(out[0, 9600:]) / _hz(64) - 1) < 0.002


def test_sustain_pedal_holds_released_notes_until_lifted():
    engine = _engine()
    engine.sustain(-1, True)
    engine.note_on(69, 100)
    _render(engine, 2048)
    engine.note_off(pitch=69)
    held = _render(engine, RATE)
    assert np.abs(held[0, -2048:]).max() > 0.05
    engine.sustain(-1, False)
    _render(engine, RATE)
    assert engine.status()["voices"] == 0


def test_stealing_takes_the_released_voice_first():
    engine = _engine(n_voices=2)
    engine.note_on(57, 100)
    engine.note_on(72, 100)
    _render(engine, 2048)
    engine.note_off(pitch=57)
    _render(engine, 512)
    engine.note_on(81, 100)
    out = _render(engine, RATE // 2)[0, 4800:]
    assert engine.status()["steals"] == 1
    assert _amplitude_at(out, _hz(57)) < 0.01
    assert _amplitude_at(out, _hz(72)) > 0.05 and _amplitude_at(out, _hz(81)) > 0.05


def test_stealing_takes_the_quietest_oldest_held_voice():
    engine = _engine(n_voices=2)
    engine.note_on(57, 20)
    _render(engine, 1024)
    engine.note_on(72, 127)
    _render(engine, 1024)
    engine.note_on(81, 127)
    out = _render(engine, RATE // 2)[0, 4800:]
    assert _amplitude_at(out, _hz(57)) < 0.005
    assert _amplitude_at(out, _hz(72)) > 0.05


def _max_step(signal):
    return np.abs(np.diff(signal)).max()


def test_a_steal_never_clicks():
    engine = _engine(n_voices=1)
    engine.note_on(57, 127)
    before = _render(engine, 4096)[0]
    engine.note_on(60, 127, at_frame=engine.frame + 100)
    across = _render(engine, 4096)[0]
    # a sine of amplitude A at f changes by at most 2 pi f A / rate per sample; a hard cut jumps A
    steady = _max_step(before[2048:])
    assert _max_step(across) < 2.0 * steady
    assert _amplitude_at(across[2048:], _hz(60)) > 0.05


def _two_slot_banks(second_hz_ratio=2.0):
    banks = StaticBanks(_sine_rows(PITCHES), PITCHES, SOURCE_RATE, RATE)
    other = StaticBanks(_sine_rows(PITCHES, hz_of=lambda p: _hz(p) * second_hz_ratio),
                        PITCHES, SOURCE_RATE, RATE)
    banks.banks = np.concatenate([banks.banks, other.banks])
    banks.slots = np.concatenate([banks.slots, banks.slots])
    banks.slots[1, vk.S_KIND] = vk.SLOT_EMPTY
    banks.row_ready = np.ones((2, len(PITCHES)), dtype=np.uint8)
    return banks


def test_a_bank_swap_crossfades_without_a_click():
    banks = _two_slot_banks()
    engine = _engine(banks=banks)
    engine.note_on(69, 127)
    before = _render(engine, 8192)[0]
    banks.slots[1, vk.S_KIND] = vk.SLOT_EXACT  # the new exact bank lands in slot 1 ...
    engine.select_bank(1, 1)                   # ... is selected by its id ...
    _render(engine, 256)
    banks.slots[0, vk.S_KIND] = vk.SLOT_EMPTY  # ... and the old one retires
    across = _render(engine, RATE // 2)[0]
    steady = _max_step(before[4096:])
    assert _max_step(across) < 2.5 * steady  # the new bank is an octave up: twice the slope
    assert abs(_peak_hz(across[RATE // 10:]) / 880.0 - 1) < 0.002
    assert banks.slots[0, vk.S_USAGE] == 0.0


def test_a_bank_selection_older_than_the_latest_timbre_request_is_ignored():
    banks = _two_slot_banks()
    banks.slots[1, vk.S_KIND] = vk.SLOT_EXACT
    engine = _engine(banks=banks)
    engine.timbre_xy(0.5, 0.5)          # generation 1
    engine.select_bank(1, 0)            # a bank load requested before it lands late
    engine.note_on(69, 127)
    out = _render(engine, RATE // 2)[0]
    assert abs(_peak_hz(out[RATE // 10:]) / 440.0 - 1) < 0.002  # slot 0 still plays (nearest)
    engine.select_bank(1, 1)
    engine.note_on(69, 127)
    out = _render(engine, RATE // 2)[0]
    assert abs(_peak_hz(out[RATE // 10:]) / 880.0 - 1) < 0.002


def test_a_selected_bank_brings_its_envelope_and_the_grid_restores_its_own():
    banks = _two_slot_banks()
    banks.slots[1, vk.S_KIND] = vk.SLOT_EXACT
    banks.slots[1, [vk.S_ATTACK_S, vk.S_DECAY_S, vk.S_SUSTAIN, vk.S_RELEASE_S]] = (0.2, 0.3, 1.0, 0.25)
    engine = _engine(banks=banks)
    engine.select_bank(1, 1)
    engine.note_on(69, 127)
    slow = _render(engine, RATE // 10)[0]
    engine.note_off(69)
    engine.timbre_xy(0.5, 0.5)          # leaves the exact bank: the grid's default attack
    _render(engine, RATE)
    engine.note_on(69, 127)
    fast = _render(engine, RATE // 10)[0]
    early = slice(0, RATE // 100)       # the first 10 ms
    assert np.abs(slow[early]).max() < 0.3 * np.abs(fast[early]).max()


def test_grid_neighbours_blend_bilinearly():
    base = StaticBanks(_sine_rows([69]), [69], SOURCE_RATE, RATE)
    corner_hz = [300.0, 500.0, 700.0, 900.0]
    rows = [StaticBanks(_sine_rows([69], hz_of=lambda p, hz=hz: hz), [69], SOURCE_RATE, RATE)
            for hz in corner_hz]
    base.banks = np.concatenate([r.banks for r in rows])
    base.slots = np.array([[vk.SLOT_GRID, x, y, 0, 0]
                           for x, y in ((0.25, 0.25), (0.5, 0.25), (0.25, 0.5), (0.5, 0.5))])
    base.row_ready = np.ones((4, 1), dtype=np.uint8)
    engine = _engine(banks=base)
    fx, fy = 0.3, 0.6
    engine.timbre_xy(0.25 + 0.25 * fx, 0.25 + 0.25 * fy)
    engine.note_on(69, 127)
    out = _render(engine, RATE // 2)[0, 4800:]
    expected = np.array([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    measured = np.array([_amplitude_at(out, hz) for hz in corner_hz])
    np.testing.assert_allclose(measured / measured.sum(), expected, atol=0.01)


def test_output_never_exceeds_the_ceiling():
    engine = _engine(n_voices=32, master_gain=8.0)
    for k in range(32):
        engine.note_on(57 + k % 25, 127)
    out = _render(engine, RATE // 2)
    assert np.abs(out).max() <= 10 ** (-0.3 / 20) + 1e-6
    assert np.abs(out).max() > 0.9


def test_polyphony_changes_live_and_keeps_sounding_voices():
    engine = _engine(n_voices=8)
    for pitch in (57, 60, 69):
        engine.note_on(pitch, 100)
    _render(engine, 1024)
    engine.set_polyphony(4)
    out = _render(engine, 4096)
    assert engine.polyphony == 4 and engine.status()["voices"] == 3
    assert _amplitude_at(out[0], _hz(60)) > 0.02
    with pytest.raises(ValueError, match="polyphony"):
        engine.set_polyphony(0)


def test_a_polyphony_change_staged_while_the_callback_adopts_is_not_lost(monkeypatch):
    engine = _engine(n_voices=8)
    adopt = vk.adopt_voices

    def adopt_while_control_stages_again(*args):
        adopt(*args)
        if engine.polyphony == 8:  # the control thread runs while the kernel holds no GIL
            engine.set_polyphony(5)

    monkeypatch.setattr(vk, "adopt_voices", adopt_while_control_stages_again)
    engine.set_polyphony(4)
    _render(engine, 768)
    assert engine.polyphony == 5


def test_velocity_zero_releases_the_note_by_its_id_and_small_velocities_play_at_one():
    engine = _engine()
    engine.note_on(69, 0.25, note_id=7)
    quiet = np.abs(_render(engine, 4096)[0, 2048:]).max()
    assert quiet > 0.0
    engine.note_on(69, 0, note_id=7)
    _render(engine, RATE)
    assert engine.status()["voices"] == 0


def test_panic_silences_and_drops_scheduled_notes():
    engine = _engine()
    engine.note_on(69, 100)
    engine.note_on(72, 100, at_frame=RATE)
    _render(engine, 1024)
    engine.panic()
    out = _render(engine, RATE * 2)
    assert np.abs(out[:, 1024:]).max() == 0.0
    assert engine.status()["pending"] == 0


def test_layer_gains_smooth_and_zero_skips_the_sampler():
    engine = _engine(master_gain=0.5)
    engine.note_on(69, 100)
    loud = np.abs(_render(engine, 4096)[0, 2048:]).max()
    engine.set_gain("master", 0.25)
    quieter = np.abs(_render(engine, 8192)[0, 4096:]).max()
    assert quieter == pytest.approx(loud * 0.5, rel=0.05)
    engine.set_gain("sampler", 0.0)
    assert np.abs(_render(engine, 8192)[0, 4096:]).max() < 1e-6
    with pytest.raises(ValueError, match="layer"):
        engine.set_gain("drums", 1.0)


class _FakeLayer:
    """A stream layer writing a constant into the engine's ring, recording events."""

    latency_frames = 512
    kernel_path = "constant"
    shed_voices = 0

    def __init__(self):
        self.events = []
        self.ring = self.positions = self.follower = None

    def start(self, sample_rate, ring, positions, events=None):
        self.ring, self.positions, self.follower = ring, positions, events

    def follow_events(self):
        records = self.follower.drain()
        for record in records:
            apply_event(self, record)
        return len(records)

    def fill(self, n_frames, value):
        written = int(self.positions[0])
        for k in range(n_frames):
            self.ring[(written + k) % self.ring.size] = value
        self.positions[0] = written + n_frames

    def stop(self):
        self.events.append(("stop",))

    def note_on(self, note_id, pitch, velocity, at_frame=None, channel=-1):
        self.events.append(("note_on", note_id, pitch, at_frame))

    def set_mix_gain(self, gain, at_frame=None):
        self.events.append(("mix", gain, at_frame))

    def note_off(self, note_id, at_frame=None, fallback=None):
        self.events.append(("note_off", note_id, at_frame, fallback))

    def note_off_pitch(self, pitch, at_frame=None, channel=-1, fallback=None):
        self.events.append(("note_off_pitch", pitch, at_frame, fallback))

    def release_channel(self, at_frame=None, channel=-1, fallback=None):
        self.events.append(("release_channel", channel, at_frame, fallback))

    def set_temperature(self, temperature, at_frame=None):
        self.events.append(("temperature", temperature, at_frame))

    def note_pitch(self, note_id, pitch, glide_s, at_frame=None):
        self.events.append(("note_pitch", note_id, pitch, at_frame))

    def pitch_bend(self, semitones, at_frame=None, channel=-1):
        self.events.append(("bend", semitones, at_frame))

    def timbre_xy(self, x, y, glide_s, at_frame=None):
        self.events.append(("xy", x, y, at_frame))

    def set_glide(self, seconds):
        self.events.append(("glide", seconds))

    def panic(self):
        self.events.append(("panic",))

    def is_active(self):
        return True


def test_stream_layer_ring_is_mixed_with_its_gain_and_underruns_counted():
    layer = _FakeLayer()
    engine = _engine(stream_layer=layer, master_gain=1.0)
    engine.set_gain("gru", 0.5)
    layer.fill(RATE // 10, 0.4)
    out = _render(engine, RATE // 10)
    assert out[0, -1] == pytest.approx(0.2, abs=1e-4)
    _render(engine, 256)
    status = engine.status()
    assert status["gru_underruns"] == 256 and status["gru_active"] == 1
    assert layer.positions[1] == RATE // 10 + 256  # the read position keeps engine time
    assert status["gru_latency_s"] == pytest.approx(status["latency_s"] + 512 / RATE, abs=1e-5)


def test_the_stream_layer_follows_the_engines_events_delayed_by_its_latency():
    layer = _FakeLayer()
    engine = _engine(stream_layer=layer)
    engine.note_on(60, 100, at_frame=10_000)
    engine.note_on(64, 90, note_id=7, channel=2, at_frame=10_100)
    engine.timbre_xy(0.2, 0.3, 0.0, at_frame=20_000)
    engine.note_off(pitch=60, at_frame=30_000)
    engine.gru_temperature(0.5)
    engine.set_gain("sampler", 0.1)  # not the layer's
    engine.all_notes_off(2, at_frame=40_000)
    assert layer.follow_events() == 7  # every event published once, read by the layer too
    note_id = pitch_note_id(0, 60.0)  # a note without an id gets one from its pitch
    next_block = engine.frame + engine.block
    assert layer.events == [
        ("mix", 0.0, None),  # its starting gain, set before it starts
        ("note_on", note_id, 60.0, 10_512), ("note_on", 7, 64.0, 10_612), ("xy", 0.2, 0.3, 20_512),
        ("note_off_pitch", 60.0, 30_512, (7, 64.0, 2)),  # with the newest note still held: its fall-back
        ("temperature", 0.5, next_block + 512), ("release_channel", 2, 40_512, None)]
    _render(engine, 512)  # the kernel applied what was its own and skipped the layer's temperature
    assert engine.status()["commands"] >= 1 and engine.status()["dropped"] == 0
    assert layer.follow_events() == 0


def test_frame_for_time_tracks_the_callback_clock():
    engine = _engine()
    _render(engine, 4096)
    now = time.time()
    assert abs(engine.frame_for_time(now) - engine.frame) < RATE * 0.05
    assert engine.frame_for_time(now + 1.0) - engine.frame_for_time(now) == RATE


def test_status_reports_the_declared_fields():
    engine = _engine(block=512)
    engine.note_on(69, 100)
    _render(engine, 512, block=512)
    status = engine.status()
    for key in ("voices", "gru_active", "cpu", "xruns", "sample_rate", "block", "latency_s",
                "bank_state", "commands", "dropped", "late"):
        assert key in status
    assert status["latency_s"] == pytest.approx(512 / RATE, abs=1e-5)
    assert status["voices"] == 1 and status["commands"] == 1 and status["bank_state"] == "ready"


def test_null_backend_plays_in_real_time_and_records(tmp_path):
    import soundfile

    from rt_engine.io.audio_backends import NullBackend, Recorder

    engine = _engine()
    backend = NullBackend(RATE, 256)
    recorder = Recorder(str(tmp_path / "tap.wav"), RATE)
    backend.start(engine, recorder)
    engine.note_on(69, 100)
    started = time.perf_counter()
    time.sleep(0.5)
    backend.stop()
    elapsed = time.perf_counter() - started
    assert engine.status()["block"] == 256 and engine.latency_s == pytest.approx(2 * 256 / RATE)
    audio, rate = soundfile.read(tmp_path / "tap.wav")
    assert rate == RATE and audio.shape[0] == engine.frame
    assert 0.3 * RATE < engine.frame < (elapsed + 0.2) * RATE  # paced by the clock, not faster
    assert abs(_peak_hz(audio[-RATE // 4:, 0]) / 440.0 - 1) < 0.005


def test_kernels_loaded_before_the_banks_serve_a_real_engine_without_compiling_again():
    load_kernels(RATE)  # what render and serve run while the bank worker starts
    signatures = {kernel: list(kernel.signatures) for kernel in (vk.render_block, vk.adopt_voices)}
    assert all(signatures.values())
    engine = _engine()
    engine.note_on(60.0, 100)
    engine.set_polyphony(12)
    assert np.abs(_render(engine, 1024)).max() > 0.01
    assert {kernel: list(kernel.signatures) for kernel in signatures} == signatures


def test_the_kernel_skips_what_the_native_callback_applied_and_what_is_for_the_layers():
    engine = _engine()
    _render(engine, 256)
    applied = engine.status()["commands"]
    engine.note_on(60, 100, applied=True)  # as if the native JACK callback had played it
    engine.gru_temperature(0.5)
    out = _render(engine, 2048)
    assert np.abs(out).max() == 0.0 and engine.status()["commands"] == applied
    engine.note_on(60, 100)
    assert np.abs(_render(engine, 2048)).max() > 0.01 and engine.status()["commands"] == applied + 1

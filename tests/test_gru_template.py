"""The GRU voice's timbre template: measurement, lookup (NumPy, torch) and the signal it feeds the GRU."""
import numpy as np
import pytest
import torch

from models.gru import template_features, template_lookup
from models.gru_config import GruSynthConfig
from models.gru_template import measure_template, template_coefficients, template_signal
from models.pitch import midi_to_hz

RATE = 16000


def _note(pitch, amplitudes, phases, start_phase, n_samples=RATE):
    t = np.arange(n_samples)
    omega = 2 * np.pi * midi_to_hz(pitch) / RATE
    return sum(a * np.cos(m * (omega * t + start_phase) + p)
               for m, (a, p) in enumerate(zip(amplitudes, phases), start=1))


def test_measured_harmonics_are_relative_to_the_fundamental_phase():
    amplitudes, phases = [0.5, 0.25, 0.1, 0.05], [0.3, -1.0, 2.0, 0.7]
    table = measure_template(_note(57, amplitudes, phases, start_phase=1.1)[None], [57], RATE, n_harmonics=6)[0, 0]
    measured = table[0::2] + 1j * table[1::2]
    expected = [a * np.exp(1j * (p - m * phases[0])) for m, (a, p) in enumerate(zip(amplitudes, phases), start=1)]
    np.testing.assert_allclose(measured[:4], expected, atol=1e-3)
    np.testing.assert_allclose(measured[4:], 0.0, atol=1e-3)
    # the cycle at the fundamental's phase is the note itself
    t = np.arange(2000)
    phase = 2 * np.pi * midi_to_hz(57) / RATE * t + 1.1 + phases[0]
    np.testing.assert_allclose(template_signal(table, phase)[:, 0], _note(57, amplitudes, phases, 1.1, 2000),
                               atol=2e-3)


def test_harmonics_above_nyquist_are_not_measured_and_silence_gives_zeros():
    table = measure_template(np.stack([_note(96, [0.5, 0.2], [0, 0], 0.0), np.zeros(RATE)]), [96, 60], RATE, 8)
    assert table.shape == (2, 1, 16)
    assert np.all(table[0, :, 2 * 3:] == 0.0)  # MIDI 96 = 2093 Hz: harmonics 4.. are at or above 8 kHz
    assert np.all(table[1] == 0.0)


def test_frames_follow_the_note_through_time():
    """A note whose harmonics change level half-way: each frame measures the level around its time,
    the one-frame template their energy-weighted mean."""
    t = np.arange(RATE)
    level = np.where(t < RATE // 2, 0.8, 0.2)
    note = level * _note(60, [1.0, 0.5], [0.0, 0.4], 0.3)
    frames = measure_template(note[None], [60], RATE, 4, frame_s=(0.1, 0.25, 0.75, 0.9))[0]
    fundamental = np.abs(frames[:, 0] + 1j * frames[:, 1])
    np.testing.assert_allclose(fundamental, [0.8, 0.8, 0.2, 0.2], atol=0.03)  # fits of 50 ms blur the step
    np.testing.assert_allclose(np.abs(frames[:, 2] + 1j * frames[:, 3]), 0.5 * fundamental, atol=0.01)
    mean = measure_template(note[None], [60], RATE, 4)[0, 0]
    assert 0.2 < abs(mean[0] + 1j * mean[1]) < 0.8
    with pytest.raises(ValueError, match="ascending"):
        measure_template(note[None], [60], RATE, 4, frame_s=(0.5, 0.1))


def _table(seed=0, size=3, n_pitches=3, n_frames=1, n_harmonics=5):
    return np.random.default_rng(seed).normal(0, 1, (size, size, n_pitches, n_frames, 2 * n_harmonics)).astype(np.float32)


def test_lookup_reads_nodes_exactly_interpolates_between_and_drops_unplayable_harmonics():
    table, pitches, frame_s = _table(n_frames=2), np.array([40.0, 60.0, 80.0]), np.array([0.1, 0.3])
    np.testing.assert_allclose(template_coefficients(table, pitches, frame_s, 0.5, 1.0, 60.0, 0.1, RATE),
                               table[2, 1, 1, 0], atol=1e-6)
    clamped = template_coefficients(table, pitches, frame_s, 1.0, 0.0, 20.0, 5.0, RATE)
    np.testing.assert_allclose(clamped, table[0, 2, 0, 1], atol=1e-6)
    # between entries: magnitudes blend linearly, phases as the blended unit vectors' direction
    def polar(row):
        return row[0::2] + 1j * row[1::2]
    for (x, pitch, age), (low, high, f) in {(0.0, 50.0, 0.0): (table[0, 0, 0, 0], table[0, 0, 1, 0], 0.5),
                                            (0.0, 80.0, 0.25): (table[0, 0, 2, 0], table[0, 0, 2, 1], 0.75),
                                            (0.25, 40.0, 0.1): (table[0, 0, 0, 0], table[0, 1, 0, 0], 0.5)}.items():
        blended = polar(template_coefficients(table, pitches, frame_s, x, 0.0, pitch, age, RATE))
        a, b = polar(low), polar(high)
        np.testing.assert_allclose(np.abs(blended), (1 - f) * np.abs(a) + f * np.abs(b), rtol=1e-5)
        direction = (1 - f) * a / np.abs(a) + f * b / np.abs(b)
        np.testing.assert_allclose(blended / np.abs(blended), direction / np.abs(direction), atol=1e-5)
    high = template_coefficients(table, pitches, frame_s, 0.0, 0.0, 100.0, 0.2, RATE)  # 2637 Hz: 1..3 below 8 kHz
    assert np.all(high[6:] == 0.0) and np.all(high[:6] != 0.0)


def test_two_notes_in_opposite_phase_blend_without_cancelling():
    table = np.zeros((2, 2, 1, 1, 2), np.float32)
    table[:, 0, 0, 0, 0] = 0.4  # the fundamental at phase 0 on one side, at phase 2.9 on the other
    table[:, 1, 0, 0, 0], table[:, 1, 0, 0, 1] = 0.2 * np.cos(2.9), 0.2 * np.sin(2.9)
    halfway = template_coefficients(table, np.array([60.0]), np.array([0.0]), 0.5, 0.5, 60.0, 0.0, RATE)
    assert abs(halfway[0] + 1j * halfway[1]) == pytest.approx(0.3, abs=1e-6)  # a linear blend: 0.11


@pytest.mark.parametrize("n_frames", [1, 3])
def test_torch_lookup_and_signal_equal_the_numpy_reference(n_frames):
    table, pitches = _table(seed=1, n_frames=n_frames), np.array([40.0, 60.0, 80.0])
    frame_s = np.array([0.05, 0.2, 0.6][:n_frames])
    rng = np.random.default_rng(2)
    conditioning = np.stack([rng.uniform(0, 1, 50), rng.uniform(0, 1, 50), rng.uniform(30, 100, 50)], axis=1)
    age_s, phase = rng.uniform(0, 1, 50), rng.uniform(0, 2 * np.pi, 50)
    coefficients = template_lookup(torch.from_numpy(table), torch.tensor(pitches, dtype=torch.float32),
                                   torch.tensor(frame_s, dtype=torch.float32),
                                   torch.tensor(conditioning, dtype=torch.float32),
                                   torch.tensor(age_s, dtype=torch.float32), RATE)
    expected = np.stack([template_coefficients(table, pitches, frame_s, *row, age, RATE)
                         for row, age in zip(conditioning, age_s)])
    np.testing.assert_allclose(coefficients.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(template_features(coefficients, torch.tensor(phase)).numpy(),
                               template_signal(expected, phase), atol=1e-4)


def test_a_template_needs_the_oscillator_and_a_table_shape():
    with pytest.raises(ValueError, match="oscillator"):
        GruSynthConfig(template_harmonics=4, template_grid_size=3, template_pitches=(40, 60))
    with pytest.raises(ValueError, match="template_pitches"):
        GruSynthConfig(oscillator_harmonics=2, template_harmonics=4, template_grid_size=3)
    with pytest.raises(ValueError, match="ascend"):
        GruSynthConfig(oscillator_harmonics=2, template_harmonics=4, template_grid_size=3, template_pitches=(60, 40))
    with pytest.raises(ValueError, match="template_frame_s"):
        GruSynthConfig(oscillator_harmonics=2, template_harmonics=4, template_grid_size=3, template_pitches=(40, 60),
                       template_frame_s=(0.2, 0.1))
    config = GruSynthConfig(oscillator_harmonics=2, template_harmonics=4, template_grid_size=3, template_pitches=(40, 60))
    assert config.input_size == GruSynthConfig(oscillator_harmonics=2).input_size + 2


def test_the_checkpoint_stores_the_template_in_float16_and_both_loaders_read_it_back(tmp_path):
    from safetensors.numpy import load_file

    from models.gru import GruSynth, load_gru, save_gru
    from models.gru_stream import load_stream_weights

    config = GruSynthConfig(n_layers=1, hidden_size=16, oscillator_harmonics=2, template_harmonics=4,
                            template_grid_size=3, template_pitches=(40.0, 60.0), template_frame_s=(0.1, 0.3))
    model = GruSynth(config)
    table = np.random.default_rng(0).uniform(-0.5, 0.5, config.template_shape).astype(np.float32)
    model.set_template(table)
    save_gru(tmp_path, model)
    assert load_file(str(tmp_path / "model.safetensors"))["timbre_template"].dtype == np.float16
    loaded = load_gru(tmp_path)
    assert loaded.timbre_template.dtype == torch.float32
    np.testing.assert_allclose(loaded.timbre_template.numpy(), table, atol=5e-4)
    weights, _ = load_stream_weights(tmp_path, "fp32")
    assert weights.template.dtype == np.float32
    np.testing.assert_array_equal(weights.template, loaded.timbre_template.numpy())


def test_a_point_table_reads_its_own_notes_at_any_position():
    """A bank's notes become a table whose lookup at any (x, y) is the notes' own template."""
    from models.gru_template import measure_peak_normalised, point_table

    notes = np.stack([_note(57, [0.5, 0.25], [0.3, -1.0], 0.2), 0.1 * _note(64, [0.2, 0.4], [1.0, 0.5], 0.0)])
    table = point_table(notes, [57, 64], RATE, n_harmonics=4)
    assert table.shape == (2, 2, 2, 1, 8)
    measured = measure_peak_normalised(notes, [57, 64], RATE, 4)
    magnitudes = np.abs(measured[:, 0, 0::2] + 1j * measured[:, 0, 1::2])  # [2, 4], each note peak-normalised
    np.testing.assert_allclose(magnitudes[:, :2], [[0.5, 0.25], [0.2, 0.4]] * (0.9 / np.abs(notes).max(axis=1) *
                                                                           [1.0, 0.1])[:, None], rtol=1e-2)
    for x, y in ((0.0, 0.0), (0.37, 0.81), (1.0, 0.4)):
        np.testing.assert_allclose(template_coefficients(table, np.array([57.0, 64.0]), np.zeros(1), x, y, 64.0, 0.1,
                                                         RATE), measured[1, 0], atol=1e-6)

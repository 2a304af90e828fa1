"""The torch GRU synthesiser: shapes, state carry, sampling, checkpoints."""
import json

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError
from models.gru import (GruSynth, GruSynthConfig, conditioning_features, load_gru, oscillator_features,
                        oscillator_phase, save_gru, teacher_forcing_loss)

torch.set_num_threads(1)
TINY = GruSynthConfig(n_layers=2, hidden_size=16, embedding_size=8, conditioning_size=4)


def _conditioning(batch, n_steps, seed=0):
    rng = np.random.default_rng(seed)
    values = np.stack([rng.uniform(0, 1, (batch, n_steps)), rng.uniform(0, 1, (batch, n_steps)),
                       rng.uniform(40, 80, (batch, n_steps))], axis=-1)
    return torch.from_numpy(values.astype(np.float32))


def test_forward_returns_logits_and_state_of_the_declared_shapes():
    model = GruSynth(TINY)
    logits, state = model(torch.randint(0, 256, (3, 7)), _conditioning(3, 7))
    assert logits.shape == (3, 7, 256) and state.shape == (2, 3, 16)
    assert model.initial_state(3).shape == (2, 3, 16)


def test_chunked_forward_with_carried_state_equals_one_pass():
    torch.manual_seed(0)
    model = GruSynth(TINY)
    mu, conditioning = torch.randint(0, 256, (2, 40)), _conditioning(2, 40)
    whole, _ = model(mu, conditioning)
    state, parts = None, []
    for start in range(0, 40, 13):
        logits, state = model(mu[:, start:start + 13], conditioning[:, start:start + 13], state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-5, atol=1e-5)


def test_conditioning_features_normalise_pitch_and_period():
    config = GruSynthConfig()
    features = conditioning_features(torch.tensor([[0.25, 0.75, 69.0]]), config)[0]
    assert features[0] == 0.25 and features[1] == 0.75
    assert features[2].item() == pytest.approx((69 - 21) / 87)
    assert features[3].item() == pytest.approx(16000 / 440 / 100, rel=1e-6)


def test_zero_temperature_sampling_follows_the_argmax_chain():
    torch.manual_seed(1)
    model = GruSynth(TINY)
    conditioning = _conditioning(1, 12)
    samples, _ = model.sample(conditioning, temperature=0.0)
    previous = torch.cat([torch.tensor([[128]]), samples[:, :-1]], dim=1)
    logits, _ = model(previous, conditioning)
    torch.testing.assert_close(logits.argmax(-1), samples)


def test_sampling_is_reproducible_from_a_seed():
    model = GruSynth(TINY)
    conditioning = _conditioning(2, 20)
    first, _ = model.sample(conditioning, temperature=1.0, seed=5)
    second, _ = model.sample(conditioning, temperature=1.0, seed=5)
    torch.testing.assert_close(first, second)


def test_teacher_forcing_loss_is_the_cross_entropy_of_the_next_sample():
    model = GruSynth(TINY)
    mu, conditioning = torch.randint(0, 256, (2, 9)), _conditioning(2, 8)
    logits, _ = model(mu[:, :-1], conditioning)
    log_probabilities = torch.log_softmax(logits, -1)
    expected = -log_probabilities.gather(-1, mu[:, 1:, None]).mean()
    torch.testing.assert_close(teacher_forcing_loss(model, mu, conditioning), expected)


def test_a_residual_voice_reads_and_predicts_the_residual_classes():
    """The targets become the classes of x_t - cycle_t, the inputs those of x_{t-1} - cycle_{t-1}:
    a note that is exactly its template is a zero residual in and out."""
    from models.mu_law import mu_law_decode_torch, mu_law_encode_torch

    config = GruSynthConfig(n_layers=1, hidden_size=16, embedding_size=8, conditioning_size=4, oscillator_harmonics=1,
                            template_harmonics=3, template_grid_size=2, template_pitches=(50.0, 70.0),
                            template_residual=True)
    torch.manual_seed(2)
    model = GruSynth(config)
    model.set_template(torch.tensor([0.5, 0.0, 0.2, 0.1, 0.0, 0.0]).repeat(2, 2, 2, 1, 1))
    conditioning = torch.tensor([0.5, 0.5, 60.0]).repeat(2, 41, 1)
    _, prediction, _ = model(torch.full((2, 41), 128), conditioning, with_prediction=True)
    mu = mu_law_encode_torch(prediction.detach())  # x_t = cycle_t: mu[:, t] is the sample at step t
    seen = []
    model.embedding.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    logits, prediction, _ = model(mu[:, :-1], conditioning[:, 1:], with_prediction=True,
                                  phase=oscillator_phase(conditioning[..., 2], 16000)[:, 1:])
    quantisation = 0.5 * (mu_law_decode_torch(mu + 1) - mu_law_decode_torch(mu)).abs().max()  # of x
    assert mu_law_decode_torch(seen[0]).abs().max() <= 1.01 * quantisation  # the previous residual: silence
    targets = mu_law_encode_torch(mu_law_decode_torch(mu[:, 1:]) - prediction)
    assert mu_law_decode_torch(targets).abs().max() <= 1.01 * quantisation
    assert prediction.abs().max() > 20 * quantisation
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))
    torch.testing.assert_close(teacher_forcing_loss(model, mu, conditioning[:, 1:],
                                                    phase=oscillator_phase(conditioning[..., 2], 16000)[:, 1:]),
                               expected)


def test_checkpoint_round_trip_restores_config_and_outputs(tmp_path):
    model = GruSynth(TINY)
    save_gru(tmp_path / "gru", model, {"steps": 3})
    loaded = load_gru(tmp_path / "gru")
    assert loaded.config == TINY
    mu, conditioning = torch.randint(0, 256, (1, 5)), _conditioning(1, 5)
    torch.testing.assert_close(loaded(mu, conditioning)[0], model(mu, conditioning)[0])


def test_a_corrupt_checkpoint_is_a_clear_error_naming_the_file(tmp_path):
    save_gru(tmp_path / "gru", GruSynth(TINY))
    (tmp_path / "gru" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_gru(tmp_path / "gru")
    record = json.loads((tmp_path / "gru" / "config.json").read_text())
    record["config"]["hidden_size"] = -4
    (tmp_path / "gru" / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="config.json"):
        load_gru(tmp_path / "gru")


def test_presets_select_smaller_variants_and_reject_unknown_names():
    assert GruSynthConfig.preset("2x128").hidden_size == 128
    assert GruSynthConfig.preset("3x256") == GruSynthConfig()
    with pytest.raises(ValueError, match="unknown GRU preset"):
        GruSynthConfig.preset("5x5")


OSCILLATOR = GruSynthConfig(n_layers=2, hidden_size=16, embedding_size=8, conditioning_size=4, oscillator_harmonics=2)


def test_oscillator_phase_is_the_running_sum_of_the_pitch_frequency():
    pitch = torch.tensor([[69.0] * 5 + [81.0] * 3])
    start = torch.tensor([0.5])
    phase = oscillator_phase(pitch, 16000, start)[0].double()
    increments = 2 * np.pi * np.array([440.0] * 5 + [880.0] * 3) / 16000
    expected = np.mod(0.5 + np.cumsum(increments), 2 * np.pi)
    np.testing.assert_allclose(phase.numpy(), expected, atol=1e-6)


def test_oscillator_features_are_sin_and_cos_of_each_harmonic():
    phase = torch.tensor([[0.3, 1.7]])
    features = oscillator_features(phase, 2)
    expected = torch.stack([torch.sin(phase), torch.cos(phase), torch.sin(2 * phase), torch.cos(2 * phase)], dim=-1)
    torch.testing.assert_close(features, expected)


def test_oscillator_model_chunked_with_carried_phase_equals_one_pass():
    torch.manual_seed(1)
    model = GruSynth(OSCILLATOR)
    assert OSCILLATOR.input_size == 8 + 4 + 4
    mu, conditioning = torch.randint(0, 256, (2, 40)), _conditioning(2, 40)
    whole, _ = model(mu, conditioning)  # phase from 0 at the conditioned pitch
    phase = oscillator_phase(conditioning[..., 2], OSCILLATOR.sample_rate)
    state, parts = None, []
    for start in range(0, 40, 13):
        logits, state = model(mu[:, start:start + 13], conditioning[:, start:start + 13], state,
                              phase[:, start:start + 13])
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-5, atol=1e-5)


def test_oscillator_phase_changes_the_prediction_and_a_wrong_shape_is_refused():
    torch.manual_seed(2)
    model = GruSynth(OSCILLATOR)
    mu, conditioning = torch.randint(0, 256, (1, 10)), _conditioning(1, 10)
    first, _ = model(mu, conditioning, phase=torch.zeros(1, 10))
    second, _ = model(mu, conditioning, phase=torch.full((1, 10), 2.0))
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError, match="phase"):
        model(mu, conditioning, phase=torch.zeros(1, 9))
    with pytest.raises(ValueError, match="oscillator_harmonics"):
        GruSynthConfig(oscillator_harmonics=-1)

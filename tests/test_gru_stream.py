"""The streaming GRU kernel against the torch model, its NumPy reference and the softmax it samples."""
import numba
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from models.gru import GruSynth, GruSynthConfig
from models.gru_stream import (_dot4_instruction_set, _integer_matvec, copy_state, default_kernel_path,
                               gru_stream_logits, gru_stream_sample, kernel_path, mean_residual, new_state,
                               sample_from_logits, stream_weights, weight_bytes_per_sample)
from models.gru_stream_reference import (gru_stream_logits_reference, gru_stream_sample_reference,
                                         mean_residual_reference, sample_from_logits_reference)

torch.set_num_threads(1)
# 18 hidden units: 54 gate rows, not a multiple of the kernel's 4-row blocks (exercises the tail).
CONFIGS = [GruSynthConfig(n_layers=3, hidden_size=64, embedding_size=16, conditioning_size=8),
           GruSynthConfig(n_layers=1, hidden_size=18, embedding_size=8, conditioning_size=4,
                          use_period_feature=False),
           GruSynthConfig(n_layers=2, hidden_size=32, embedding_size=16, conditioning_size=8, oscillator_harmonics=2),
           GruSynthConfig(n_layers=2, hidden_size=32, embedding_size=16, conditioning_size=8, oscillator_harmonics=2,
                          timbre_grid_size=5, timbre_grid_dim=6),  # timbre features h(x, y) from a grid
           GruSynthConfig(n_layers=2, hidden_size=32, embedding_size=16, conditioning_size=8, oscillator_harmonics=2,
                          template_harmonics=7, template_grid_size=4, template_pitches=(40, 55, 80)),  # + template
           GruSynthConfig(n_layers=2, hidden_size=32, embedding_size=16, conditioning_size=8, oscillator_harmonics=2,
                          template_harmonics=7, template_grid_size=4, template_pitches=(40, 55, 80),
                          template_residual=True),  # + the template as the sample's prediction
           GruSynthConfig(n_layers=2, hidden_size=32, embedding_size=16, conditioning_size=8, oscillator_harmonics=2,
                          age_feature_s=0.004),  # + the note's age (clamped after 64 samples)
           GruSynthConfig(n_layers=2, hidden_size=32, embedding_size=16, conditioning_size=8, oscillator_harmonics=2,
                          template_harmonics=7, template_grid_size=4, template_pitches=(40, 55, 80),
                          template_frame_s=(0.0, 0.002, 0.005), age_feature_s=0.004)]  # + frames at 0, 32, 80 samples
INT8_RELATIVE_TOLERANCE = 0.03
"""int8 weights with per-row scales (float, int16 or int8 activations): max |logit error| <= 3% of the
largest |logit|."""
REFERENCE_TOLERANCE = {"float": 1e-4, "int16_dot": 5e-4, "int8_dot": 5e-3}
"""Kernel vs NumPy reference (absolute, logits): the integer paths' sums are exact, but the kernel's
rational tanh can round an activation to the neighbouring step (1/32767 or 1/127)."""


def _model(config, seed=0):
    torch.manual_seed(seed)
    model = GruSynth(config).eval()
    with torch.no_grad():  # larger-than-default weights so the gates saturate as in a trained model
        for name, parameter in model.named_parameters():
            if "gru.weight" in name or "output.weight" in name:
                parameter.mul_(3.0)
    if config.timbre_grid_size:
        size = config.timbre_grid_size
        model.set_timbre_grid(torch.randn(size, size, config.timbre_grid_dim) * 2.0)
    if config.template_harmonics:
        model.set_template(torch.randn(config.template_shape) * 0.3)
    return model


def _inputs(n_steps, seed=0):
    rng = np.random.default_rng(seed)
    conditioning = np.stack([rng.uniform(0, 1, n_steps), rng.uniform(0, 1, n_steps),
                             rng.uniform(30, 90, n_steps)], axis=-1).astype(np.float32)
    return rng.integers(0, 256, n_steps), conditioning


def _torch_logits(model, prev_mu, conditioning):
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(prev_mu)[None], torch.from_numpy(conditioning)[None])
    return logits[0].numpy()


def _kernel_logits(weights, prev_mu, conditioning, control_interval=1, path="float"):
    logits = np.zeros((len(prev_mu), weights.table.shape[0]), np.float32)
    state = new_state(weights, path=path)
    gru_stream_logits(weights, state, prev_mu, conditioning, control_interval, logits)
    return logits


@pytest.mark.parametrize("config", CONFIGS[:5] + CONFIGS[6:])
def test_fp32_kernel_streaming_equals_the_torch_model_offline(config):
    model = _model(config)
    prev_mu, conditioning = _inputs(150)
    expected = _torch_logits(model, prev_mu, conditioning)
    np.testing.assert_allclose(_kernel_logits(stream_weights(model, "fp32"), prev_mu, conditioning), expected,
                               rtol=0, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("config, path", [(CONFIGS[0], "float"), (CONFIGS[0], "int16_dot"), (CONFIGS[0], "int8_dot"),
                                          (CONFIGS[1], "float"), (CONFIGS[2], "int16_dot"), (CONFIGS[2], "int8_dot")],
                         ids=["64-float-activations", "64-int16-activations", "64-int8-activations",
                              "18-float-activations", "32-oscillator-int16-activations",
                              "32-oscillator-int8-activations"])
def test_int8_kernel_logits_stay_within_the_stated_tolerance(config, path):
    model = _model(config)
    weights = stream_weights(model, "int8")
    prev_mu, conditioning = _inputs(150)
    expected = _torch_logits(model, prev_mu, conditioning)
    error = np.abs(_kernel_logits(weights, prev_mu, conditioning, 1, path) - expected).max()
    assert error <= INT8_RELATIVE_TOLERANCE * np.abs(expected).max()


def test_control_rate_conditioning_equals_torch_with_held_conditioning():
    model, control_interval = _model(CONFIGS[0]), 16
    prev_mu, conditioning = _inputs(100)
    held = conditioning[(np.arange(100) // control_interval) * control_interval]
    expected = _torch_logits(model, prev_mu, held)
    actual = _kernel_logits(stream_weights(model, "fp32"), prev_mu, conditioning, control_interval)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("config, compression, path", [
    (CONFIGS[0], "fp32", "float"), (CONFIGS[0], "int8", "float"), (CONFIGS[0], "int8", "int16_dot"),
    (CONFIGS[0], "int8", "int8_dot"), (CONFIGS[2], "int8", "float"), (CONFIGS[2], "int8", "int8_dot"),
    (CONFIGS[3], "fp32", "float"), (CONFIGS[3], "int8", "int8_dot"), (CONFIGS[4], "fp32", "float"),
    (CONFIGS[4], "int8", "int8_dot"), (CONFIGS[5], "fp32", "float"), (CONFIGS[5], "int8", "int8_dot"),
    (CONFIGS[6], "int8", "int8_dot"), (CONFIGS[7], "fp32", "float"), (CONFIGS[7], "int8", "int8_dot")],
    ids=["fp32", "int8-float-activations", "int8-int16-activations", "int8-int8-activations", "oscillator-int8",
         "oscillator-int8-int8-activations", "timbre-grid-fp32", "timbre-grid-int8", "template-fp32",
         "template-int8", "residual-fp32", "residual-int8", "age-int8", "frames-fp32", "frames-int8"])
def test_kernel_equals_the_numpy_reference(config, compression, path):
    weights = stream_weights(_model(config), compression)
    prev_mu, conditioning = _inputs(60)
    expected = np.zeros((60, 256), np.float32)
    gru_stream_logits_reference(weights, new_state(weights, path=path), prev_mu, conditioning, 7, expected)
    np.testing.assert_allclose(_kernel_logits(weights, prev_mu, conditioning, 7, path), expected,
                               rtol=0, atol=REFERENCE_TOLERANCE[path])

    state = new_state(weights, seed=3, path=path)
    reference_state = copy_state(state)
    samples, reference_samples = np.zeros(80, np.int64), np.zeros(80, np.int64)
    gru_stream_sample(weights, state, conditioning[:80 // 2].repeat(2, axis=0), 5, 0.9, samples)
    gru_stream_sample_reference(weights, reference_state, conditioning[:80 // 2].repeat(2, axis=0), 5, 0.9,
                                reference_samples)
    np.testing.assert_array_equal(samples, reference_samples)
    np.testing.assert_allclose(state.hidden, reference_state.hidden, atol=REFERENCE_TOLERANCE[path])
    assert state.rng[0] == reference_state.rng[0] and np.array_equal(state.counters, reference_state.counters)
    np.testing.assert_allclose(state.phase, reference_state.phase, rtol=1e-12)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2], CONFIGS[4], CONFIGS[5], CONFIGS[7]],
                         ids=["plain", "oscillator", "template", "residual", "frames"])
def test_chunked_generation_equals_one_call(config):
    weights = stream_weights(_model(config), "int8")  # the default path for this machine
    _, conditioning = _inputs(200, seed=4)
    whole, chunked = np.zeros(200, np.int64), np.zeros(200, np.int64)
    gru_stream_sample(weights, new_state(weights, seed=9), conditioning, 16, 1.0, whole)
    state = new_state(weights, seed=9)
    for start, stop in [(0, 5), (5, 37), (37, 38), (38, 200)]:
        gru_stream_sample(weights, state, conditioning[start:stop], 16, 1.0, chunked[start:stop])
    np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampling_distribution_matches_the_softmax(temperature):
    logits = np.random.default_rng(5).normal(0, 1.5, 16).astype(np.float32)
    rng, scratch = np.array([12345], np.uint64), np.zeros(16, np.float32)
    n_draws = 40000
    counts = np.bincount([sample_from_logits(logits, temperature, rng, scratch) for _ in range(n_draws)],
                         minlength=16)
    probabilities = np.exp(logits.astype(np.float64) / temperature)
    probabilities /= probabilities.sum()
    assert chisquare(counts, probabilities * n_draws).pvalue > 1e-3


def test_sampler_equals_its_reference_and_zero_temperature_is_argmax():
    logits = np.random.default_rng(6).normal(0, 2, 256).astype(np.float32)
    rng, reference_rng = np.array([77], np.uint64), np.array([77], np.uint64)
    scratch = np.zeros(256, np.float32)
    draws = [sample_from_logits(logits, 0.8, rng, scratch) for _ in range(300)]
    reference = [sample_from_logits_reference(logits, 0.8, reference_rng, scratch) for _ in range(300)]
    assert draws == reference
    assert sample_from_logits(logits, 0.0, rng, scratch) == int(np.argmax(logits))


def test_int8_weights_are_about_four_times_smaller():
    model = _model(CONFIGS[0])
    ratio = weight_bytes_per_sample(stream_weights(model, "fp32")) / weight_bytes_per_sample(stream_weights(model, "int8"))
    assert 3.0 < ratio < 4.0


def test_unknown_compression_is_rejected_by_name():
    with pytest.raises(ValueError, match="compression"):
        stream_weights(_model(CONFIGS[1]), "int4")


def test_integer_paths_are_refused_where_they_cannot_run():
    with pytest.raises(ValueError, match="int8_dot"):
        new_state(stream_weights(_model(CONFIGS[1]), "int8"), path="int8_dot")  # 18 hidden units
    with pytest.raises(ValueError, match="int16_dot"):
        new_state(stream_weights(_model(CONFIGS[0]), "fp32"), path="int16_dot")
    with pytest.raises(ValueError, match="kernel path"):
        new_state(stream_weights(_model(CONFIGS[0]), "int8"), path="int4_dot")
    assert default_kernel_path(stream_weights(_model(CONFIGS[1]), "int8")) == "float"


@pytest.mark.parametrize("dtype", [np.int16, np.int8])
def test_integer_matvec_sums_are_exact_on_every_instruction_set(dtype):
    rng = np.random.default_rng(11)
    matrix = rng.integers(-127, 128, (70, 96)).astype(np.int8)  # 70 rows: the 4-row blocks and a tail
    vector = rng.uniform(-1, 1, 96).astype(np.float32)
    vector[:4] = [1.0, -1.0, 1.0, -1.0]  # the extreme activations (and |w| = 127 products) must not saturate
    matrix[:, :4] = [127, -127, -127, 127]
    scale, bias = np.ones(70, np.float32), np.zeros(70, np.float32)
    limit = 32767.0 if dtype == np.int16 else 127.0
    out = np.zeros(70, np.float32)
    _integer_matvec(matrix, scale, bias, vector, np.zeros(96, dtype), out, limit)
    exact = matrix.astype(np.int64) @ np.rint(vector * np.float32(limit)).astype(np.int64)
    np.testing.assert_allclose(out * limit, exact, rtol=1e-6)


def test_avx2_int8_path_uses_the_16_bit_multiply_adds():
    if _dot4_instruction_set(np.int8) != "avx2":
        pytest.skip("the compile target has no AVX2")
    uncached = numba.njit(fastmath=True, error_model="numpy")(_integer_matvec.py_func)  # cached code has no asm
    uncached(np.zeros((4, 32), np.int8), np.ones(4, np.float32), np.zeros(4, np.float32),
             np.zeros(32, np.float32), np.zeros(32, np.int8), np.zeros(4, np.float32), 127.0)
    assembly = "".join(uncached.inspect_asm().values())
    assert "vpsignb" in assembly and "vpmaddubsw" in assembly
    assert "vpmaddwd" in assembly or "vpdpwssd" in assembly  # VNNI fuses the multiply-add with the sum
    state = new_state(stream_weights(_model(CONFIGS[0]), "int8"), path="int8_dot")
    assert kernel_path(state) == "int8_dot/avx2"


def test_oscillator_phase_advances_by_the_pitch_of_every_sample():
    weights = stream_weights(_model(CONFIGS[2]), "fp32")
    pitches = np.linspace(48.0, 60.0, 300)  # a glide: the phase is the running sum of 2 pi f0 / rate
    conditioning = np.stack([np.zeros(300), np.zeros(300), pitches], axis=-1).astype(np.float32)
    state = new_state(weights)
    gru_stream_logits(weights, state, np.zeros(300, np.int64), conditioning, 16, np.zeros((300, 256), np.float32))
    f0_hz = 440.0 * 2.0 ** ((conditioning[:, 2].astype(np.float64) - 69.0) / 12.0)
    expected = np.mod(np.sum(2 * np.pi * f0_hz / CONFIGS[2].sample_rate), 2 * np.pi)
    assert abs(np.angle(np.exp(1j * (state.phase[0] - expected)))) < 1e-9


def test_stream_generate_decodes_what_the_kernel_samples():
    from models.gru_stream import stream_generate
    from models.mu_law import mu_law_decode

    model = _model(CONFIGS[0])
    _, conditioning = _inputs(120, seed=8)
    weights = stream_weights(model, "int8")
    mu = np.zeros(120, np.int64)
    gru_stream_sample(weights, new_state(weights, seed=2), conditioning, 16, 0.8, mu)
    np.testing.assert_array_equal(stream_generate(model, conditioning, 0.8, seed=2), mu_law_decode(mu))


def test_a_residual_voice_streams_torch_logits_from_the_residual_classes_torch_reads():
    """torch takes the samples' own classes and converts them with the cycle one sample earlier;
    the kernel reads the residual classes it made itself: fed those, it streams torch's logits."""
    from models.gru_template import shifted_class, template_coefficients, template_signal

    model = _model(CONFIGS[5])
    prev_mu = np.random.default_rng(1).integers(0, 256, 120)
    conditioning = np.tile(np.float32([[0.4, 0.8, 47.0]]), (120, 1))
    with torch.no_grad():
        logits, prediction, _ = model(torch.from_numpy(prev_mu)[None], torch.from_numpy(conditioning)[None],
                                      with_prediction=True)
    weights = stream_weights(model, "fp32")
    coefficients = template_coefficients(weights.template, weights.template_pitches, weights.template_frame_s,
                                         0.4, 0.8, 47.0, 0.0, 16000)
    previous_cycle = np.concatenate([template_signal(coefficients, np.zeros(1))[:, 0], prediction[0, :-1].numpy()])
    residual_inputs = np.array([shifted_class(int(m), -float(c), 256) for m, c in zip(prev_mu, previous_cycle)])
    assert np.mean(residual_inputs != prev_mu) > 0.5
    np.testing.assert_allclose(_kernel_logits(weights, residual_inputs, conditioning), logits[0].numpy(),
                               rtol=0, atol=2e-5 * np.abs(logits.numpy()).max())


def _sample_three_ways_at_zero_temperature(model, conditioning):
    """The (weights, kernel, reference, torch) mu-law classes of `model` played at temperature 0 under
    `conditioning` (T, 3), control interval 16."""
    weights = stream_weights(model, "fp32")
    streamed, reference = np.zeros(len(conditioning), np.int64), np.zeros(len(conditioning), np.int64)
    gru_stream_sample(weights, new_state(weights, path="float"), conditioning, 16, 0.0, streamed)
    gru_stream_sample_reference(weights, new_state(weights, path="float"), conditioning, 16, 0.0, reference)
    torch_mu, _ = model.sample(torch.from_numpy(conditioning)[None], temperature=0.0)
    return weights, streamed, reference, torch_mu[0].numpy()


def test_a_residual_voice_with_silent_logits_plays_its_template():
    """With every logit favouring the zero residual, the voice emits clip(cycle(phi_t)): its grid
    point's harmonics, the same in torch, the kernel and its reference."""
    from models.gru_template import template_coefficients, template_signal
    from models.mu_law import mu_law_decode, mu_law_zero

    model = _model(CONFIGS[5])
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
        model.output.bias[mu_law_zero(256)] = 10.0
    conditioning = np.tile(np.float32([[0.3, 0.6, 52.0]]), (400, 1))
    weights, streamed, reference, torch_mu = _sample_three_ways_at_zero_temperature(model, conditioning)
    np.testing.assert_array_equal(streamed, reference)
    np.testing.assert_array_equal(torch_mu, streamed)
    coefficients = template_coefficients(weights.template, weights.template_pitches, weights.template_frame_s,
                                         0.3, 0.6, 52.0, 0.0, 16000)
    phase = np.cumsum(np.full(400, 2 * np.pi * 440.0 * 2.0 ** ((52.0 - 69.0) / 12.0) / 16000))
    expected = np.clip(template_signal(coefficients, phase)[:, 0], -1, 1)
    played = mu_law_decode(streamed)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(played, expected, atol=0.02 * np.abs(expected).max() + 2e-3)


def test_the_mean_residual_is_the_expected_decoded_value():
    """E[decode(k)] under the softmax, as its reference computes it; a wide uncertain distribution
    whose argmax is a wide class far from 0 has a mean near 0."""
    from models.mu_law import mu_law_decode, mu_law_zero

    rng = np.random.default_rng(3)
    for n_classes in (256, 17):
        logits = rng.normal(0, 2, n_classes).astype(np.float32)
        assert abs(mean_residual(logits) - mean_residual_reference(logits)) < 1e-6
    classes = np.arange(256)
    logits = -np.abs(classes - mu_law_zero(256)).astype(np.float32) / 40.0  # broad, peaked at silence
    logits[250] += 3.5  # ... whose likeliest class is loud ...
    logits[6] += 3.49  # ... with its mirror image nearly as likely
    assert abs(mu_law_decode(np.array([int(np.argmax(logits))]))[0]) > 0.8
    assert abs(mean_residual(logits)) < 0.1
    assert abs(mean_residual(logits) - mean_residual_reference(logits)) < 1e-6


def test_a_residual_voice_at_zero_temperature_plays_the_mean_residual_in_torch_the_kernel_and_its_reference():
    model = _model(CONFIGS[5])
    conditioning = np.tile(np.float32([[0.7, 0.2, 58.0]]), (300, 1))
    _, streamed, reference, torch_mu = _sample_three_ways_at_zero_temperature(model, conditioning)
    assert np.mean(streamed == reference) > 0.95  # float rounding may move a class by one, and the voice's path
    assert np.abs(streamed - reference)[:50].max() <= 1
    assert np.abs(torch_mu - streamed)[:50].max() <= 1
    assert len(np.unique(streamed)) > 10  # a random voice's residual moves the note


def test_the_age_feature_counts_from_the_note_onset_and_holds_at_its_limit():
    """The voice's conditioning sees the samples since its (re)start: two fresh states agree, a state
    64 samples (the 4 ms limit) into its note does not, and past the limit the age no longer moves."""
    weights = stream_weights(_model(CONFIGS[6]), "fp32")
    prev_mu, conditioning = _inputs(200, seed=2)
    conditioning[:] = conditioning[0]
    fresh = _kernel_logits(weights, prev_mu[:40], conditioning[:40])
    state = new_state(weights, path="float")
    state.hidden[:] = 0.0
    aged = np.zeros((200, 256), np.float32)
    gru_stream_logits(weights, state, prev_mu, conditioning, 1, aged)
    assert state.counters[2] == 200
    np.testing.assert_allclose(aged[:40], fresh, atol=1e-6)
    later = new_state(weights, path="float")
    later.counters[2] = 1000  # far past the limit
    held = np.zeros((40, 256), np.float32)
    gru_stream_logits(weights, later, prev_mu[:40], conditioning[:40], 1, held)
    assert np.abs(held - fresh).max() > 1e-3  # the age changes what the voice plays
    limit = new_state(weights, path="float")
    limit.counters[2] = 64
    at_limit = np.zeros((40, 256), np.float32)
    gru_stream_logits(weights, limit, prev_mu[:40], conditioning[:40], 1, at_limit)
    np.testing.assert_allclose(at_limit, held, atol=1e-6)


def test_stream_generate_reads_a_template_it_is_handed_and_refuses_a_mismatched_one():
    from models.gru_stream import stream_generate

    model = _model(CONFIGS[5])
    conditioning = np.tile(np.float32([[0.7, 0.2, 58.0]]), (200, 1))
    own = stream_generate(model, conditioning, 0.0, compression="fp32")
    table = model.timbre_template.numpy()
    same = stream_generate(model, conditioning, 0.0, compression="fp32",
                           template=(table, model.config.template_pitches))
    np.testing.assert_array_equal(own, same)
    other = stream_generate(model, conditioning, 0.0, compression="fp32", template=(table[:, :, ::-1].copy(),
                                                                                   model.config.template_pitches))
    assert np.abs(other - own).max() > 0.01
    with pytest.raises(ValueError, match="template must be"):
        stream_generate(model, conditioning, 0.0, template=(table[..., :4], model.config.template_pitches))
    with pytest.raises(ValueError, match="template must be"):
        stream_generate(_model(CONFIGS[2]), conditioning, 0.0, template=(table, model.config.template_pitches))

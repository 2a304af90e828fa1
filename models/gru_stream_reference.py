"""NumPy reference of the streaming GRU kernel (`models.gru_stream`): the same signatures and state
updates, float32 dequantised weights or exact integer sums, exact activations; tests hold the kernel to it."""
from __future__ import annotations

import numpy as np

from models.gru_stream import ACTIVATION_SCALES
from models.gru_template import shifted_class, template_coefficients, template_signal
from models.mu_law import mu_law_decode, mu_law_encode
from models.pitch import midi_to_hz
from models.timbre_grid import bilinear_lookup


def _dequantised(matrix: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return matrix.astype(np.float32) * scale[..., None]


def _matvec_reference(matrix, scale, bias, vector, quantised):
    """float32 [rows]: the integer path (exact int64 sums) when `quantised` is int16 | int8."""
    if quantised.dtype in ACTIVATION_SCALES:
        limit = np.float32(ACTIVATION_SCALES[quantised.dtype])
        activations = np.rint(np.clip(vector.astype(np.float32) * limit, -limit, limit)).astype(np.int64)
        sums = (matrix.astype(np.int64) @ activations).astype(np.float32)
        return sums * (scale * np.float32(1.0 / limit)) + bias
    return _dequantised(matrix, scale) @ vector + bias


def _next_uniform_reference(rng: np.ndarray) -> float:
    mask = (1 << 64) - 1
    x = int(rng[0])
    x ^= x >> 12
    x ^= (x << 25) & mask
    x ^= x >> 27
    rng[0] = x
    return (((x * 2685821657736338717) & mask) >> 11) / 9007199254740992.0


def sample_from_logits_reference(logits, temperature, rng, probabilities):
    """NumPy twin of `sample_from_logits` (same arguments, same draws)."""
    logits = np.asarray(logits, dtype=np.float64)
    best = int(np.argmax(logits))
    if temperature <= 0.0:
        return best
    cumulative = np.cumsum(np.exp((logits - logits[best]) / temperature))
    probabilities[:logits.shape[0]] = cumulative
    threshold = _next_uniform_reference(rng) * cumulative[-1]
    above = np.nonzero(cumulative > threshold)[0]
    return int(above[0]) if above.size else best


def mean_residual_reference(logits):
    """NumPy twin of `mean_residual`: E[decode(k)] under softmax(logits) (float)."""
    logits = np.asarray(logits, dtype=np.float64)
    weights = np.exp(logits - logits.max())
    return float(weights @ mu_law_decode(np.arange(logits.shape[0]), logits.shape[0]).astype(np.float64)
                 / weights.sum())


def _step_reference(weights, state, previous, x, y, pitch, control_interval):
    counters = state.counters
    if counters[1] <= 0:
        params = weights.features
        if weights.timbre_grid.shape[0]:
            timbre = list(bilinear_lookup(weights.timbre_grid, np.array([[x, y]]))[0])
        else:
            timbre = [x, y]
        features = timbre + [(pitch - params[0]) / params[1]]
        if params[2] > 0.5:
            features.append(params[3] / midi_to_hz(pitch) / params[4])
        if params[5] > 0:
            features.append(min(counters[2] / params[3], params[5]) / params[5])
        projected = np.tanh(weights.cond_proj_w @ np.asarray(features, np.float32) + weights.cond_proj_b)
        state.cond_gates[:] = weights.cond_gate_w @ projected
        if state.template.shape[0]:
            state.template[:] = template_coefficients(weights.template, weights.template_pitches,
                                                      weights.template_frame_s, x, y, pitch,
                                                      counters[2] / params[3], params[3])
        counters[1] = control_interval
    counters[1] -= 1
    counters[2] += 1
    hidden = state.hidden
    n_layers, hidden_size = hidden.shape
    input_gates = weights.table[previous] + state.cond_gates
    n_harmonics = weights.osc_gate_w.shape[1] // 2
    if n_harmonics:
        phase = state.phase[0] + 2.0 * np.pi * midi_to_hz(float(pitch)) / weights.features[3]
        phase -= 2.0 * np.pi * np.floor(phase / (2.0 * np.pi))
        state.phase[0] = phase
        harmonics = np.arange(1, n_harmonics + 1) * phase
        oscillator = np.stack([np.sin(harmonics), np.cos(harmonics)], axis=1).reshape(-1).astype(np.float32)
        input_gates = input_gates + weights.osc_gate_w @ oscillator
    if state.template.shape[0]:
        input_gates = input_gates + weights.template_gate_w @ template_signal(state.template, state.phase[0])
    for layer in range(n_layers):
        if layer > 0:
            input_gates = _matvec_reference(weights.w_ih[layer - 1], weights.w_ih_scale[layer - 1],
                                            weights.b_ih[layer - 1], hidden[layer - 1], state.quantised)
        hidden_gates = _matvec_reference(weights.w_hh[layer], weights.w_hh_scale[layer], weights.b_hh[layer],
                                         hidden[layer], state.quantised)
        r = 1.0 / (1.0 + np.exp(-(input_gates[:hidden_size] + hidden_gates[:hidden_size])))
        z = 1.0 / (1.0 + np.exp(-(input_gates[hidden_size:2 * hidden_size] + hidden_gates[hidden_size:2 * hidden_size])))
        n = np.tanh(input_gates[2 * hidden_size:] + r * hidden_gates[2 * hidden_size:])
        hidden[layer] = (1.0 - z) * n + z * hidden[layer]
    logits = _matvec_reference(weights.w_out, weights.w_out_scale, weights.b_out, hidden[n_layers - 1],
                               state.quantised)
    if not weights.template_residual:
        return logits, 0.0
    return logits, float(template_signal(state.template, state.phase[0])[0])


def gru_stream_sample_reference(weights, state, conditioning, control_interval, temperature, out_mu):
    """NumPy twin of `gru_stream_sample` (same signature and state updates)."""
    previous = int(state.counters[0])
    n_classes = weights.table.shape[0]
    for t in range(out_mu.shape[0]):
        logits, prediction = _step_reference(weights, state, previous, *conditioning[t], control_interval)
        if weights.template_residual:
            if temperature <= 0.0:
                out_mu[t] = int(mu_law_encode(prediction + mean_residual_reference(logits), n_classes))
            else:
                out_mu[t] = shifted_class(sample_from_logits_reference(logits, temperature, state.rng,
                                                                       state.scratch[2]), prediction, n_classes)
            previous = shifted_class(int(out_mu[t]), -prediction, n_classes)
        else:
            previous = sample_from_logits_reference(logits, temperature, state.rng, state.scratch[2])
            out_mu[t] = previous
    state.counters[0] = previous


def gru_stream_logits_reference(weights, state, prev_mu, conditioning, control_interval, logits_out):
    """NumPy twin of `gru_stream_logits`."""
    for t in range(prev_mu.shape[0]):
        logits_out[t] = _step_reference(weights, state, int(prev_mu[t]), *conditioning[t], control_interval)[0]

"""Streaming GRU synthesis, one 16 kHz sample at a time: a Numba `nogil` kernel plus its NumPy reference.

The torch `GruSynth` is repacked for a single-sample loop (LPCNet's tricks):
- the previous sample's embedding times the first layer's input matrix is a lookup table
  `table` [n_classes, 3 * hidden] (the first layer's input bias folded in);
- the conditioning's contribution to the first layer's gates, W_ih0[:, E:E+C] tanh(W_c f + b_c), is
  computed at control rate (every `control_interval` samples) and held in between;
- the oscillator input (models with `oscillator_harmonics` K > 0) runs per sample: the phase in
  `state.phase` advances by 2 pi f0(pitch_t) / sample_rate (float64) and W_ih0[:, E+C:] [3H, 2K]
  times (sin k phi, cos k phi) is added to the first layer's input gates, so glides are exact;
- the timbre template (models with `template_harmonics` M > 0, `models.gru_template`): its
  coefficients [2M] are read from the table at control rate (bilinear in x, y, linear in pitch,
  harmonics above Nyquist dropped) and held; per sample the harmonic cycle and its quadrature at the
  oscillator's phase (a rotation recursion, no trigonometry per harmonic) times W_ih0[:, -2:] join
  the input gates;
- the template residual (models with `template_residual`): the cycle is the prediction p of the
  sample, the softmax draws the residual's class e, the voice emits the class of
  clip(p + decode(e), -1, 1) and reads back the class of decode(x) - p as the next step's input; at
  temperature 0 e is the distribution's mean E[decode(e)] (the residual's least-squares estimate,
  `mean_residual`) instead of its most likely class: mu-law classes widen away from 0, so the argmax
  of an uncertain residual is a wide class far from 0, and the mean falls back to the template;
- the recurrent matrices (W_hh of every layer, W_ih of the upper layers) and the output layer are
  stored as int8 with one float32 scale per row (`compression="int8"`, 1.1 MB for 3x256: stays in a
  2 MB L2) or as float32 (`compression="fp32"`, exact);
- with int8 weights the activations can be quantised too and the matrix-vector products become
  integer dot products with exact int32 sums (`new_state(path=...)`, `state.quantised` holds them):
  "int16_dot" (h * 32767; AVX-512BW vpmaddwd on 32 columns) or "int8_dot" (h * 127; AVX2 vpsignb +
  vpmaddubsw + vpmaddwd on 32 columns, 4x the multiply-adds per instruction of the float path); where
  the CPU lacks those instructions the same sums come from a portable loop. "float" multiplies the
  int8 weights with float32 activations (same code as fp32, `state.quantised` empty). The default is
  int16_dot with AVX-512BW, int8_dot with AVX2, else float (`default_kernel_path`, `kernel_path`);
  the choice is made by the state's scratch type at compile time;
- tanh / sigmoid use a [13/6] rational approximation (max error 3.4e-7), so the loops vectorise;
- sampling is inverse-CDF on softmax(logits / temperature) with an explicit xorshift64* generator
  (temperature 0 = argmax; a template-residual voice's mean residual).

Gate layout and update follow torch.nn.GRU (rows r, z, n):
    r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z), n = tanh(x_n + r * h_n), h' = (1 - z) n + z h.

Functions `gru_stream_sample` / `gru_stream_logits` (kernels) and their `_reference` twins
(`models.gru_stream_reference`: NumPy, float32 dequantised weights or exact integer sums, exact
activations) share one signature. State is explicit
(`GruStreamState`): hidden [n_layers, hidden], the held conditioning gates, counters and the RNG.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from models.checkpoint import CheckpointError, load_arrays, load_config
from models.gru_config import GruSynthConfig
from models.gru_template import mu_law_class_at, shifted_class_at, template_coefficients_into, template_signal_at
from models.mu_law import mu_law_decode, mu_law_zero
from models.pitch import A4_HZ, A4_MIDI
from models.kernel_cache import drop_stale_cache

drop_stale_cache(__name__)

COMPRESSIONS = ("int8", "fp32")


class GruStreamWeights(NamedTuple):
    """A `GruSynth` repacked for the streaming kernel (L layers, H hidden, Q classes, C conditioning)."""

    table: np.ndarray           # float32 [Q, 3H]   embedding @ W_ih0[:, :E].T + b_ih0
    cond_proj_w: np.ndarray     # float32 [C, F]    conditioning projection
    cond_proj_b: np.ndarray     # float32 [C]
    cond_gate_w: np.ndarray     # float32 [3H, C]   W_ih0[:, E:E+C]
    osc_gate_w: np.ndarray      # float32 [3H, 2K]  W_ih0[:, E+C:E+C+2K] (oscillator sin/cos pairs; K may be 0)
    template_gate_w: np.ndarray # float32 [3H, 2]   W_ih0[:, -2:] (template cycle, quadrature), or [3H, 0]
    w_ih: np.ndarray            # int8|float32 [L-1, 3H, H]  upper layers' input matrices
    w_ih_scale: np.ndarray      # float32 [L-1, 3H]
    b_ih: np.ndarray            # float32 [L-1, 3H]
    w_hh: np.ndarray            # int8|float32 [L, 3H, H]
    w_hh_scale: np.ndarray      # float32 [L, 3H]
    b_hh: np.ndarray            # float32 [L, 3H]
    w_out: np.ndarray           # int8|float32 [Q, H]
    w_out_scale: np.ndarray     # float32 [Q]
    b_out: np.ndarray           # float32 [Q]
    features: np.ndarray        # float64 [6]: pitch_min, pitch_range, use_period (0/1), sample_rate, period_scale,
                                # age_feature_s (0: no age feature)
    timbre_grid: np.ndarray     # float32 [N, N, D]: timbre grid nodes (the timbre features are h(x, y)),
                                # or [0, 0, 0]: the timbre features are (x, y)
    template: np.ndarray        # float32 [N, N, P, F, 2M]: timbre template table, or [0, 0, 0, 0, 0]: none
    template_pitches: np.ndarray  # float64 [P]: its MIDI pitches (ascending), or [0]
    template_frame_s: np.ndarray  # float64 [F]: its frames' times (s since onset, ascending), or [0]
    template_residual: bool     # the template's cycle predicts the sample; the softmax is over the residual


class GruStreamState(NamedTuple):
    """Explicit recurrent state of one stream (mutated in place by the kernels)."""

    hidden: np.ndarray          # float32 [L, H]
    cond_gates: np.ndarray      # float32 [3H]  held control-rate conditioning term
    counters: np.ndarray        # int64 [3]: previous mu class, samples left before the next control update,
                                # samples since the note's onset (the age feature's clock)
    phase: np.ndarray           # float64 [1]: oscillator phase (radians, in [0, 2 pi))
    rng: np.ndarray             # uint64 [1]: xorshift64* state (never 0)
    scratch: np.ndarray         # float32 [4, max(3H, Q, D)]: input gates, hidden gates, probabilities, timbre features
    quantised: np.ndarray       # int16 | int8 [H]: integer-dot activations, or float32 [0]: float path
    template: np.ndarray        # float32 [2M]: held template coefficients (control rate), or [0]


def _quantise_rows(matrix: np.ndarray, compression: str) -> tuple[np.ndarray, np.ndarray]:
    """[..., rows, cols] float -> (weights int8|float32 [..., rows, cols], scale float32 [..., rows])."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if compression == "fp32":
        return np.ascontiguousarray(matrix), np.ones(matrix.shape[:-1], dtype=np.float32)
    peak = np.abs(matrix).max(axis=-1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    quantised = np.clip(np.rint(matrix / scale[..., None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(quantised), scale


def stream_weights(model, compression: str = "int8") -> GruStreamWeights:
    """Repack a torch `GruSynth` for the kernel. compression: "int8" (per-row scales) or "fp32"."""
    tensors = {name: value.detach().cpu().numpy() for name, value in model.state_dict().items()}
    return stream_weights_from_arrays(model.config, tensors, compression)


def load_stream_weights(folder, compression: str = "int8") -> tuple[GruStreamWeights, GruSynthConfig]:
    """A GRU checkpoint folder (`models.gru.save_gru`) repacked for the kernel without torch:
    (weights, config). A bad folder, or weights that do not fit its config, raise CheckpointError
    naming the file."""
    config = load_config(folder, GruSynthConfig)
    arrays = load_arrays(folder)
    expected = _expected_shapes(config)
    found = {name: tuple(array.shape) for name, array in arrays.items()}
    if found != expected:
        wrong = sorted(set(found.items()) ^ set(expected.items()))[:4]
        raise CheckpointError(f"{folder}/model.safetensors does not match its {config.n_layers}x"
                              f"{config.hidden_size} config: {wrong}")
    return stream_weights_from_arrays(config, arrays, compression), config


def _expected_shapes(config: GruSynthConfig) -> dict[str, tuple]:
    """Tensor names and shapes of a `GruSynth` with `config` (torch's layout)."""
    gates, hidden = 3 * config.hidden_size, config.hidden_size
    shapes = {"embedding.weight": (config.n_classes, config.embedding_size),
              "conditioning_projection.weight": (config.conditioning_size, config.n_features),
              "conditioning_projection.bias": (config.conditioning_size,),
              "output.weight": (config.n_classes, hidden), "output.bias": (config.n_classes,)}
    if config.timbre_grid_size:
        shapes["timbre_grid"] = (config.timbre_grid_size, config.timbre_grid_size, config.timbre_grid_dim)
    if config.template_harmonics:
        shapes["timbre_template"] = config.template_shape
    for layer in range(config.n_layers):
        shapes[f"gru.weight_ih_l{layer}"] = (gates, config.input_size if layer == 0 else hidden)
        shapes[f"gru.weight_hh_l{layer}"] = (gates, hidden)
        shapes[f"gru.bias_ih_l{layer}"] = (gates,)
        shapes[f"gru.bias_hh_l{layer}"] = (gates,)
    return shapes


def stream_weights_from_arrays(config: GruSynthConfig, arrays: dict, compression: str = "int8") -> GruStreamWeights:
    """Repack a GRU's weights {torch parameter name: array} (see `_expected_shapes`) for the kernel."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown GRU weight compression {compression!r}; choose one of {COMPRESSIONS}")
    n_layers, embedding_size = config.n_layers, config.embedding_size
    oscillator_start = embedding_size + config.conditioning_size
    template_start = oscillator_start + 2 * config.oscillator_harmonics
    tensors = {name: np.asarray(value, dtype=np.float32) for name, value in arrays.items()}
    w_ih0 = tensors["gru.weight_ih_l0"]
    table = tensors["embedding.weight"] @ w_ih0[:, :embedding_size].T + tensors["gru.bias_ih_l0"]
    upper = [tensors[f"gru.weight_ih_l{layer}"] for layer in range(1, n_layers)]
    upper_stack = np.stack(upper) if upper else np.zeros((0, 3 * config.hidden_size, config.hidden_size), np.float32)
    w_ih, w_ih_scale = _quantise_rows(upper_stack, compression)
    b_ih = np.stack([tensors[f"gru.bias_ih_l{layer}"] for layer in range(1, n_layers)]) if upper \
        else np.zeros((0, 3 * config.hidden_size), np.float32)
    w_hh, w_hh_scale = _quantise_rows(np.stack([tensors[f"gru.weight_hh_l{layer}"] for layer in range(n_layers)]),
                                      compression)
    w_out, w_out_scale = _quantise_rows(tensors["output.weight"], compression)
    features = np.array([config.pitch_min, config.pitch_range, float(config.use_period_feature),
                         config.sample_rate, config.period_scale_samples, config.age_feature_s], dtype=np.float64)
    return GruStreamWeights(
        table=np.ascontiguousarray(table, dtype=np.float32),
        cond_proj_w=np.ascontiguousarray(tensors["conditioning_projection.weight"]),
        cond_proj_b=np.ascontiguousarray(tensors["conditioning_projection.bias"]),
        cond_gate_w=np.ascontiguousarray(w_ih0[:, embedding_size:oscillator_start]),
        osc_gate_w=np.ascontiguousarray(w_ih0[:, oscillator_start:template_start]),
        template_gate_w=np.ascontiguousarray(w_ih0[:, template_start:]),
        w_ih=w_ih, w_ih_scale=w_ih_scale, b_ih=np.ascontiguousarray(b_ih, dtype=np.float32),
        w_hh=w_hh, w_hh_scale=w_hh_scale,
        b_hh=np.ascontiguousarray(np.stack([tensors[f"gru.bias_hh_l{layer}"] for layer in range(n_layers)])),
        w_out=w_out, w_out_scale=w_out_scale, b_out=np.ascontiguousarray(tensors["output.bias"]),
        features=features,
        timbre_grid=np.ascontiguousarray(tensors["timbre_grid"]) if config.timbre_grid_size
        else np.zeros((0, 0, 0), np.float32),
        template=np.ascontiguousarray(tensors["timbre_template"]) if config.template_harmonics
        else np.zeros((0, 0, 0, 0, 0), np.float32),
        template_pitches=np.array(config.template_pitches if config.template_harmonics else (0.0,), np.float64),
        template_frame_s=np.array(config.template_frame_s or (0.0,), np.float64),
        template_residual=bool(config.template_residual))


def weight_bytes_per_sample(weights: GruStreamWeights) -> int:
    """Bytes of weights read per generated sample (recurrent + output matrices and scales, one table row)."""
    streamed = (weights.w_ih, weights.w_ih_scale, weights.b_ih, weights.w_hh, weights.w_hh_scale, weights.b_hh,
                weights.w_out, weights.w_out_scale, weights.b_out)
    return int(sum(array.nbytes for array in streamed) + weights.table.shape[1] * weights.table.itemsize)


KERNEL_PATHS = ("int16_dot", "int8_dot", "float")
"""Activation formats of the kernel: int16 (x 32767) or int8 (x 127) activations times the int8
weights by integer dot products, or float32 activations (the only one for fp32 weights)."""


def integer_dot_supported(weights: GruStreamWeights) -> bool:
    """True when integer dot products can run: int8 weights and a hidden size that is a multiple of
    32 and at most 512 (int32 sums cannot overflow)."""
    hidden_size = weights.w_hh.shape[2]
    return weights.w_hh.dtype == np.int8 and hidden_size % 32 == 0 and hidden_size <= 512


def default_kernel_path(weights: GruStreamWeights) -> str:
    """The fastest exact-enough path here: int16_dot with AVX-512BW, int8_dot with AVX2 (vpmaddubsw),
    float otherwise (and for fp32 weights or hidden sizes that are not a multiple of 32)."""
    if not integer_dot_supported(weights):
        return "float"
    if _dot4_instruction_set(np.int16) == "avx512bw":
        return "int16_dot"
    return "int8_dot" if _dot4_instruction_set(np.int8) == "avx2" else "float"


def kernel_path(state: "GruStreamState") -> str:
    """How `state` runs: 'int16_dot/avx512bw', 'int8_dot/avx2', 'int8_dot/portable', ..., or 'float'."""
    if state.quantised.dtype == np.float32:
        return "float"
    name = "int16_dot" if state.quantised.dtype == np.int16 else "int8_dot"
    return f"{name}/{_dot4_instruction_set(state.quantised.dtype)}"


def new_state(weights: GruStreamWeights, seed: int = 0, first_mu: int | None = None,
              path: str | None = None) -> GruStreamState:
    """Zero hidden state, conditioning refreshed at the first sample, previous sample = silence.

    path: one of KERNEL_PATHS; None = `default_kernel_path`. The integer paths quantise the
    activations (int16 or int8, held in `state.quantised`) and multiply the int8 weights by integer
    dot products (the vector instructions the CPU has, else a portable loop); "float" dequantises the
    weights and keeps float32 activations."""
    n_layers, hidden_size = weights.w_hh.shape[0], weights.w_hh.shape[2]
    n_classes = weights.table.shape[0]
    path = default_kernel_path(weights) if path is None else path
    if path not in KERNEL_PATHS:
        raise ValueError(f"unknown GRU kernel path {path!r}; choose one of {KERNEL_PATHS}")
    if path != "float" and not integer_dot_supported(weights):
        raise ValueError(f"kernel path {path} needs int8 weights and a hidden size that is a multiple of 32 "
                         "(<= 512)")
    quantised = {"int16_dot": np.zeros(hidden_size, np.int16), "int8_dot": np.zeros(hidden_size, np.int8),
                 "float": np.zeros(0, np.float32)}[path]
    counters = np.array([mu_law_zero(n_classes) if first_mu is None else int(first_mu), 0, 0], dtype=np.int64)
    rng = np.array([(int(seed) * 0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D) % (1 << 64) or 1], dtype=np.uint64)
    return GruStreamState(hidden=np.zeros((n_layers, hidden_size), np.float32),
                          cond_gates=np.zeros(3 * hidden_size, np.float32), counters=counters,
                          phase=np.zeros(1, np.float64), rng=rng,
                          scratch=np.zeros((4, max(3 * hidden_size, n_classes, weights.timbre_grid.shape[2])),
                                           np.float32),
                          quantised=quantised, template=np.zeros(weights.template.shape[4], np.float32))


def copy_state(state: GruStreamState) -> GruStreamState:
    """An independent copy of `state`."""
    return GruStreamState(*(array.copy() for array in state))


def stream_generate(model, conditioning: np.ndarray, temperature: float = 1.0, seed: int = 0,
                    compression: str = "int8", control_interval: int = 16, template=None) -> np.ndarray:
    """Free-running generation with the streaming kernel (much faster than `GruSynth.sample`).

    model: a torch `GruSynth`; conditioning float [n, 3] (x, y, MIDI pitch) per sample; template:
    None (the model's own table) or (table float32 [N, N, P, F, 2M], pitches [P]) read instead, for
    instance `models.gru_template.point_table` of a bank. Returns the decoded audio float32 [n] in [-1, 1]."""
    weights = stream_weights(model, compression)
    if template is not None:
        if not weights.template.size or np.shape(template[0])[-2:] != weights.template.shape[-2:]:
            raise ValueError(f"template must be [N, N, P, F, 2M] with F, 2M = {weights.template.shape[-2:]}, "
                             f"for a voice with a template; got {np.shape(template[0])}")
        weights = weights._replace(template=np.ascontiguousarray(template[0], np.float32),
                                   template_pitches=np.asarray(template[1], np.float64))
    mu = np.zeros(conditioning.shape[0], np.int64)
    gru_stream_sample(weights, new_state(weights, seed=seed), np.ascontiguousarray(conditioning, np.float32),
                      control_interval, temperature, mu)
    return mu_law_decode(mu, weights.table.shape[0])


# ----------------------------------------------------------------------------------------- kernel pieces

@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret uint32 bits as float32 (no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


_T_CLAMP = 7.90531110763549805
_TANH_A = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
           -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
_TANH_B = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = (np.float32(value) for value in _TANH_A)
_B0, _B2, _B4, _B6 = (np.float32(value) for value in _TANH_B)


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def _tanh(x):
    """Rational [13/6] tanh on float32, max abs error 3.4e-7; vectorisable."""
    x = min(max(x, np.float32(-_T_CLAMP)), np.float32(_T_CLAMP))
    x2 = x * x
    p = ((((((_A13 * x2 + _A11) * x2 + _A9) * x2 + _A7) * x2 + _A5) * x2 + _A3) * x2 + _A1) * x
    q = ((_B6 * x2 + _B4) * x2 + _B2) * x2 + _B0
    return p / q


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def _sigmoid(x):
    return np.float32(0.5) + np.float32(0.5) * _tanh(np.float32(0.5) * x)


@numba.njit(fastmath=True, error_model="numpy", cache=True)
def _matvec(matrix, scale, bias, vector, out):
    """out[i] = scale[i] * sum_j matrix[i, j] * vector[j] + bias[i]; four rows per pass over `vector`."""
    n_rows, n_cols = matrix.shape
    n_blocked = n_rows - n_rows % 4
    for i in range(0, n_blocked, 4):
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for j in range(n_cols):
            v = vector[j]
            a0 += np.float32(matrix[i, j]) * v
            a1 += np.float32(matrix[i + 1, j]) * v
            a2 += np.float32(matrix[i + 2, j]) * v
            a3 += np.float32(matrix[i + 3, j]) * v
        out[i] = a0 * scale[i] + bias[i]
        out[i + 1] = a1 * scale[i + 1] + bias[i + 1]
        out[i + 2] = a2 * scale[i + 2] + bias[i + 2]
        out[i + 3] = a3 * scale[i + 3] + bias[i + 3]
    for i in range(n_blocked, n_rows):
        acc = np.float32(0.0)
        for j in range(n_cols):
            acc += np.float32(matrix[i, j]) * vector[j]
        out[i] = acc * scale[i] + bias[i]


ACTIVATION_SCALES = {np.dtype(np.int16): 32767.0, np.dtype(np.int8): 127.0}
"""Integer activations: q = rint(h * scale) for h in [-1, 1] (GRU hidden states are), by the dtype of
`state.quantised`: int16 (32767) or int8 (127; |q| <= 127 keeps vpmaddubsw's pair sums below 2^15)."""


def compile_target_features() -> dict:
    """CPU features Numba compiles for (NUMBA_CPU_FEATURES when set, else the host's), as the codegen does."""
    if numba.config.CPU_FEATURES is not None:
        return {item[1:]: item[0] == "+" for item in numba.config.CPU_FEATURES.split(",") if item}
    return dict(binding.get_host_cpu_features())


def _dot4_codegen(avx2_int8: bool):
    """Code generator of the 4-row integer dot product (see `_dot4_int8_int16` / `_dot4_int8_int8`)."""
    i32, i16, i8, i1 = ir.IntType(32), ir.IntType(16), ir.IntType(8), ir.IntType(1)
    lanes = 32

    def codegen(context, builder, sig, args):
        matrix_struct = context.make_array(sig.args[0])(context, builder, args[0])
        vector_struct = context.make_array(sig.args[2])(context, builder, args[2])
        n_cols = builder.extract_value(matrix_struct.shape, 1)
        module = builder.module
        v32i8 = ir.VectorType(i8, lanes)
        if avx2_int8:  # |x| (u8) x sign(x) w (s8) -> pairs (s16) -> quads (s32)
            v16i16, v8i32 = ir.VectorType(i16, 16), ir.VectorType(i32, 8)
            sum_type, vector_type = v8i32, v32i8
            absolute = cgutils.get_or_insert_function(module, ir.FunctionType(v32i8, [v32i8, i1]), "llvm.abs.v32i8")
            sign = cgutils.get_or_insert_function(module, ir.FunctionType(v32i8, [v32i8, v32i8]),
                                                  "llvm.x86.avx2.psign.b")
            pairs = cgutils.get_or_insert_function(module, ir.FunctionType(v16i16, [v32i8, v32i8]),
                                                   "llvm.x86.avx2.pmadd.ub.sw")
            quads = cgutils.get_or_insert_function(module, ir.FunctionType(v8i32, [v16i16, v16i16]),
                                                   "llvm.x86.avx2.pmadd.wd")
            ones = ir.Constant(v16i16, [1] * 16)
        else:  # sign-extended w (s16) x x (s16) -> pairs (s32), 512-bit
            v32i16, v16i32 = ir.VectorType(i16, lanes), ir.VectorType(i32, 16)
            sum_type, vector_type = v16i32, v32i16
            multiply_add = cgutils.get_or_insert_function(module, ir.FunctionType(v16i32, [v32i16, v32i16]),
                                                          "llvm.x86.avx512.pmaddw.d.512")
        reduce_add = cgutils.get_or_insert_function(module, ir.FunctionType(i32, [sum_type]),
                                                    f"llvm.vector.reduce.add.v{sum_type.count}i32")
        row_index = context.cast(builder, args[1], sig.args[1], types.intp)
        accumulators = [cgutils.alloca_once_value(builder, ir.Constant(sum_type, [0] * sum_type.count))
                        for _ in range(4)]
        rows = [builder.gep(matrix_struct.data, [builder.mul(builder.add(row_index, ir.Constant(row_index.type, r)),
                                                             n_cols)]) for r in range(4)]
        with cgutils.for_range_slice(builder, ir.Constant(n_cols.type, 0), n_cols, ir.Constant(n_cols.type, lanes)) \
                as (column, _):
            x = builder.load(builder.bitcast(builder.gep(vector_struct.data, [column]), vector_type.as_pointer()),
                             align=1)
            if avx2_int8:
                magnitude = builder.call(absolute, [x, ir.Constant(i1, 0)])
            for accumulator, row_pointer in zip(accumulators, rows):
                w = builder.load(builder.bitcast(builder.gep(row_pointer, [column]), v32i8.as_pointer()), align=1)
                if avx2_int8:
                    product = builder.call(quads, [builder.call(pairs, [magnitude, builder.call(sign, [w, x])]),
                                                   ones])
                else:
                    product = builder.call(multiply_add, [builder.sext(w, vector_type), x])
                builder.store(builder.add(builder.load(accumulator), product), accumulator)
        sums = [builder.call(reduce_add, [builder.load(accumulator)]) for accumulator in accumulators]
        return context.make_tuple(builder, sig.return_type, sums)

    return codegen


@intrinsic
def _dot4_int8_int16(typingctx, matrix, row, vector):
    """Sums over j of int8 matrix[row + r, j] * int16 vector[j] for r = 0..3 (int32 x 4), 32 columns
    at a time with the AVX-512BW multiply-add of int16 pairs (vpmaddwd zmm). Needs n_cols % 32 == 0."""
    return types.UniTuple(types.int32, 4)(matrix, row, vector), _dot4_codegen(avx2_int8=False)


@intrinsic
def _dot4_int8_int8(typingctx, matrix, row, vector):
    """Sums over j of int8 matrix[row + r, j] * int8 vector[j] for r = 0..3 (int32 x 4), 32 columns
    at a time with AVX2: vpsignb moves the sign of x onto w, vpmaddubsw multiplies |x| (u8) by it and
    adds pairs (exact: |x|, |w| <= 127), vpmaddwd by ones adds pairs of those. Needs n_cols % 32 == 0."""
    return types.UniTuple(types.int32, 4)(matrix, row, vector), _dot4_codegen(avx2_int8=True)


@numba.njit(inline="always", error_model="numpy")
def _dot_row(matrix, row, quantised):
    """sum_j matrix[row, j] * quantised[j] (int); a single-accumulator loop LLVM vectorises on any target."""
    acc = np.int32(0)
    for j in range(matrix.shape[1]):  # int32 throughout (Numba would widen to int64): pmaddwd-shaped
        acc = np.int32(acc + np.int32(np.int16(matrix[row, j]) * np.int16(quantised[j])))
    return acc


@numba.njit(inline="always", error_model="numpy")
def _dot4_portable(matrix, row, quantised):
    return (_dot_row(matrix, row, quantised), _dot_row(matrix, row + 1, quantised),
            _dot_row(matrix, row + 2, quantised), _dot_row(matrix, row + 3, quantised))


def _dot4(matrix, row, quantised):
    """Four integer row dot products (int x 4): the vector intrinsic the target has for the dtype of
    `quantised` (AVX-512BW for int16, AVX2 for int8), else `_dot4_portable`."""


def _dot4_instruction_set(dtype) -> str:
    """'avx512bw', 'avx2' or 'portable': how `_dot4` multiplies activations of `dtype` on this target."""
    features = compile_target_features()
    if np.dtype(dtype) == np.int16 and features.get("avx512bw"):
        return "avx512bw"
    if np.dtype(dtype) == np.int8 and features.get("avx2"):
        return "avx2"
    return "portable"


@overload(_dot4, inline="always")
def _dot4_overload(matrix, row, quantised):
    instruction_set = _dot4_instruction_set(np.dtype(str(quantised.dtype)))
    if instruction_set == "avx512bw":
        return lambda matrix, row, quantised: _dot4_int8_int16(matrix, row, quantised)
    if instruction_set == "avx2":
        return lambda matrix, row, quantised: _dot4_int8_int8(matrix, row, quantised)
    return lambda matrix, row, quantised: _dot4_portable(matrix, row, quantised)


@numba.njit(fastmath=True, error_model="numpy", cache=True)
def _integer_matvec(matrix, scale, bias, vector, quantised, out, activation_scale):
    """out[i] = scale[i] / s * sum_j matrix[i, j] * rint(s vector[j]) + bias[i] (s = activation_scale)
    with int8 `matrix` [rows, n_cols % 32 == 0] and int16|int8 scratch `quantised` [n_cols]."""
    n_rows, n_cols = matrix.shape
    limit = np.float32(activation_scale)
    for j in range(n_cols):
        quantised[j] = np.rint(min(max(vector[j] * limit, -limit), limit))
    unit = np.float32(1.0 / activation_scale)
    n_blocked = n_rows - n_rows % 4
    for i in range(0, n_blocked, 4):
        a0, a1, a2, a3 = _dot4(matrix, i, quantised)
        out[i] = np.float32(a0) * (scale[i] * unit) + bias[i]
        out[i + 1] = np.float32(a1) * (scale[i + 1] * unit) + bias[i + 1]
        out[i + 2] = np.float32(a2) * (scale[i + 2] * unit) + bias[i + 2]
        out[i + 3] = np.float32(a3) * (scale[i + 3] * unit) + bias[i + 3]
    for i in range(n_blocked, n_rows):
        out[i] = np.float32(_dot_row(matrix, i, quantised)) * (scale[i] * unit) + bias[i]


def _matvec_any(matrix, scale, bias, vector, quantised, out):
    """out = scale * (matrix @ vector) + bias, by integer dot products when `quantised` is an
    int16 | int8 scratch [n_cols], else by `_matvec` (chosen at compile time from its type)."""


@overload(_matvec_any, inline="always")
def _matvec_any_overload(matrix, scale, bias, vector, quantised, out):
    if isinstance(quantised.dtype, types.Integer):
        activation_scale = ACTIVATION_SCALES[np.dtype(str(quantised.dtype))]

        def integer_path(matrix, scale, bias, vector, quantised, out):
            _integer_matvec(matrix, scale, bias, vector, quantised, out, activation_scale)
        return integer_path

    def float_path(matrix, scale, bias, vector, quantised, out):
        _matvec(matrix, scale, bias, vector, out)
    return float_path


@numba.njit(inline="always")
def _next_uniform(rng):
    """xorshift64*: advance rng[0], return a float64 uniform in [0, 1)."""
    x = rng[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    rng[0] = x
    return np.float64((x * np.uint64(2685821657736338717)) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


_EXP2_POLY = tuple(np.float32(c) for c in (2.18712711e-04, 1.23824217e-03, 9.68618441e-03, 5.54789143e-02,
                                           2.40231096e-01, 6.93146838e-01, 1.0))


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def _exp_nonpositive(x):
    """exp(x) for float32 x <= 0 (clamped at -87), relative error < 4e-6; vectorisable."""
    t = max(x, np.float32(-87.0)) * np.float32(1.4426950408889634)
    whole = np.floor(t)
    f = t - whole
    c6, c5, c4, c3, c2, c1, c0 = _EXP2_POLY
    poly = (((((c6 * f + c5) * f + c4) * f + c3) * f + c2) * f + c1) * f + c0
    return poly * _bits_as_float32(np.uint32(np.int32(whole) + np.int32(127)) << np.uint32(23))


@numba.njit(nogil=True, cache=True, fastmath=True, error_model="numpy")
def sample_from_logits(logits, temperature, rng, probabilities):
    """Inverse-CDF draw from softmax(logits / temperature). logits float32 [Q]; temperature 0 = argmax;
    rng uint64 [1] (advanced); probabilities float32 [>= Q] scratch. Returns the class (int)."""
    n_classes = logits.shape[0]
    best = 0
    for k in range(1, n_classes):
        if logits[k] > logits[best]:
            best = k
    if temperature <= 0.0:
        return best
    peak = logits[best]
    inverse_temperature = np.float32(1.0 / temperature)
    total = 0.0
    for k in range(n_classes):
        weight = _exp_nonpositive((logits[k] - peak) * inverse_temperature)
        probabilities[k] = weight
        total += weight
    threshold = _next_uniform(rng) * total
    cumulative = 0.0
    for k in range(n_classes):
        cumulative += probabilities[k]
        if cumulative > threshold:
            return k
    return best


@numba.njit(nogil=True, cache=True, fastmath=True, error_model="numpy")
def mean_residual(logits):
    """E[decode(k)] under softmax(logits): the mean (least-squares estimate) of the value a mu-law
    distribution encodes. logits float32 [Q] -> float64 in [-1, 1]. decode(k) = sign(y) ((1 + mu)^|y| - 1) / mu,
    y = 2k / mu - 1, mu = Q - 1; (1 + mu)^|y| is (1 + mu) / c^k below the middle class and
    c^k / (1 + mu) above it, c = (1 + mu)^(2 / mu), so the loop needs no power per class."""
    n_classes = logits.shape[0]
    peak = logits[0]
    for k in range(1, n_classes):
        peak = max(peak, logits[k])
    mu = np.float64(n_classes - 1)
    base = mu + 1.0
    step = base ** (2.0 / mu)
    power = 1.0  # c^k
    total, weighted = 0.0, 0.0
    for k in range(n_classes):
        weight = np.float64(_exp_nonpositive(logits[k] - peak))
        if 2 * k < n_classes - 1:
            weighted -= weight * (base / power - 1.0)
        elif 2 * k > n_classes - 1:
            weighted += weight * (power / base - 1.0)
        total += weight
        power *= step
    return weighted / (total * mu)


@numba.njit(inline="always", error_model="numpy")
def _f0_hz(pitch):
    """Fundamental (Hz, float64) of MIDI `pitch` (equal temperament, A4 = 440 Hz)."""
    return A4_HZ * 2.0 ** ((np.float64(pitch) - A4_MIDI) / 12.0)


@numba.njit(inline="always", error_model="numpy")
def _timbre_features(grid, x, y, out):
    """Timbre features into out[:n]; returns n: (x, y), or the grid nodes [N, N, D] read bilinearly
    at (x, y) as `models.timbre_grid.bilinear_lookup` reads them."""
    if grid.shape[0] == 0:
        out[0], out[1] = x, y
        return 2
    last = grid.shape[0] - 1
    column = min(max(np.float64(x), 0.0), 1.0) * last
    row = min(max(np.float64(y), 0.0), 1.0) * last
    c0, r0 = min(int(np.floor(column)), last - 1), min(int(np.floor(row)), last - 1)
    fx, fy = column - c0, row - r0
    for d in range(grid.shape[2]):
        out[d] = np.float32((1 - fx) * (1 - fy) * grid[r0, c0, d] + fx * (1 - fy) * grid[r0, c0 + 1, d]
                            + (1 - fx) * fy * grid[r0 + 1, c0, d] + fx * fy * grid[r0 + 1, c0 + 1, d])
    return grid.shape[2]


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def _refresh_conditioning(weights, state, x, y, pitch):
    """Held conditioning gates = cond_gate_w @ tanh(cond_proj_w @ features(x, y, pitch, age) + cond_proj_b)."""
    params = weights.features
    age_limit = params[5]
    age = min(state.counters[2] / params[3], age_limit) / age_limit if age_limit > 0 else 0.0
    f0_hz = _f0_hz(pitch)
    period = params[3] / f0_hz / params[4]
    projected = state.scratch[2]
    timbre = state.scratch[3]
    n_timbre = _timbre_features(weights.timbre_grid, x, y, timbre)
    n_cond = weights.cond_proj_w.shape[0]
    use_period = params[2] > 0.5
    for c in range(n_cond):
        acc = weights.cond_proj_b[c]
        for d in range(n_timbre):  # timbre, pitch, period: the features' order
            acc += weights.cond_proj_w[c, d] * timbre[d]
        acc += weights.cond_proj_w[c, n_timbre] * np.float32((pitch - params[0]) / params[1])
        if use_period:
            acc += weights.cond_proj_w[c, n_timbre + 1] * np.float32(period)
        if age_limit > 0:
            acc += weights.cond_proj_w[c, n_timbre + 1 + (1 if use_period else 0)] * np.float32(age)
        projected[c] = _tanh(np.float32(acc))
    gates = state.cond_gates
    for i in range(gates.shape[0]):
        acc = np.float32(0.0)
        for c in range(n_cond):
            acc += weights.cond_gate_w[i, c] * projected[c]
        gates[i] = acc
    if state.template.shape[0] > 0:
        template_coefficients_into(weights.template, weights.template_pitches, weights.template_frame_s, x, y, pitch,
                                   state.counters[2] / params[3], params[3], state.template)


@numba.njit(inline="always", error_model="numpy")
def _advance_oscillator(weights, state, pitch, oscillator):
    """Advance state.phase by one sample at MIDI `pitch` (float64, wrapped to [0, 2 pi)) and write
    (sin k phi, cos k phi), k = 1..K, into oscillator [2K]."""
    two_pi = 2.0 * np.pi
    phase = state.phase[0] + two_pi * _f0_hz(pitch) / weights.features[3]
    phase -= two_pi * np.floor(phase / two_pi)
    state.phase[0] = phase
    for k in range(oscillator.shape[0] // 2):
        oscillator[2 * k] = np.sin((k + 1) * phase)
        oscillator[2 * k + 1] = np.cos((k + 1) * phase)


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def _step(weights, state, previous, x, y, pitch, control_interval, logits):
    """One sample: update the hidden state from class `previous`, write the next logits [Q] and
    return the template prediction p of the sample (float64; 0 without the template residual)."""
    counters = state.counters
    if counters[1] <= 0:
        _refresh_conditioning(weights, state, x, y, pitch)
        counters[1] = control_interval
    counters[1] -= 1
    counters[2] += 1
    hidden = state.hidden
    n_layers, hidden_size = hidden.shape
    input_gates = state.scratch[0]
    hidden_gates = state.scratch[1]
    for i in range(3 * hidden_size):
        input_gates[i] = weights.table[previous, i] + state.cond_gates[i]
    n_oscillator = weights.osc_gate_w.shape[1]
    if n_oscillator > 0:
        oscillator = state.scratch[2, :n_oscillator]
        _advance_oscillator(weights, state, pitch, oscillator)
        for i in range(3 * hidden_size):
            acc = np.float32(0.0)
            for j in range(n_oscillator):
                acc += weights.osc_gate_w[i, j] * oscillator[j]
            input_gates[i] += acc
    cycle = np.float32(0.0)
    if state.template.shape[0] > 0:
        cycle, quadrature = template_signal_at(state.template, state.scratch[2, 1], state.scratch[2, 0])
        for i in range(3 * hidden_size):
            input_gates[i] += weights.template_gate_w[i, 0] * cycle + weights.template_gate_w[i, 1] * quadrature
    for layer in range(n_layers):
        if layer > 0:
            _matvec_any(weights.w_ih[layer - 1], weights.w_ih_scale[layer - 1], weights.b_ih[layer - 1],
                        hidden[layer - 1], state.quantised, input_gates)
        h = hidden[layer]
        _matvec_any(weights.w_hh[layer], weights.w_hh_scale[layer], weights.b_hh[layer], h, state.quantised,
                    hidden_gates)
        for i in range(hidden_size):
            r = _sigmoid(input_gates[i] + hidden_gates[i])
            z = _sigmoid(input_gates[hidden_size + i] + hidden_gates[hidden_size + i])
            n = _tanh(input_gates[2 * hidden_size + i] + r * hidden_gates[2 * hidden_size + i])
            h[i] = (np.float32(1.0) - z) * n + z * h[i]
    _matvec_any(weights.w_out, weights.w_out_scale, weights.b_out, hidden[n_layers - 1], state.quantised, logits)
    return np.float64(cycle) if weights.template_residual else 0.0


@numba.njit(nogil=True, cache=True, fastmath=True, error_model="numpy")
def gru_stream_sample(weights, state, conditioning, control_interval, temperature, out_mu):
    """Generate len(out_mu) samples. conditioning float32 [n, 3] (x, y, MIDI pitch) per sample;
    control_interval (samples) between conditioning refreshes; temperature >= 0 (0: argmax, or a
    template-residual voice's mean residual); out_mu int64 [n] receives the mu-law classes. The previous class is carried in state.counters[0]."""
    n_classes = weights.table.shape[0]
    logits = np.empty(n_classes, np.float32)
    previous = state.counters[0]
    for t in range(out_mu.shape[0]):
        prediction = _step(weights, state, previous, conditioning[t, 0], conditioning[t, 1], conditioning[t, 2],
                           control_interval, logits)
        if weights.template_residual and temperature <= 0.0:
            out_mu[t] = mu_law_class_at(prediction + mean_residual(logits), n_classes)
            previous = shifted_class_at(out_mu[t], -prediction, n_classes)
        elif weights.template_residual:
            out_mu[t] = shifted_class_at(sample_from_logits(logits, temperature, state.rng, state.scratch[2]),
                                         prediction, n_classes)
            previous = shifted_class_at(out_mu[t], -prediction, n_classes)
        else:
            previous = sample_from_logits(logits, temperature, state.rng, state.scratch[2])
            out_mu[t] = previous
    state.counters[0] = previous


@numba.njit(nogil=True, cache=True, fastmath=True, error_model="numpy")
def gru_stream_logits(weights, state, prev_mu, conditioning, control_interval, logits_out):
    """Teacher-forced: prev_mu int64 [n] inputs, conditioning float32 [n, 3];
    logits_out float32 [n, Q] receives the logits predicting the sample after each input (for a
    template-residual voice the inputs and the logits are the residual's classes)."""
    for t in range(prev_mu.shape[0]):
        _step(weights, state, prev_mu[t], conditioning[t, 0], conditioning[t, 1], conditioning[t, 2],
              control_interval, logits_out[t])

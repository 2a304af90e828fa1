"""Real-time factor of the streaming GRU kernel (models.gru_stream) on one core at 16 kHz.

Prints JSON: the kernel's real-time factor (audio seconds generated per second, best of `--repeats`,
both per wall-clock second and per second of the thread's CPU time, which discounts time-slicing on
a shared machine) for int8 weights on every kernel path (int16 or int8 activations with integer dot
products, by AVX-512BW / AVX2 instructions where the compile target has them, else a portable loop;
float activations) and fp32 weights, at several control intervals, beside a torch
step loop (`GruSynth.forward` one sample at a time + multinomial sampling, same process, one
thread) as the baseline, and the limits set by memory bandwidth (weight bytes per sample x 16000
against measured L2/L3 read bandwidth) and by arithmetic (multiply-adds per sample against a
measured in-L1 fp32 rate), the cost of one GRU voice (the layer runs one kernel per sounding
voice), and the recurrent matrix-vector products alone with fp32, bf16 and int8
weight storage (which compression is fastest here). It reports the CPU's vector flags, the compile
target (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES: e.g. an AVX2-only target on an AVX-512 machine) and
which path the GRU layer runs by default.

    python3 bench/gru_stream.py [--preset 3x256] [--seconds 1.0] [--repeats 5]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload


@numba.njit(nogil=True, cache=True, fastmath=True)
def _read_sum(buffer, n_passes):
    """Sum float32 `buffer` n_passes times (read bandwidth probe)."""
    total = np.float32(0.0)
    for _ in range(n_passes):
        for i in range(buffer.shape[0]):
            total += buffer[i]
    return total


@numba.njit(nogil=True, cache=True, fastmath=True)
def _matvec_rate_probe(matrix, vector, out, n_passes):
    """Four-row fp32 matvec on an L1-resident matrix, repeated (arithmetic rate probe)."""
    for _ in range(n_passes):
        for i in range(0, matrix.shape[0], 4):
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            for j in range(matrix.shape[1]):
                v = vector[j]
                a0 += matrix[i, j] * v
                a1 += matrix[i + 1, j] * v
                a2 += matrix[i + 2, j] * v
                a3 += matrix[i + 3, j] * v
            out[i] = a0
            out[i + 1] = a1
            out[i + 2] = a2
            out[i + 3] = a3
        vector[0] = out[0] * np.float32(1e-6)


@intrinsic
def _bits_as_float32(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@numba.njit(nogil=True, cache=True, fastmath=True, error_model="numpy")
def _recurrent_matvecs(matrices, vector, out, n_passes):
    """out[m] = matrices[m] @ vector for every matrix, four rows per pass, repeated n_passes times;
    matrices float32 | int8 (converted) | uint16 (bf16 bits, expanded) [n, rows, cols]."""
    for _ in range(n_passes):
        for m in range(matrices.shape[0]):
            for i in range(0, matrices.shape[1], 4):
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                for j in range(matrices.shape[2]):
                    v = vector[j]
                    a0 += _weight(matrices[m, i, j]) * v
                    a1 += _weight(matrices[m, i + 1, j]) * v
                    a2 += _weight(matrices[m, i + 2, j]) * v
                    a3 += _weight(matrices[m, i + 3, j]) * v
                out[m, i] = a0
                out[m, i + 1] = a1
                out[m, i + 2] = a2
                out[m, i + 3] = a3
        vector[0] = out[0, 0] * np.float32(1e-6)


def _weight(value):
    """A stored weight as float32 (bf16 bits in a uint16 are expanded)."""


@overload(_weight, inline="always")
def _weight_overload(value):
    if value == types.uint16:
        return lambda value: _bits_as_float32(np.uint32(value) << np.uint32(16))
    return lambda value: np.float32(value)


def matvec_formats_us(hidden_size: int, n_layers: int, repeats: int) -> dict:
    """CPU microseconds per sample of the recurrent matrix-vector products (W_hh of every layer, W_ih
    of the upper ones, float activations) with fp32, bf16 and int8 storage."""
    n_matrices = 2 * n_layers - 1
    matrices = np.random.default_rng(0).standard_normal((n_matrices, 3 * hidden_size, hidden_size)) * 0.05
    formats = {"fp32": matrices.astype(np.float32),
               "bf16": (matrices.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16),
               "int8": np.clip(np.rint(matrices * 127 / np.abs(matrices).max()), -127, 127).astype(np.int8)}
    vector, out = np.ones(hidden_size, np.float32), np.zeros((n_matrices, 3 * hidden_size), np.float32)
    n_passes = 2000
    result = {}
    for name, stored in formats.items():
        _recurrent_matvecs(stored, vector, out, 1)
        seconds = _best_seconds(lambda: _recurrent_matvecs(stored, vector, out, n_passes), repeats, time.thread_time)
        result[name] = {"us_per_sample": seconds / n_passes * 1e6, "megabytes": stored.nbytes / 1e6}
    return result


def _best_seconds(function, repeats: int, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        function()
        best = min(best, clock() - start)
    return best


def _both_clocks(function, repeats: int) -> tuple[float, float]:
    """(best wall-clock seconds, best thread CPU seconds) of `function` over `repeats` runs."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        function()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.thread_time() - cpu)
    return best_wall, best_cpu


def read_bandwidth_gb_s(n_bytes: int, repeats: int) -> float:
    """Measured read bandwidth (GB/s of thread CPU time) over a buffer of `n_bytes` (bytes)."""
    buffer = np.ones(n_bytes // 4, np.float32)
    n_passes = max(1, (256 << 20) // n_bytes)
    _read_sum(buffer, 1)
    return n_bytes * n_passes / _best_seconds(lambda: _read_sum(buffer, n_passes), repeats, time.thread_time) / 1e9


def multiply_add_rate(repeats: int) -> float:
    """Measured fp32 multiply-adds per CPU second of the kernel's matvec pattern with data in L1."""
    matrix = np.random.default_rng(0).standard_normal((32, 256)).astype(np.float32)
    vector, out = np.ones(256, np.float32), np.zeros(32, np.float32)
    n_passes = 20000
    _matvec_rate_probe(matrix, vector, out, 1)
    seconds = _best_seconds(lambda: _matvec_rate_probe(matrix, vector, out, n_passes), repeats, time.thread_time)
    return matrix.size * n_passes / seconds


def multiply_adds_per_sample(weights) -> int:
    """Multiply-adds of one step outside the control-rate terms: recurrent + upper inputs + output
    + the per-sample oscillator input."""
    return int(weights.w_ih.size + weights.w_hh.size + weights.w_out.size + weights.osc_gate_w.size)


def torch_step_loop_rtf(model, n_samples: int, repeats: int, sample_rate: int) -> dict:
    """Real-time factors (wall, cpu) of GruSynth.forward called once per sample with multinomial sampling."""
    import torch

    conditioning = torch.tensor([[[0.3, 0.6, 60.0]]])

    def run():
        with torch.no_grad():
            state, previous = None, torch.full((1, 1), 128, dtype=torch.int64)
            for _ in range(n_samples):
                logits, state = model(previous, conditioning, state)
                previous = torch.multinomial(torch.softmax(logits[:, 0], dim=-1), 1)

    run()
    wall_s, cpu_s = _both_clocks(run, repeats)
    return {"wall": n_samples / sample_rate / wall_s, "cpu": n_samples / sample_rate / cpu_s}


def kernel_rtf(weights, n_samples: int, control_interval: int, temperature: float, repeats: int,
               sample_rate: int, path: str) -> dict:
    """Real-time factors (wall, cpu) of `gru_stream_sample` generating `n_samples` per run."""
    from models.gru_stream import gru_stream_sample, new_state

    conditioning = np.tile(np.array([[0.3, 0.6, 60.0]], np.float32), (n_samples, 1))
    conditioning[:, 2] += np.linspace(0.0, 12.0, n_samples, dtype=np.float32)
    out_mu = np.zeros(n_samples, np.int64)
    state = new_state(weights, seed=1, path=path)
    gru_stream_sample(weights, state, conditioning[:16], control_interval, temperature, out_mu[:16])
    wall_s, cpu_s = _both_clocks(lambda: gru_stream_sample(weights, state, conditioning, control_interval,
                                                           temperature, out_mu), repeats)
    return {"wall": n_samples / sample_rate / wall_s, "cpu": n_samples / sample_rate / cpu_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="3x256", help="GRU size preset (default 3x256)")
    parser.add_argument("--oscillator-harmonics", type=int, default=2,
                        help="K of the per-sample oscillator input (default 2, as the shipped voice; 0 = plain RNN3)")
    parser.add_argument("--seconds", type=float, default=1.0, help="audio seconds per timed kernel run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best is reported")
    parser.add_argument("--torch-samples", type=int, default=1000, help="samples per torch baseline run")
    args = parser.parse_args(argv)

    import torch

    from models.gru import GruSynth, GruSynthConfig
    from models.gru_stream import (compile_target_features, integer_dot_supported, kernel_path, new_state,
                                   stream_weights, weight_bytes_per_sample)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = dataclasses.replace(GruSynthConfig.preset(args.preset), oscillator_harmonics=args.oscillator_harmonics)
    model = GruSynth(config).eval()
    sample_rate = config.sample_rate
    n_samples = int(args.seconds * sample_rate)

    baseline_rtf = torch_step_loop_rtf(model, args.torch_samples, args.repeats, sample_rate)
    l2_gb_s = read_bandwidth_gb_s(1 << 20, args.repeats)
    l3_gb_s = read_bandwidth_gb_s(16 << 20, args.repeats)
    dram_gb_s = read_bandwidth_gb_s(256 << 20, max(1, args.repeats // 2))
    mac_rate = multiply_add_rate(args.repeats)
    formats = matvec_formats_us(config.hidden_size, config.n_layers, args.repeats)

    kernels = {}
    variants = [("int8_int16_activations", "int8", "int16_dot"), ("int8_int8_activations", "int8", "int8_dot"),
                ("int8_float_activations", "int8", "float"), ("fp32", "fp32", "float")]
    for name, compression, path in variants:
        weights = stream_weights(model, compression)
        if path != "float" and not integer_dot_supported(weights):
            kernels[name] = {"skipped": "needs a hidden size that is a multiple of 32"}
            continue
        bytes_per_sample = weight_bytes_per_sample(weights)
        fits_l2 = bytes_per_sample + weights.table.nbytes <= (2 << 20)
        bandwidth = l2_gb_s if fits_l2 else l3_gb_s
        runs = {f"control_{interval}": kernel_rtf(weights, n_samples, interval, 1.0, args.repeats, sample_rate,
                                                  path) for interval in (1, 16, 64)}
        runs["control_16_argmax"] = kernel_rtf(weights, n_samples, 16, 0.0, args.repeats, sample_rate, path)
        kernels[name] = {
            "path": kernel_path(new_state(weights, path=path)),
            # each GRU voice runs its own kernel: a voice costs this fraction of a core
            "core_fraction_per_voice": 1.0 / runs["control_16"]["cpu"],
            "voices_per_core": int(runs["control_16"]["cpu"]),
            "weight_bytes_per_sample": bytes_per_sample,
            "working_set_bytes": bytes_per_sample + weights.table.nbytes,
            "fits_2mb_l2": bool(fits_l2),
            "rtf": runs,
            "cpu_rtf_ratio_vs_torch_step_loop": {key: run["cpu"] / baseline_rtf["cpu"] for key, run in runs.items()},
            "wall_rtf_ratio_vs_torch_step_loop": {key: run["wall"] / baseline_rtf["wall"]
                                                  for key, run in runs.items()},
            "bandwidth_limit_rtf": bandwidth * 1e9 / (bytes_per_sample * sample_rate),
            "fp32_multiply_add_limit_rtf": mac_rate / (multiply_adds_per_sample(weights) * sample_rate),
        }
    report = {
        "benchmark": "gru_stream",
        "preset": args.preset,
        "oscillator_harmonics": args.oscillator_harmonics,
        "sample_rate_hz": sample_rate,
        "cpu": _cpu_name(),
        "cpu_vector_flags": _vector_flags(),
        "compile_target": {"cpu_name": numba.config.CPU_NAME or "host",
                           "avx2": bool(compile_target_features().get("avx2")),
                           "avx512bw": bool(compile_target_features().get("avx512bw"))},
        "default_path_int8_weights": kernel_path(new_state(stream_weights(model, "int8"))),
        "cores_used": 1,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch_step_loop_rtf": baseline_rtf,
        "measured_read_bandwidth_gb_s": {"l2_1mb": l2_gb_s, "l3_16mb": l3_gb_s, "dram_256mb": dram_gb_s},
        "measured_fp32_multiply_adds_per_s": mac_rate,
        "multiply_adds_per_sample": multiply_adds_per_sample(stream_weights(model, "fp32")),
        "recurrent_matvec_by_weight_format": formats,
        "kernel": kernels,
    }
    print(json.dumps(report, indent=2))
    return 0


def _vector_flags() -> list[str]:
    """The CPU's SIMD flags from /proc/cpuinfo (sse*, avx*, fma, f16c)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(flag for flag in line.split(":", 1)[1].split()
                              if flag.startswith(("sse", "ssse", "avx", "fma", "f16c", "amx")))
    except OSError:
        pass
    return []


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())

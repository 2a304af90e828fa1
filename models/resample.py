"""Polyphase rational resampling (`resample_poly`), the same filter and alignment as
`scipy.signal.resample_poly` with its defaults, in a Numba kernel.

The runtime resamples every bank row (source rate -> device rate, and the small stretch that retunes
a note) and every one-shot; scipy.signal costs 0.5 s to import, which the bank worker would pay at
every start. Here the same result comes from NumPy (the filter) and one nogil kernel (the filtering).

Filter (scipy's): up, down reduced by their gcd; a Kaiser-windowed (beta 5) sinc low-pass of
2 * 10 * max(up, down) + 1 taps, cutoff 1 / max(up, down) of the input Nyquist at the upsampled rate,
unit DC gain, times `up`. Output sample n is sum_k h[k] x_up[n * down + offset - k], where x_up is x
with up - 1 zeros after each sample and offset centres the filter: len(x) * up / down samples
(rounded up), the first aligned with x[0].

Public API:
    resample_poly(x, up, down, axis=-1) -> float32 (for float32 input) or float64 array
    resample_poly_reference(x, up, down) -> float64 [n_out]   NumPy twin for 1-D input (tests)
    polyphase_filter(up, down) -> (h float64 [n_taps], offset)
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np

KAISER_BETA = 5.0
HALF_LENGTH_PER_RATE = 10


def kaiser_window(n_taps: int, beta: float = KAISER_BETA) -> np.ndarray:
    """np.kaiser(n_taps, beta), with I0 summed as its power series in place (24 terms: exact to
    float64 rounding for beta <= 6), several times faster than np.i0 on the 20,000-tap filters of
    a retuning ratio."""
    if n_taps == 1:
        return np.ones(1)
    quarter_square = 2.0 * np.arange(n_taps) / (n_taps - 1) - 1.0
    np.multiply(quarter_square, quarter_square, out=quarter_square)
    np.subtract(1.0, quarter_square, out=quarter_square)
    np.maximum(quarter_square, 0.0, out=quarter_square)
    quarter_square *= beta * beta / 4.0                     # (x / 2)^2, x = beta sqrt(1 - ramp^2)
    term, total = np.ones(n_taps), np.ones(n_taps)
    i0_beta, term_beta = 1.0, 1.0
    for k in range(1, 25):
        term *= quarter_square
        term /= k * k
        total += term
        term_beta *= (beta * beta / 4.0) / (k * k)
        i0_beta += term_beta
    total /= i0_beta
    return total


@functools.lru_cache(maxsize=64)
def polyphase_filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """scipy's resample_poly filter for reduced (up, down): (h float64 [n_taps] times `up`, the
    index in the upsampled, filtered stream of output sample 0)."""
    max_rate = max(up, down)
    half_length = HALF_LENGTH_PER_RATE * max_rate
    n_taps = 2 * half_length + 1
    m = np.arange(n_taps) - half_length
    cutoff = 1.0 / max_rate
    h = cutoff * np.sinc(cutoff * m) * kaiser_window(n_taps)
    h = h / h.sum() * up
    h.flags.writeable = False  # shared by every call with this ratio
    return h, half_length


def output_length(n_in: int, up: int, down: int) -> int:
    """Samples out of `n_in` samples in: ceil(n_in * up / down)."""
    return -(-n_in * up // down)


def _phase_filters(h: np.ndarray, up: int, dtype) -> np.ndarray:
    """h split by phase and reversed: [up, T = ceil(n_taps / up)], row p holding
    h[p + (T - 1) up], ..., h[p + up], h[p] (zero-padded), so each output is an ascending dot product."""
    per_phase = -(-h.shape[0] // up)
    padded = np.zeros(per_phase * up)
    padded[:h.shape[0]] = h
    return np.ascontiguousarray(padded.reshape(per_phase, up).T[:, ::-1], dtype=dtype)


@numba.njit(nogil=True, cache=True, fastmath=True)
def _resample_rows(x, phases, up, down, offset, out):
    """out[r, n] = sum_t phases[p, T - 1 - t] x[r, i - t] with j = n * down + offset, p = j % up,
    i = j // up: the taps of h that meet real (not zero-stuffed) input samples, summed in x's dtype.
    Away from the edges every tap meets the input: a fixed-length dot product the compiler vectorises."""
    n_in, per_phase = x.shape[1], phases.shape[1]
    for r in range(x.shape[0]):
        for n in range(out.shape[1]):
            j = n * down + offset
            p, i = j % up, j // up
            base = i - per_phase + 1                # x index met by reversed tap 0
            acc = x[r, 0] * 0.0
            if base >= 0 and i < n_in:
                for u in range(per_phase):
                    acc += phases[p, u] * x[r, base + u]
            else:                                   # taps t in [first, last) meet x[i - t]
                first = max(0, i - (n_in - 1))
                last = min(per_phase, i + 1)
                for u in range(per_phase - last, per_phase - first):
                    acc += phases[p, u] * x[r, base + u]
            out[r, n] = acc


@numba.njit(nogil=True, cache=True, fastmath=True)
def _resample_columns(x, phases, up, down, offset, out):
    """`_resample_rows` with the signals as columns: x [n_in, n_signals], out [n_out, n_signals];
    the innermost loop runs across the signals, contiguous, so it vectorises (several notes at once)."""
    n_in, per_phase = x.shape[0], phases.shape[1]
    n_signals = x.shape[1]
    acc = np.empty(n_signals, dtype=x.dtype)
    for n in range(out.shape[0]):
        j = n * down + offset
        p, i = j % up, j // up
        first = max(0, i - (n_in - 1))
        last = min(per_phase, i + 1)
        taps = phases[p]
        base = i - per_phase + 1
        for r in range(n_signals):
            acc[r] = 0.0
        for u in range(per_phase - last, per_phase - first):
            w = taps[u]
            k = base + u
            for r in range(n_signals):
                acc[r] += w * x[k, r]
        for r in range(n_signals):
            out[n, r] = acc[r]


COLUMN_LAYOUT_SIGNALS = 4
"""From this many signals in one call, they are filtered side by side (`_resample_columns`)."""


def resample_poly(x: np.ndarray, up: int, down: int, axis: int = -1) -> np.ndarray:
    """Resample `x` along `axis` by up / down (positive integers); float32 in gives float32 out
    (summed in float32), anything else float64. Equals `scipy.signal.resample_poly(x, up, down, axis)`
    to float rounding."""
    up, down = int(up), int(down)
    if up < 1 or down < 1:
        raise ValueError(f"resample_poly: up and down must be positive integers, got {up}, {down}")
    x = np.asarray(x)
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    divisor = math.gcd(up, down)
    up, down = up // divisor, down // divisor
    if up == down == 1:
        return x.astype(dtype, copy=True)
    moved = np.moveaxis(x, axis, -1)
    rows = np.ascontiguousarray(moved.reshape(-1, moved.shape[-1]), dtype=dtype)
    h, offset = polyphase_filter(up, down)
    n_out = output_length(rows.shape[1], up, down)
    if rows.shape[0] >= COLUMN_LAYOUT_SIGNALS:
        columns = np.empty((n_out, rows.shape[0]), dtype)
        _resample_columns(np.ascontiguousarray(rows.T), _phase_filters(h, up, dtype), up, down, offset, columns)
        out = np.ascontiguousarray(columns.T)
    else:
        out = np.empty((rows.shape[0], n_out), dtype)
        _resample_rows(rows, _phase_filters(h, up, dtype), up, down, offset, out)
    return np.moveaxis(out.reshape(moved.shape[:-1] + (out.shape[1],)), -1, axis)


def resample_poly_reference(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """NumPy twin of `resample_poly` for 1-D `x`: zero-stuff, convolve in full, pick every `down`-th."""
    divisor = math.gcd(int(up), int(down))
    up, down = int(up) // divisor, int(down) // divisor
    x = np.asarray(x, dtype=np.float64)
    if up == down == 1:
        return x.copy()
    h, offset = polyphase_filter(up, down)
    stuffed = np.zeros(x.shape[0] * up)
    stuffed[::up] = x
    full = np.convolve(stuffed, h)
    n_out = output_length(x.shape[0], up, down)
    picks = np.arange(n_out) * down + offset
    return np.where(picks < full.shape[0], full[np.minimum(picks, full.shape[0] - 1)], 0.0)

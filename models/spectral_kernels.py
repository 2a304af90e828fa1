"""Numba kernels of the spectral core, each paired with a plain NumPy reference of the same signature.

Every kernel is compiled once (`cache=True`), releases the GIL (`nogil=True`) and runs notes in
parallel (`parallel=True`, `prange` over the batch). The `*_ref` functions are the readable
definitions; `tests/test_spectral_kernels.py` checks each kernel against its reference.

Framing convention (librosa's `center=True`, zero padding): frame `t` covers input samples
`t * hop_length - n_fft // 2 ... t * hop_length + n_fft // 2 - 1`; samples outside the signal are 0.
`n_frames = 1 + n_samples // hop_length`.

Public API (kernel / reference):
    frame_and_window(audio, window, hop_length, n_frames) -> float32 [batch, n_frames, n_fft]
    overlap_add(frames, window, hop_length, n_samples) -> float32 [batch, n_samples]
    overlap_add_reframe(frames, window, hop_length, n_samples) -> float32 [batch, n_frames, n_fft]
    fgla_project(rebuilt, previous, target_magnitude, momentum) -> complex64 [batch, n_frames, n_bins]
    polar(magnitude, phase) -> complex64 [batch, n_bins, n_frames]
    polar_from_instantaneous_frequency(log_magnitude, inst_freq) -> complex64 [batch, n_bins, n_frames]
    pghi_phase_gradients(log_magnitude, hop_length, n_fft, gamma) -> 2 x float32 [batch, n_bins, n_frames]
    heap_integrate_phase(log_magnitude, dphase_time, dphase_freq, tolerances,
        buckets_per_neper) -> float32 [batch, n_bins, n_frames]
and the same names with a `_ref` suffix.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

TINY = 1e-12
"""Added to magnitudes before dividing by them."""
PGHI_LOG_RANGE = 11.5
"""PGHI clamps log-magnitudes to at most this far (nepers, ~100 dB) below each note's peak before
differentiating, so that near-zero coefficients do not produce huge phase gradients."""


# ---------------------------------------------------------------------------------------------
# Framing and overlap-add


@njit(cache=True, nogil=True, parallel=True)
def frame_and_window(audio, window, hop_length, n_frames):
    """Centered, zero-padded, windowed frames.

    audio: float32 [batch, n_samples]; window: float32 [n_fft]; hop_length (samples).
    Returns float32 [batch, n_frames, n_fft]: `out[b, t, n] = audio[b, t*hop - n_fft//2 + n] * window[n]`.
    """
    batch, n_samples = audio.shape
    n_fft = window.shape[0]
    half = n_fft // 2
    out = np.empty((batch, n_frames, n_fft), dtype=np.float32)
    for b in prange(batch):
        for t in range(n_frames):
            start = t * hop_length - half
            for n in range(n_fft):
                i = start + n
                if 0 <= i < n_samples:
                    out[b, t, n] = audio[b, i] * window[n]
                else:
                    out[b, t, n] = 0.0
    return out


def frame_and_window_ref(audio, window, hop_length, n_frames):
    """NumPy reference of `frame_and_window` (same signature and result)."""
    n_fft = window.shape[0]
    half = n_fft // 2
    batch, n_samples = audio.shape
    total = (n_frames - 1) * hop_length + n_fft
    padded = np.zeros((batch, total), dtype=np.float32)
    n_copy = min(n_samples, total - half)
    padded[:, half:half + n_copy] = audio[:, :n_copy]
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::hop_length]
    return (frames[:, :n_frames] * window).astype(np.float32)


@njit(cache=True, nogil=True)
def _inverse_window_sum_square(window, hop_length, n_frames, n_samples):
    """1 / sum_t window^2(n - t*hop) over the centered output samples, 0 where that sum is tiny.
    Returns float32 [n_samples]."""
    n_fft = window.shape[0]
    half = n_fft // 2
    total = (n_frames - 1) * hop_length + n_fft
    wss = np.zeros(total, dtype=np.float64)
    for t in range(n_frames):
        for n in range(n_fft):
            wss[t * hop_length + n] += window[n] * window[n]
    out = np.zeros(n_samples, dtype=np.float32)
    for i in range(min(n_samples, total - half)):
        if wss[i + half] > 1e-8:
            out[i] = 1.0 / wss[i + half]
    return out


@njit(cache=True, nogil=True, parallel=True)
def overlap_add(frames, window, hop_length, n_samples):
    """Least-squares inverse of `frame_and_window`: windowed overlap-add over the window sum-square.

    frames: float32 [batch, n_frames, n_fft]; window: float32 [n_fft]; hop_length, n_samples (samples).
    Returns float32 [batch, n_samples].
    """
    batch, n_frames, n_fft = frames.shape
    half = n_fft // 2
    inv_wss = _inverse_window_sum_square(window, hop_length, n_frames, n_samples)
    out = np.zeros((batch, n_samples), dtype=np.float32)
    for b in prange(batch):
        for t in range(n_frames):
            start = t * hop_length - half
            for n in range(n_fft):
                i = start + n
                if 0 <= i < n_samples:
                    out[b, i] += frames[b, t, n] * window[n]
        for i in range(n_samples):
            out[b, i] *= inv_wss[i]
    return out


def overlap_add_ref(frames, window, hop_length, n_samples):
    """NumPy reference of `overlap_add` (same signature and result)."""
    batch, n_frames, n_fft = frames.shape
    half = n_fft // 2
    total = (n_frames - 1) * hop_length + n_fft
    acc = np.zeros((batch, total), dtype=np.float64)
    wss = np.zeros(total, dtype=np.float64)
    for t in range(n_frames):
        acc[:, t * hop_length:t * hop_length + n_fft] += frames[:, t] * window
        wss[t * hop_length:t * hop_length + n_fft] += window.astype(np.float64) ** 2
    out = np.zeros((batch, n_samples), dtype=np.float32)
    n_copy = min(n_samples, total - half)
    span = slice(half, half + n_copy)
    ok = wss[span] > 1e-8
    out[:, :n_copy] = np.where(ok, acc[:, span] / np.where(ok, wss[span], 1.0), 0.0)
    return out


@njit(cache=True, nogil=True, parallel=True)
def overlap_add_reframe(frames, window, hop_length, n_samples):
    """`frame_and_window(overlap_add(frames))` fused: the STFT-consistency projection of Griffin-Lim
    in the time domain, without materialising the signal for the whole batch.

    frames: float32 [batch, n_frames, n_fft]; window: float32 [n_fft]; hop_length, n_samples (samples).
    Returns float32 [batch, n_frames, n_fft].
    """
    batch, n_frames, n_fft = frames.shape
    half = n_fft // 2
    inv_wss = _inverse_window_sum_square(window, hop_length, n_frames, n_samples)
    out = np.empty((batch, n_frames, n_fft), dtype=np.float32)
    for b in prange(batch):
        signal = np.zeros(n_samples, dtype=np.float32)
        for t in range(n_frames):
            start = t * hop_length - half
            for n in range(n_fft):
                i = start + n
                if 0 <= i < n_samples:
                    signal[i] += frames[b, t, n] * window[n]
        for i in range(n_samples):
            signal[i] *= inv_wss[i]
        for t in range(n_frames):
            start = t * hop_length - half
            for n in range(n_fft):
                i = start + n
                if 0 <= i < n_samples:
                    out[b, t, n] = signal[i] * window[n]
                else:
                    out[b, t, n] = 0.0
    return out


def overlap_add_reframe_ref(frames, window, hop_length, n_samples):
    """NumPy reference of `overlap_add_reframe` (same signature and result)."""
    signal = overlap_add_ref(frames, window, hop_length, n_samples)
    return frame_and_window_ref(signal, window, hop_length, frames.shape[1])


# ---------------------------------------------------------------------------------------------
# Griffin-Lim projection


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def fgla_project(rebuilt, previous, target_magnitude, momentum):
    """Fast Griffin-Lim's magnitude projection with momentum (Perraudin et al. 2013).

    t = rebuilt + momentum * (rebuilt - previous), returned as target_magnitude * t / |t|; the scale
    of t does not matter, so t is computed as rebuilt - momentum / (1 + momentum) * previous.
    rebuilt, previous: complex64 [batch, n_frames, n_bins]; target_magnitude: float32, same shape.
    Returns complex64 [batch, n_frames, n_bins].
    """
    batch, n_frames, n_bins = rebuilt.shape
    beta = np.float32(momentum / (1.0 + momentum))
    tiny = np.float32(TINY)
    out = np.empty_like(rebuilt)
    for b in prange(batch):
        for t in range(n_frames):
            for k in range(n_bins):
                zr = rebuilt[b, t, k].real - beta * previous[b, t, k].real
                zi = rebuilt[b, t, k].imag - beta * previous[b, t, k].imag
                scale = target_magnitude[b, t, k] / (np.sqrt(zr * zr + zi * zi) + tiny)
                out[b, t, k] = complex(zr * scale, zi * scale)
    return out


def fgla_project_ref(rebuilt, previous, target_magnitude, momentum):
    """NumPy reference of `fgla_project` (same signature and result)."""
    z = rebuilt - np.float32(momentum / (1.0 + momentum)) * previous
    return (z * (target_magnitude / (np.abs(z) + np.float32(TINY)))).astype(np.complex64)


# ---------------------------------------------------------------------------------------------
# Magnitude and phase (or instantaneous frequency) -> complex spectrogram


_PI32 = np.float32(math.pi)
_HALF_PI32 = np.float32(math.pi / 2)


@njit(cache=True, nogil=True, fastmath=True)
def _sincos(x):
    """(sin x, cos x) of a float32 x in [-pi, pi], branch-free: Taylor polynomials of
    y = min(|x|, pi - |x|) in [0, pi/2], then sin x = sign(x) sin y and
    cos x = sign(pi/2 - |x|) cos y. Error < 2e-7; vectorises, ~20x faster than libm here."""
    a = abs(x)
    y = min(a, _PI32 - a)
    y2 = y * y
    s = y * (np.float32(1.0) + y2 * (np.float32(-1 / 6) + y2 * (np.float32(1 / 120) + y2 * (
        np.float32(-1 / 5040) + y2 * (np.float32(1 / 362880) + y2 * np.float32(-1 / 39916800))))))
    c = np.float32(1.0) + y2 * (np.float32(-0.5) + y2 * (np.float32(1 / 24) + y2 * (np.float32(-1 / 720) + y2 * (
        np.float32(1 / 40320) + y2 * (np.float32(-1 / 3628800) + y2 * np.float32(1 / 479001600))))))
    return math.copysign(s, x), math.copysign(c, _HALF_PI32 - a)


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def polar(magnitude, phase):
    """magnitude * exp(i * phase): phase wrapped to [-pi, pi) in float64, then float32 arithmetic.

    magnitude: float32 [batch, n_bins, n_frames] (linear); phase: float32, same shape (radians).
    Returns complex64 [batch, n_bins, n_frames].
    """
    batch, n_bins, n_frames = magnitude.shape
    out = np.empty((batch, n_bins, n_frames), dtype=np.complex64)
    two_pi = 2.0 * math.pi
    for b in prange(batch):
        for k in range(n_bins):
            for t in range(n_frames):
                p = np.float64(phase[b, k, t])
                s, c = _sincos(np.float32(p - two_pi * math.floor(p * (1.0 / two_pi) + 0.5)))
                out[b, k, t] = complex(magnitude[b, k, t] * c, magnitude[b, k, t] * s)
    return out


def polar_ref(magnitude, phase):
    """NumPy reference of `polar` (same signature and result)."""
    return (magnitude.astype(np.float64) * np.exp(1j * phase.astype(np.float64))).astype(np.complex64)


@njit(cache=True, nogil=True, parallel=True, fastmath=True)
def polar_from_instantaneous_frequency(log_magnitude, inst_freq):
    """exp(log_magnitude) * exp(i * pi * cumsum_t(inst_freq)): the inverse of GANSynth's IF.

    The phase accumulates in float64 (a scalar pass), then a vectorised pass wraps it to
    [-pi, pi) and does the float32 rest. log_magnitude (nepers), inst_freq (phase increments per
    hop / pi, in [-1, 1]): float32 [batch, n_bins, n_frames]. Returns complex64, same shape.
    """
    batch, n_bins, n_frames = log_magnitude.shape
    out = np.empty((batch, n_bins, n_frames), dtype=np.complex64)
    two_pi = 2.0 * math.pi
    for b in prange(batch):
        phase = np.empty(n_frames, dtype=np.float64)
        for k in range(n_bins):
            acc = 0.0
            for t in range(n_frames):
                acc += math.pi * np.float64(inst_freq[b, k, t])
                phase[t] = acc
            for t in range(n_frames):
                s, c = _sincos(np.float32(phase[t] - two_pi * math.floor(phase[t] * (1.0 / two_pi) + 0.5)))
                mag = np.exp(log_magnitude[b, k, t])
                out[b, k, t] = complex(mag * c, mag * s)
    return out


def polar_from_instantaneous_frequency_ref(log_magnitude, inst_freq):
    """NumPy reference of `polar_from_instantaneous_frequency` (same signature and result)."""
    phase = np.cumsum(np.pi * inst_freq.astype(np.float64), axis=-1)
    return (np.exp(log_magnitude.astype(np.float64)) * np.exp(1j * phase)).astype(np.complex64)


# ---------------------------------------------------------------------------------------------
# Phase Gradient Heap Integration (Prusa, Balazs, Sondergaard 2017)


@njit(cache=True, nogil=True, parallel=True)
def pghi_phase_gradients(log_magnitude, hop_length, n_fft, gamma):
    """Phase gradients of a Gaussian-like window's STFT from its log-magnitude.

    For frames whose FFT phase is referenced to the frame start, with the window centred in it:
      per-hop phase advance  dphase_time = 2 pi hop k / n_fft + (hop n_fft / gamma) ds/dk
      per-bin phase step     dphase_freq = -pi - (gamma / (hop n_fft)) ds/dt
    with s the log-magnitude clamped to `PGHI_LOG_RANGE` below the note's peak and centred
    differences (one-sided at the edges).
    log_magnitude: float32 [batch, n_bins, n_frames] (nepers); hop_length, n_fft (samples);
    gamma: the window's Gaussian time-frequency ratio (samples^2), 0.25645 * n_fft^2 for Hann.
    Returns (dphase_time, dphase_freq) (radians per hop, radians per bin), float32, same shape.
    """
    batch, n_bins, n_frames = log_magnitude.shape
    time_scale = hop_length * n_fft / gamma
    freq_scale = gamma / (hop_length * n_fft)
    bin_advance = 2.0 * math.pi * hop_length / n_fft
    dphase_time = np.empty((batch, n_bins, n_frames), dtype=np.float32)
    dphase_freq = np.empty((batch, n_bins, n_frames), dtype=np.float32)
    for b in prange(batch):
        s = log_magnitude[b].astype(np.float64)
        floor = s.max() - PGHI_LOG_RANGE
        for k in range(n_bins):
            for t in range(n_frames):
                if s[k, t] < floor:
                    s[k, t] = floor
        for k in range(n_bins):
            k0 = max(k - 1, 0)
            k1 = min(k + 1, n_bins - 1)
            for t in range(n_frames):
                t0 = max(t - 1, 0)
                t1 = min(t + 1, n_frames - 1)
                ds_dk = (s[k1, t] - s[k0, t]) / max(k1 - k0, 1)
                ds_dt = (s[k, t1] - s[k, t0]) / max(t1 - t0, 1)
                dphase_time[b, k, t] = bin_advance * k + time_scale * ds_dk
                dphase_freq[b, k, t] = -math.pi - freq_scale * ds_dt
    return dphase_time, dphase_freq


def _centred_difference(s, axis):
    """Centred difference along `axis`, one-sided at the edges (np.gradient with unit spacing)."""
    if s.shape[axis] < 2:
        return np.zeros_like(s)
    return np.gradient(s, axis=axis)


def pghi_phase_gradients_ref(log_magnitude, hop_length, n_fft, gamma):
    """NumPy reference of `pghi_phase_gradients` (same signature and result)."""
    s = log_magnitude.astype(np.float64)
    floor = s.max(axis=(1, 2), keepdims=True) - PGHI_LOG_RANGE
    s = np.maximum(s, floor)
    n_bins = s.shape[1]
    k = np.arange(n_bins, dtype=np.float64)[None, :, None]
    dphase_time = 2.0 * np.pi * hop_length / n_fft * k + hop_length * n_fft / gamma * _centred_difference(s, 1)
    dphase_freq = -np.pi - gamma / (hop_length * n_fft) * _centred_difference(s, 2)
    return dphase_time.astype(np.float32), dphase_freq.astype(np.float32)


@njit(cache=True, nogil=True)
def _integrate_note(log_magnitude, dphase_time, dphase_freq, tolerances, buckets_per_neper, out):
    """Heap integration of one note: [n_bins, n_frames] arrays in, wrapped phase written to `out`.

    The max-heap is a bucket queue: log-magnitudes quantised to 1 / buckets_per_neper, one LIFO
    stack per bucket (a linked list through `next_in_bucket`), O(1) per push and pop. A pass ends
    with every coefficient above its threshold integrated, so pass p's open coefficients are those
    between its threshold and the previous one. The grid is padded by one closed cell on every
    side, so neighbours need no bounds checks: flat index i has neighbours i +- 1 (time) and
    i +- stride (frequency).
    """
    n_bins, n_frames = log_magnitude.shape
    stride = n_frames + 2
    n = (n_bins + 2) * stride
    peak = np.float64(log_magnitude.max())
    lowest = peak + math.log(tolerances[-1])
    n_buckets = int(math.floor((peak - lowest) * buckets_per_neper)) + 1
    s = np.full(n, -np.inf, dtype=np.float32)
    dt = np.zeros(n, dtype=np.float32)
    df = np.zeros(n, dtype=np.float32)
    bucket = np.zeros(n, dtype=np.int32)
    for k in range(n_bins):
        for t in range(n_frames):
            i = (k + 1) * stride + t + 1
            s[i] = log_magnitude[k, t]
            dt[i] = dphase_time[k, t]
            df[i] = dphase_freq[k, t]
            q = math.floor((np.float64(s[i]) - lowest) * buckets_per_neper)
            bucket[i] = min(max(q, 0), n_buckets - 1)
    phase = np.zeros(n, dtype=np.float64)
    is_open = np.zeros(n, dtype=np.bool_)
    head = np.full(n_buckets, -1, dtype=np.int32)
    next_in_bucket = np.empty(n, dtype=np.int32)
    previous_threshold = np.inf
    for tol in tolerances:
        threshold = peak + math.log(tol)
        for i in range(n):
            is_open[i] = threshold <= s[i] < previous_threshold
        top = -1
        size = 0
        # Seeds from earlier passes: integrated coefficients bordering open ones.
        for i in range(n):
            if s[i] >= previous_threshold and (is_open[i + 1] or is_open[i - 1] or is_open[i + stride]
                                               or is_open[i - stride]):
                next_in_bucket[i] = head[bucket[i]]
                head[bucket[i]] = i
                top = max(top, bucket[i])
                size += 1
        n_candidates = 0
        seeds = np.empty(0, dtype=np.int64)
        next_seed = -1
        while True:
            while size > 0:
                while head[top] < 0:
                    top -= 1
                i = head[top]
                head[top] = next_in_bucket[i]
                size -= 1
                for step in (1, -1, stride, -stride):
                    j = i + step
                    if is_open[j]:
                        if step == 1 or step == -1:
                            increment = 0.5 * (np.float64(dt[i]) + np.float64(dt[j]))
                        else:
                            increment = 0.5 * (np.float64(df[i]) + np.float64(df[j]))
                        phase[j] = phase[i] + increment if step > 0 else phase[i] - increment
                        is_open[j] = False
                        next_in_bucket[j] = head[bucket[j]]
                        head[bucket[j]] = j
                        top = max(top, bucket[j])
                        size += 1
            if next_seed < 0:
                # Open coefficients the front did not reach, largest first.
                candidates = np.empty(n, dtype=np.int64)
                for i in range(n):
                    if is_open[i]:
                        candidates[n_candidates] = i
                        n_candidates += 1
                seeds = candidates[:n_candidates][np.argsort(-s[candidates[:n_candidates]], kind="mergesort")]
                next_seed = 0
            while next_seed < n_candidates and not is_open[seeds[next_seed]]:
                next_seed += 1
            if next_seed >= n_candidates:
                break
            i = seeds[next_seed]
            phase[i] = 0.0
            is_open[i] = False
            next_in_bucket[i] = head[bucket[i]]
            head[bucket[i]] = i
            top = max(top, bucket[i])
            size += 1
        previous_threshold = threshold
    two_pi = 2.0 * math.pi
    for k in range(n_bins):
        for t in range(n_frames):
            p = phase[(k + 1) * stride + t + 1]
            out[k, t] = p - two_pi * math.floor(p / two_pi + 0.5)


@njit(cache=True, nogil=True, parallel=True)
def heap_integrate_phase(log_magnitude, dphase_time, dphase_freq, tolerances, buckets_per_neper):
    """Phase by heap integration of its gradients, largest coefficients first (PGHI's core).

    Each tolerance is one pass: coefficients whose magnitude is at least `tol` times the note's
    peak are integrated outward from the largest, along the trapezoid rule, starting from the
    phases earlier passes fixed; islands the front cannot reach start at phase 0, largest first.
    Coefficients below the last tolerance keep phase 0. The max-heap orders log-magnitudes to
    1 / buckets_per_neper (100: 0.087 dB) and is O(1) per coefficient.
    log_magnitude (nepers), dphase_time (radians per hop), dphase_freq (radians per bin):
    float32 [batch, n_bins, n_frames]; tolerances: float64 [n_passes], decreasing, e.g. [1e-1, 1e-10].
    Returns the phase wrapped to [-pi, pi) (radians), float32 [batch, n_bins, n_frames].
    """
    batch, n_bins, n_frames = log_magnitude.shape
    out = np.empty((batch, n_bins, n_frames), dtype=np.float32)
    for b in prange(batch):
        _integrate_note(log_magnitude[b], dphase_time[b], dphase_freq[b], tolerances, buckets_per_neper, out[b])
    return out


def heap_integrate_phase_ref(log_magnitude, dphase_time, dphase_freq, tolerances, buckets_per_neper):
    """Python reference of `heap_integrate_phase` (same signature and result): the same passes,
    bucket order (LIFO within a bucket) and neighbour order (t+1, t-1, k+1, k-1)."""
    batch, n_bins, n_frames = log_magnitude.shape
    out = np.empty((batch, n_bins, n_frames), dtype=np.float32)
    for b in range(batch):
        s = log_magnitude[b].ravel()
        dt = dphase_time[b].ravel().astype(np.float64)
        df = dphase_freq[b].ravel().astype(np.float64)
        peak = float(s.max())
        lowest = peak + math.log(tolerances[-1])
        n_buckets = int(math.floor((peak - lowest) * buckets_per_neper)) + 1
        bucket = np.clip(np.floor((s.astype(np.float64) - lowest) * buckets_per_neper), 0, n_buckets - 1).astype(int)
        done = np.zeros(s.size, dtype=bool)
        phase = np.zeros(s.size, dtype=np.float64)

        def neighbours(i):
            """(neighbour, signed phase increment) in the kernel's order."""
            k, t = divmod(i, n_frames)
            if t + 1 < n_frames:
                yield i + 1, 0.5 * (dt[i] + dt[i + 1])
            if t > 0:
                yield i - 1, -0.5 * (dt[i] + dt[i - 1])
            if k + 1 < n_bins:
                yield i + n_frames, 0.5 * (df[i] + df[i + n_frames])
            if k > 0:
                yield i - n_frames, -0.5 * (df[i] + df[i - n_frames])

        for tol in tolerances:
            threshold = peak + math.log(tol)
            stacks = [[] for _ in range(n_buckets)]
            top = -1

            def push(i):
                nonlocal top
                stacks[bucket[i]].append(i)
                top = max(top, bucket[i])

            for i in np.flatnonzero(done & (s >= threshold)):
                if any(not done[j] and s[j] >= threshold for j, _ in neighbours(i)):
                    push(i)
            seeds = None
            while True:
                while top >= 0:
                    if not stacks[top]:
                        top -= 1
                        continue
                    i = stacks[top].pop()
                    for j, increment in neighbours(i):
                        if not done[j] and s[j] >= threshold:
                            phase[j] = phase[i] + increment
                            done[j] = True
                            push(j)
                if seeds is None:
                    candidates = np.flatnonzero(~done & (s >= threshold))
                    seeds = iter(candidates[np.argsort(-s[candidates], kind="stable")].tolist())
                seed = next((c for c in seeds if not done[c]), None)
                if seed is None:
                    break
                phase[seed] = 0.0
                done[seed] = True
                push(seed)
        wrapped = phase - 2.0 * np.pi * np.floor(phase / (2.0 * np.pi) + 0.5)
        out[b] = wrapped.reshape(n_bins, n_frames)
    return out

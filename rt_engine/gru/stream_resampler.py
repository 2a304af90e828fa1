"""Streaming rational-ratio resampler (polyphase windowed sinc), e.g. the GRU's 16 kHz -> 44.1/48 kHz.

The ratio rate_out / rate_in is reduced to up / down. Output frame n is the input signal at time
tau_n - delay, tau_n = n * down / up (input samples), delay = n_taps / 2 (input samples):

    y[n] = sum_{k=0}^{n_taps-1} table[p, k] * x[b - k],  b = (n * down) // up,  p = (n * down) % up
    table[p, k] = fc * sinc(fc * d) * kaiser(d / (n_taps / 2)),  d = k + p / up - n_taps / 2

with fc = rolloff * min(1, up / down) (cutoff as a fraction of the input Nyquist) and every phase
normalised to unit DC gain. Samples before the first input are zero, so feeding a signal in any
chunking gives the same output as feeding it at once (`resample_offline`): output frame n is ready
once input sample b has arrived, i.e. ceil(n_in * up / down) frames exist after n_in inputs.

`resample_stream` is the Numba kernel (nogil, no allocation); `resample_stream_reference` its NumPy
twin; `StreamResampler` holds the state and preallocated buffers.
"""
from __future__ import annotations

from math import gcd

import numba
import numpy as np


def resampler_table(up: int, down: int, n_taps: int = 32, rolloff: float = 0.9,
                    kaiser_beta: float = 8.0) -> np.ndarray:
    """Polyphase filter float32 [up, n_taps] for the ratio up / down (see the module docstring)."""
    if up < 1 or down < 1 or n_taps < 2 or n_taps % 2:
        raise ValueError(f"resampler needs up, down >= 1 and an even n_taps >= 2, got {up}, {down}, {n_taps}")
    if not 0.0 < rolloff <= 1.0:
        raise ValueError(f"resampler rolloff must lie in (0, 1], got {rolloff}")
    cutoff = rolloff * min(1.0, up / down)
    half = n_taps / 2
    distance = np.arange(n_taps)[None, :] + np.arange(up)[:, None] / up - half
    window = np.i0(kaiser_beta * np.sqrt(np.clip(1.0 - (distance / half) ** 2, 0.0, 1.0))) / np.i0(kaiser_beta)
    table = cutoff * np.sinc(cutoff * distance) * window
    table /= table.sum(axis=1, keepdims=True)
    return table.astype(np.float32)


@numba.njit(nogil=True, cache=True, fastmath=True)
def resample_stream(x, table, up, down, history, counters, out):
    """Resample chunk x float32 [n_in] into out float32 [>= max frames]; returns frames written.

    table float32 [up, n_taps]; history float32 [n_taps - 1 + max n_in] (its first n_taps - 1
    entries hold the previous inputs, updated in place); counters int64 [2] = (frames out so far,
    samples in so far), updated in place."""
    n_taps = table.shape[1]
    keep = n_taps - 1
    n_in = x.shape[0]
    for i in range(n_in):
        history[keep + i] = x[i]
    frame, consumed = counters[0], counters[1]
    total_in = consumed + n_in
    n_written = 0
    while True:
        position = frame * down
        base = position // up
        if base >= total_in:
            break
        phase = position - base * up
        newest = base - consumed + keep
        acc = np.float32(0.0)
        for k in range(n_taps):
            acc += table[phase, k] * history[newest - k]
        out[n_written] = acc
        n_written += 1
        frame += 1
    for i in range(keep):
        history[i] = history[n_in + i]
    counters[0] = frame
    counters[1] = total_in
    return n_written


def resample_stream_reference(x, table, up, down, history, counters, out):
    """NumPy twin of `resample_stream` (same arguments, same state updates)."""
    n_taps = table.shape[1]
    keep = n_taps - 1
    n_in = x.shape[0]
    history[keep:keep + n_in] = x
    frame, consumed = int(counters[0]), int(counters[1])
    total_in = consumed + n_in
    n_frames = max(0, -(-total_in * up // down) - frame)
    frames = frame + np.arange(n_frames)
    position = frames * down
    base, phase = position // up, position % up
    newest = base - consumed + keep
    gathered = history[newest[:, None] - np.arange(n_taps)[None, :]]
    out[:n_frames] = np.einsum("nk,nk->n", table[phase], gathered)
    history[:keep] = history[n_in:n_in + keep]
    counters[0], counters[1] = frame + n_frames, total_in
    return n_frames


class StreamResampler:
    """Stateful rate_in -> rate_out resampler; `process` accepts chunks of at most `max_chunk` samples."""

    def __init__(self, rate_in_hz: int, rate_out_hz: int, max_chunk: int = 4096, n_taps: int = 32,
                 rolloff: float = 0.9, kaiser_beta: float = 8.0):
        if int(rate_in_hz) != rate_in_hz or int(rate_out_hz) != rate_out_hz or rate_in_hz < 1 or rate_out_hz < 1:
            raise ValueError(f"resampler rates must be positive integers (Hz), got {rate_in_hz} -> {rate_out_hz}")
        divisor = gcd(int(rate_in_hz), int(rate_out_hz))
        self.rate_in_hz, self.rate_out_hz = int(rate_in_hz), int(rate_out_hz)
        self.up, self.down = self.rate_out_hz // divisor, self.rate_in_hz // divisor
        self.table = resampler_table(self.up, self.down, n_taps, rolloff, kaiser_beta)
        self.max_chunk = int(max_chunk)
        self.history = np.zeros(n_taps - 1 + self.max_chunk, np.float32)
        self.counters = np.zeros(2, np.int64)

    @property
    def delay_input_samples(self) -> int:
        """Group delay (input samples): output frame n shows the input at n * down / up - delay."""
        return self.table.shape[1] // 2

    @property
    def latency_frames(self) -> float:
        """Group delay in output frames."""
        return self.delay_input_samples * self.up / self.down

    def max_frames_for(self, n_in: int) -> int:
        """Most output frames one chunk of `n_in` input samples can produce."""
        return -(-n_in * self.up // self.down) + 1

    def process(self, x: np.ndarray, out: np.ndarray) -> int:
        """Resample chunk x float32 [n_in <= max_chunk] into out float32 [>= max_frames_for(n_in)];
        returns the number of frames written."""
        if x.shape[0] > self.max_chunk:
            raise ValueError(f"resampler chunk of {x.shape[0]} samples exceeds max_chunk {self.max_chunk}")
        if out.shape[0] < self.max_frames_for(x.shape[0]):
            raise ValueError(f"resampler output buffer of {out.shape[0]} frames is too small for {x.shape[0]} inputs")
        return resample_stream(x, self.table, self.up, self.down, self.history, self.counters, out)

    def reset(self) -> None:
        """Forget the history (silence before the next input) and restart the frame count."""
        self.history[:] = 0.0
        self.counters[:] = 0


def resample_offline(x: np.ndarray, rate_in_hz: int, rate_out_hz: int, n_taps: int = 32,
                     rolloff: float = 0.9, kaiser_beta: float = 8.0) -> np.ndarray:
    """Resample a whole signal x float [n_in] -> float32 [ceil(n_in * up / down)] at once, delayed by
    n_taps / 2 input samples: the offline definition the streaming resampler must match."""
    divisor = gcd(int(rate_in_hz), int(rate_out_hz))
    up, down = int(rate_out_hz) // divisor, int(rate_in_hz) // divisor
    table = resampler_table(up, down, n_taps, rolloff, kaiser_beta)
    x = np.asarray(x, dtype=np.float32)
    padded = np.concatenate([np.zeros(n_taps - 1, np.float32), x])
    position = np.arange(-(-x.shape[0] * up // down)) * down
    base, phase = position // up, position % up
    gathered = padded[(base + n_taps - 1)[:, None] - np.arange(n_taps)[None, :]]
    return np.einsum("nk,nk->n", table[phase], gathered).astype(np.float32)

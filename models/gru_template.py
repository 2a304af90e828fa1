"""The GRU voice's timbre template: the GAN note's own harmonic cycle, measured per grid node and pitch.

A sample-level GRU conditioned on (x, y, pitch) alone learns to predict the next sample from the
last few and hardly uses the timbre point. The template hands it the timbre as a signal instead: for
every timbre grid node and template pitch, the harmonics of G's note there, measured relative to
the fundamental's phase, D_m = a_m + i b_m (m = 1..M, of the note peak-normalised as the GRU's
training clips are). Playing, the coefficients are read bilinearly at (x, y) and linearly in pitch
(clamped to the table's pitch range), harmonics at or above Nyquist are dropped, and two inputs
enter the first GRU layer every sample, at the oscillator phase phi (`models.gru`):

    cycle(phi)      = sum_m Re(D_m e^{i m phi}) = sum_m a_m cos(m phi) - b_m sin(m phi)
    quadrature(phi) = sum_m Im(D_m e^{i m phi}) = sum_m a_m sin(m phi) + b_m cos(m phi)

so the voice sees the waveform one cycle of its grid point's note has, in phase with its clock.

With `template_residual` the cycle is also the voice's prediction of the sample, as LPC is
LPCNet's: p_t = cycle(phi_t), the GRU reads the previous residual's class and its softmax is over
the mu-law classes of the residual e_t = x_t - p_t; the voice plays x_t = clip(p_t + decode(e_t), -1, 1)
and reads back encode(decode(x_t) - p_t), as its training inputs are made (`shifted_class`). A zero residual plays the grid point's harmonics; what the GRU learns is
what they lack (the envelope, the waveform's evolution, noise, transients).

Public API:
    measure_template(audio [n, n_samples], pitches [n], sample_rate, n_harmonics) -> float32 [n, 2M]
    template_table(...) -> float32 [N, N, P, 2M] (a renderer over every node x template pitch)
    template_coefficients(table, pitches, x, y, pitch, sample_rate) -> float32 [2M] (NumPy reference)
    template_signal(coefficients [..., 2M], phase [...]) -> float32 [..., 2] (cycle, quadrature)
    shifted_class(mu_class, offset, n_classes) -> int (NumPy reference)
    template_coefficients_into / template_signal_at / shifted_class_at: Numba twins for the GRU kernel
"""
from __future__ import annotations

from typing import Callable

import numba
import numpy as np

from models.pitch import A4_HZ, A4_MIDI, midi_to_hz

FRAME_PERIODS = 8
"""Periods of the fundamental per measurement frame (at least `MIN_FRAME_SAMPLES`)."""
MIN_FRAME_SAMPLES = 256


def measure_template(audio: np.ndarray, pitches, sample_rate: int, n_harmonics: int,
                     start_s: float = 0.05, stop_s: float = 0.6) -> np.ndarray:
    """Harmonic coefficients of notes relative to their fundamental's phase.

    audio float [n, n_samples] (at `sample_rate` Hz, in tune at MIDI `pitches` [n]); the span
    start_s..stop_s is cut into frames of FRAME_PERIODS periods; each frame is fitted by least
    squares with a_m cos(m w t) + b_m sin(m w t), m = 1..n_harmonics below Nyquist (w the nominal
    f0), rotated so the fundamental's phase is 0 (D_m <- D_m e^{-i m phi_1}, conjugate convention of
    `template_signal`), and the frames are averaged weighted by their energy, so a slow detune or
    an onset does not smear the upper harmonics. Returns float32 [n, 2 * n_harmonics] =
    (a_1, b_1, ..., a_M, b_M), zero above Nyquist and for silent notes."""
    audio = np.asarray(audio, dtype=np.float64)
    pitches = np.atleast_1d(np.asarray(pitches, dtype=np.float64))
    if audio.ndim != 2 or len(pitches) != len(audio):
        raise ValueError(f"audio must be [n, n_samples] with one pitch per note, got {audio.shape} and {pitches.shape}")
    if n_harmonics < 1:
        raise ValueError(f"n_harmonics must be >= 1, got {n_harmonics}")
    out = np.zeros((len(audio), 2 * n_harmonics), np.float32)
    start = int(start_s * sample_rate)
    stop = min(audio.shape[1], int(stop_s * sample_rate))
    for i, (note, pitch) in enumerate(zip(audio, pitches)):
        f0 = float(midi_to_hz(pitch))
        harmonics = np.arange(1, n_harmonics + 1)
        harmonics = harmonics[harmonics * f0 < sample_rate / 2]
        frame = max(MIN_FRAME_SAMPLES, int(round(FRAME_PERIODS * sample_rate / f0)))
        if len(harmonics) == 0 or stop - start < frame:
            continue
        t = np.arange(frame)
        angles = 2 * np.pi * f0 / sample_rate * np.outer(t, harmonics)
        basis = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)  # [frame, 2h]
        total, weight = np.zeros(len(harmonics), np.complex128), 0.0
        for first in range(start, stop - frame + 1, frame // 2):
            segment = note[first:first + frame]
            energy = float(segment @ segment)
            if energy <= 1e-12:
                continue
            solution = np.linalg.lstsq(basis, segment, rcond=None)[0]
            coefficients = solution[:len(harmonics)] - 1j * solution[len(harmonics):]  # x = Re(C e^{i m w t})
            fundamental = np.angle(coefficients[0])
            total += energy * coefficients * np.exp(-1j * harmonics * fundamental)
            weight += energy
        if weight > 0:
            mean = total / weight
            out[i, 2 * (harmonics - 1)] = mean.real
            out[i, 2 * (harmonics - 1) + 1] = mean.imag
    return out


def template_table(nodes: np.ndarray, pitches, render: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   sample_rate: int, n_harmonics: int, peak: float = 0.9, batch: int = 64,
                   progress: bool = True) -> np.ndarray:
    """The template of every grid node x pitch: nodes float [N, N, D] (the grid's conditioning
    vectors), pitches MIDI [P] ascending, render(h [b, D], pitches [b]) -> audio float [b, n_samples]
    at `sample_rate` (as the GRU's training clips are rendered); each note is peak-normalised to
    `peak` first. Returns float32 [N, N, P, 2 * n_harmonics]."""
    from tqdm import tqdm  # measuring a table is training-time work: the runtime never loads tqdm

    nodes = np.asarray(nodes, dtype=np.float32)
    size, pitch_list = nodes.shape[0], [int(p) for p in pitches]
    h = np.repeat(nodes.reshape(size * size, -1), len(pitch_list), axis=0)
    clip_pitch = np.tile(np.array(pitch_list), size * size)
    table = np.zeros((len(h), 2 * n_harmonics), np.float32)
    for first in tqdm(range(0, len(h), batch), desc="GRU template", unit="batch", disable=not progress):
        chunk = slice(first, min(first + batch, len(h)))
        audio = np.asarray(render(h[chunk], clip_pitch[chunk]), dtype=np.float64)
        level = np.abs(audio).max(axis=1, keepdims=True)
        audio = np.where(level > 1e-6, audio * (peak / np.maximum(level, 1e-12)), 0.0)
        table[chunk] = measure_template(audio, clip_pitch[chunk], sample_rate, n_harmonics)
    return table.reshape(size, size, len(pitch_list), 2 * n_harmonics)


def template_coefficients(table: np.ndarray, pitches: np.ndarray, x: float, y: float, pitch: float,
                          sample_rate: int) -> np.ndarray:
    """NumPy reference of the lookup (the kernel's `_template_lookup`, torch's `template_lookup`):
    table [N, N, P, 2M] (rows y, columns x), pitches [P] ascending; (x, y) clipped to [0, 1], pitch
    clamped to [pitches[0], pitches[-1]]; harmonics m with m f0(pitch) >= sample_rate / 2 are zero.
    Returns float32 [2M]."""
    table = np.asarray(table, dtype=np.float64)
    last = table.shape[0] - 1
    column, row = min(max(x, 0.0), 1.0) * last, min(max(y, 0.0), 1.0) * last
    c0, r0 = min(int(np.floor(column)), last - 1), min(int(np.floor(row)), last - 1)
    fx, fy = column - c0, row - r0
    at_pitch = (1 - fx) * (1 - fy) * table[r0, c0] + fx * (1 - fy) * table[r0, c0 + 1] \
        + (1 - fx) * fy * table[r0 + 1, c0] + fx * fy * table[r0 + 1, c0 + 1]  # [P, 2M]
    pitches = np.asarray(pitches, dtype=np.float64)
    if len(pitches) == 1:
        coefficients = at_pitch[0]
    else:
        p = min(max(float(pitch), pitches[0]), pitches[-1])
        k = min(int(np.searchsorted(pitches, p, side="right")) - 1, len(pitches) - 2)
        f = (p - pitches[k]) / (pitches[k + 1] - pitches[k])
        coefficients = (1 - f) * at_pitch[k] + f * at_pitch[k + 1]
    n_harmonics = table.shape[3] // 2
    audible = np.arange(1, n_harmonics + 1) * midi_to_hz(float(pitch)) < sample_rate / 2
    return (coefficients * np.repeat(audible, 2)).astype(np.float32)


def template_signal(coefficients: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """(cycle, quadrature) at oscillator `phase` (radians) [...] of coefficients [..., 2M]
    (broadcast against phase[..., None]): float32 [..., 2]."""
    coefficients = np.asarray(coefficients, dtype=np.float64)
    a, b = coefficients[..., 0::2], coefficients[..., 1::2]
    angles = np.asarray(phase, dtype=np.float64)[..., None] * np.arange(1, a.shape[-1] + 1)
    cos, sin = np.cos(angles), np.sin(angles)
    return np.stack([(a * cos - b * sin).sum(-1), (a * sin + b * cos).sum(-1)], axis=-1).astype(np.float32)


@numba.njit(inline="always", error_model="numpy")
def template_coefficients_into(table, pitches, x, y, pitch, sample_rate, out):
    """`template_coefficients` for the GRU kernel (Numba, no allocation): writes out [2M]."""
    last = table.shape[0] - 1
    column = min(max(np.float64(x), 0.0), 1.0) * last
    row = min(max(np.float64(y), 0.0), 1.0) * last
    c0, r0 = min(int(np.floor(column)), last - 1), min(int(np.floor(row)), last - 1)
    fx, fy = column - c0, row - r0
    n_pitches = pitches.shape[0]
    k, f = 0, 0.0
    if n_pitches > 1:
        p = min(max(np.float64(pitch), pitches[0]), pitches[n_pitches - 1])
        while k < n_pitches - 2 and pitches[k + 1] <= p:
            k += 1
        f = (p - pitches[k]) / (pitches[k + 1] - pitches[k])
    k1 = min(k + 1, n_pitches - 1)
    f0_hz = A4_HZ * 2.0 ** ((np.float64(pitch) - A4_MIDI) / 12.0)
    for j in range(out.shape[0]):
        low = ((1 - fx) * (1 - fy) * table[r0, c0, k, j] + fx * (1 - fy) * table[r0, c0 + 1, k, j]
               + (1 - fx) * fy * table[r0 + 1, c0, k, j] + fx * fy * table[r0 + 1, c0 + 1, k, j])
        high = ((1 - fx) * (1 - fy) * table[r0, c0, k1, j] + fx * (1 - fy) * table[r0, c0 + 1, k1, j]
                + (1 - fx) * fy * table[r0 + 1, c0, k1, j] + fx * fy * table[r0 + 1, c0 + 1, k1, j])
        audible = (j // 2 + 1) * f0_hz < 0.5 * sample_rate
        out[j] = np.float32((1 - f) * low + f * high) if audible else np.float32(0.0)


@numba.njit(inline="always", error_model="numpy")
def template_signal_at(coefficients, cos_phase, sin_phase):
    """(cycle, quadrature) of held coefficients [2M] at the phase whose cosine and sine the kernel's
    oscillator already holds: the harmonics' e^{i m phi} by a rotation recursion from e^{i phi} (float64)."""
    c1, s1 = np.float64(cos_phase), np.float64(sin_phase)
    cm, sm = c1, s1
    cycle, quadrature = 0.0, 0.0
    for m in range(coefficients.shape[0] // 2):
        a, b = np.float64(coefficients[2 * m]), np.float64(coefficients[2 * m + 1])
        cycle += a * cm - b * sm
        quadrature += a * sm + b * cm
        cm, sm = cm * c1 - sm * s1, sm * c1 + cm * s1
    return np.float32(cycle), np.float32(quadrature)


def shifted_class(mu_class: int, offset: float, n_classes: int) -> int:
    """NumPy reference: the mu-law class of clip(decode(mu_class) + offset, -1, 1)."""
    mu = n_classes - 1
    y = 2.0 * mu_class / mu - 1.0
    x = min(max(float(np.sign(y) * np.expm1(abs(y) * np.log1p(mu)) / mu) + float(offset), -1.0), 1.0)
    return int(np.floor((np.sign(x) * np.log1p(mu * abs(x)) / np.log1p(mu) + 1.0) * 0.5 * mu + 0.5))


@numba.njit(inline="always", error_model="numpy")
def shifted_class_at(mu_class, offset, n_classes):
    """`shifted_class` for the GRU kernel (float64 arithmetic, same result)."""
    mu = np.float64(n_classes - 1)
    y = 2.0 * mu_class / mu - 1.0
    value = np.expm1(abs(y) * np.log1p(mu)) / mu
    if y < 0:
        value = -value
    x = min(max(value + np.float64(offset), -1.0), 1.0)
    compressed = np.log1p(mu * abs(x)) / np.log1p(mu)
    if x < 0:
        compressed = -compressed
    return int(np.floor((compressed + 1.0) * 0.5 * mu + 0.5))

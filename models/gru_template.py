"""The GRU voice's timbre template: the GAN note's own harmonic cycle, measured per grid node and pitch.

A sample-level GRU conditioned on (x, y, pitch) alone learns to predict the next sample from the
last few and hardly uses the timbre point. The template hands it the timbre as a signal instead: for
every timbre grid node and template pitch, the harmonics of G's note there, measured relative to
the fundamental's phase, D_m = a_m + i b_m (m = 1..M, of the note peak-normalised as the GRU's
training clips are), per frame of the note (`template_frame_s`, or one frame: the note's mean).
Playing, the entries around (x, y), the pitch and the note's age (each clamped to the table's
range) are blended in polar form, harmonics at or above Nyquist are dropped, and two inputs
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
    measure_template(audio [n, n_samples], pitches [n], sample_rate, n_harmonics, frame_s) -> float32 [n, F, 2M]
    template_table(...) -> float32 [N, N, P, F, 2M] (a renderer over every node x template pitch)
    measure_peak_normalised(audio, pitches, ...) -> float32 [n, F, 2M] (notes peak-normalised first)
    point_table(notes [P, n_samples], pitches [P], ...) -> float32 [2, 2, P, F, 2M] (one point's bank)
    template_coefficients(table, pitches, frame_s, x, y, pitch, age_s, sample_rate) -> float32 [2M]
        (NumPy reference)
    template_signal(coefficients [..., 2M], phase [...]) -> float32 [..., 2] (cycle, quadrature)
    shifted_class(mu_class, offset, n_classes) -> int (NumPy reference)
    template_coefficients_into / template_signal_at / shifted_class_at: Numba twins for the GRU kernel
    mu_law_class_at(value, n_classes) -> int: the kernel's mu-law encoder of one value
"""
from __future__ import annotations

from typing import Callable

import numba
import numpy as np

from models.pitch import A4_HZ, A4_MIDI, midi_to_hz

FIT_PERIODS = 4
"""Periods of the fundamental per least-squares fit, and at least `MIN_FIT_S` seconds: 2M
coefficients fitted to a few hundred samples fit the note's noise between the harmonics too; fits
much longer than 50 ms smear the note's attack and release over their neighbours."""
MIN_FIT_S = 0.05
DIRECTION_FLOOR = 1e-6
"""Below this |sum w D / |D|| (phases that cancel exactly) a blended harmonic is silent."""


def measure_template(audio: np.ndarray, pitches, sample_rate: int, n_harmonics: int, frame_s=(),
                     start_s: float = 0.05, stop_s: float = 0.6) -> np.ndarray:
    """Harmonic coefficients of notes relative to their fundamental's phase, per frame of the note.

    audio float [n, n_samples] (at `sample_rate` Hz from the notes' onsets, in tune at MIDI
    `pitches` [n]). Fits of FIT_PERIODS periods or MIN_FIT_S (hop half of that; a shorter note is one
    fit, if it holds 2 periods) are made by least squares with
    a_m cos(m w t) + b_m sin(m w t), m = 1..n_harmonics below Nyquist (w the nominal f0), and rotated
    so the fundamental's phase is 0 (D_m <- D_m e^{-i m phi_1}, conjugate convention of
    `template_signal`). frame_s: ascending times (s since onset) of the frames: each frame is the
    energy-weighted mean of the fits whose centres are nearer to it than to any other frame (a frame
    no fit falls near copies its nearest neighbour's); empty: one frame, the mean of the fits in
    start_s..stop_s. Returns float32 [n, F, 2 * n_harmonics] = (a_1, b_1, ..., a_M, b_M), F =
    max(len(frame_s), 1), zero above Nyquist and for silent notes."""
    audio = np.asarray(audio, dtype=np.float64)
    pitches = np.atleast_1d(np.asarray(pitches, dtype=np.float64))
    frame_s = np.asarray(frame_s, dtype=np.float64).ravel()
    if audio.ndim != 2 or len(pitches) != len(audio):
        raise ValueError(f"audio must be [n, n_samples] with one pitch per note, got {audio.shape} and {pitches.shape}")
    if n_harmonics < 1:
        raise ValueError(f"n_harmonics must be >= 1, got {n_harmonics}")
    if np.any(np.diff(frame_s) <= 0) or np.any(frame_s < 0):
        raise ValueError(f"frame_s must be ascending times >= 0, got {frame_s.tolist()}")
    n_frames = max(len(frame_s), 1)
    out = np.zeros((len(audio), n_frames, 2 * n_harmonics), np.float32)
    if len(frame_s):
        start, stop = 0, audio.shape[1]
    else:
        start, stop = int(start_s * sample_rate), min(audio.shape[1], int(stop_s * sample_rate))
    boundaries = (frame_s[1:] + frame_s[:-1]) * 0.5 * sample_rate  # [F - 1] samples between frames
    for i, (note, pitch) in enumerate(zip(audio, pitches)):
        f0 = float(midi_to_hz(pitch))
        harmonics = np.arange(1, n_harmonics + 1)
        harmonics = harmonics[harmonics * f0 < sample_rate / 2]
        fit = min(int(round(max(MIN_FIT_S, FIT_PERIODS / f0) * sample_rate)), stop - start)  # short notes: all of it
        if len(harmonics) == 0 or fit < max(2 * sample_rate / f0, 4 * len(harmonics)):
            continue
        t = np.arange(fit)
        angles = 2 * np.pi * f0 / sample_rate * np.outer(t, harmonics)
        basis = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)  # [fit, 2h]
        total = np.zeros((n_frames, len(harmonics)), np.complex128)
        weight = np.zeros(n_frames)
        for first in range(start, stop - fit + 1, fit // 2):
            segment = note[first:first + fit]
            energy = float(segment @ segment)
            if energy <= 1e-12:
                continue
            solution = np.linalg.lstsq(basis, segment, rcond=None)[0]
            coefficients = solution[:len(harmonics)] - 1j * solution[len(harmonics):]  # x = Re(C e^{i m w t})
            fundamental = np.angle(coefficients[0])
            frame = int(np.searchsorted(boundaries, first + fit / 2))
            total[frame] += energy * coefficients * np.exp(-1j * harmonics * fundamental)
            weight[frame] += energy
        filled = np.nonzero(weight > 0)[0]
        if len(filled) == 0:
            continue
        nearest = filled[np.abs(np.arange(n_frames)[:, None] - filled[None, :]).argmin(axis=1)]
        mean = total[nearest] / weight[nearest, None]
        out[i][:, 2 * (harmonics - 1)] = mean.real
        out[i][:, 2 * (harmonics - 1) + 1] = mean.imag
    return out


def template_table(nodes: np.ndarray, pitches, render: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   sample_rate: int, n_harmonics: int, frame_s=(), peak: float = 0.9, batch: int = 64,
                   progress: bool = True) -> np.ndarray:
    """The template of every grid node x pitch: nodes float [N, N, D] (the grid's conditioning
    vectors), pitches MIDI [P] ascending, render(h [b, D], pitches [b]) -> audio float [b, n_samples]
    at `sample_rate` from the notes' onsets (as the GRU's training clips are rendered); each note is
    peak-normalised to `peak` first; frame_s as in `measure_template`. Returns float32
    [N, N, P, F, 2 * n_harmonics]."""
    from tqdm import tqdm  # measuring a table is training-time work: the runtime never loads tqdm

    nodes = np.asarray(nodes, dtype=np.float32)
    size, pitch_list = nodes.shape[0], [int(p) for p in pitches]
    n_frames = max(len(frame_s), 1)
    h = np.repeat(nodes.reshape(size * size, -1), len(pitch_list), axis=0)
    clip_pitch = np.tile(np.array(pitch_list), size * size)
    table = np.zeros((len(h), n_frames, 2 * n_harmonics), np.float32)
    for first in tqdm(range(0, len(h), batch), desc="GRU template", unit="batch", disable=not progress):
        chunk = slice(first, min(first + batch, len(h)))
        audio = np.asarray(render(h[chunk], clip_pitch[chunk]), dtype=np.float64)
        table[chunk] = measure_peak_normalised(audio, clip_pitch[chunk], sample_rate, n_harmonics, frame_s, peak)
    return table.reshape(size, size, len(pitch_list), n_frames, 2 * n_harmonics)


def measure_peak_normalised(audio: np.ndarray, pitches, sample_rate: int, n_harmonics: int, frame_s=(),
                            peak: float = 0.9) -> np.ndarray:
    """`measure_template` of notes float [n, n_samples] each first peak-normalised to `peak` (as the
    GRU's training clips are; silent notes stay silent). Returns float32 [n, F, 2 * n_harmonics]."""
    audio = np.asarray(audio, dtype=np.float64)
    level = np.abs(audio).max(axis=1, keepdims=True)
    audio = np.where(level > 1e-6, audio * (peak / np.maximum(level, 1e-12)), 0.0)
    return measure_template(audio, pitches, sample_rate, n_harmonics, frame_s)


def point_table(notes: np.ndarray, pitches, sample_rate: int, n_harmonics: int, frame_s=()) -> np.ndarray:
    """A template table of one timbre point, measured from its own notes float [P, n_samples] (a bank:
    every pitch [P] ascending, at the exact point): float32 [2, 2, P, F, 2 * n_harmonics], the same
    entry at all four corners, so the lookup reads it at any (x, y)."""
    measured = measure_peak_normalised(notes, pitches, sample_rate, n_harmonics, frame_s)
    return np.ascontiguousarray(np.broadcast_to(measured[None, None], (2, 2) + measured.shape), np.float32)


def _interpolation(points: np.ndarray, value: float) -> tuple[int, float]:
    """(k, f): `value` clamped to [points[0], points[-1]] lies at (1 - f) points[k] + f points[k + 1]
    (k = 0, f = 0 for a single point)."""
    if len(points) == 1:
        return 0, 0.0
    clamped = min(max(float(value), points[0]), points[-1])
    k = min(int(np.searchsorted(points, clamped, side="right")) - 1, len(points) - 2)
    return k, (clamped - points[k]) / (points[k + 1] - points[k])


def template_coefficients(table: np.ndarray, pitches: np.ndarray, frame_s: np.ndarray, x: float, y: float,
                          pitch: float, age_s: float, sample_rate: int) -> np.ndarray:
    """NumPy reference of the lookup (the kernel's `template_coefficients_into`, torch's
    `template_lookup`): table [N, N, P, F, 2M] (rows y, columns x), pitches [P] ascending, frame_s
    [F] ascending (s since onset; any single value for F = 1); (x, y) clipped to [0, 1], pitch and
    the note's age (s) clamped to the table's ranges; the 4 x 2 x 2 entries around them are blended
    in polar form (`blend` weights w): magnitude sum w |D|, phase that of sum w D / |D|, so two notes
    whose harmonics differ in phase do not cancel between them; harmonics m with
    m f0(pitch) >= sample_rate / 2 are zero. Returns float32 [2M]."""
    table = np.asarray(table, dtype=np.float64)
    last = table.shape[0] - 1
    column, row = min(max(x, 0.0), 1.0) * last, min(max(y, 0.0), 1.0) * last
    c0, r0 = min(int(np.floor(column)), last - 1), min(int(np.floor(row)), last - 1)
    fx, fy = column - c0, row - r0
    k, fk = _interpolation(np.asarray(pitches, dtype=np.float64), pitch)
    a, fa = _interpolation(np.asarray(frame_s, dtype=np.float64).ravel()[:table.shape[3]], age_s)
    k1, a1 = min(k + 1, table.shape[2] - 1), min(a + 1, table.shape[3] - 1)
    magnitude, direction = 0.0, 0.0
    for r, c, w_xy in ((r0, c0, (1 - fx) * (1 - fy)), (r0, c0 + 1, fx * (1 - fy)),
                       (r0 + 1, c0, (1 - fx) * fy), (r0 + 1, c0 + 1, fx * fy)):
        for p, w_p in ((k, 1 - fk), (k1, fk)):
            for t, w_t in ((a, 1 - fa), (a1, fa)):
                entry = table[r, c, p, t, 0::2] + 1j * table[r, c, p, t, 1::2]  # [M]
                size = np.abs(entry)
                magnitude = magnitude + w_xy * w_p * w_t * size
                direction = direction + w_xy * w_p * w_t * np.where(size > 0, entry / np.maximum(size, 1e-30), 0)
    blended = magnitude * direction / np.maximum(np.abs(direction), DIRECTION_FLOOR)
    n_harmonics = table.shape[-1] // 2
    audible = np.arange(1, n_harmonics + 1) * midi_to_hz(float(pitch)) < sample_rate / 2
    blended = blended * audible
    return np.stack([blended.real, blended.imag], axis=-1).ravel().astype(np.float32)


def template_signal(coefficients: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """(cycle, quadrature) at oscillator `phase` (radians) [...] of coefficients [..., 2M]
    (broadcast against phase[..., None]): float32 [..., 2]."""
    coefficients = np.asarray(coefficients, dtype=np.float64)
    a, b = coefficients[..., 0::2], coefficients[..., 1::2]
    angles = np.asarray(phase, dtype=np.float64)[..., None] * np.arange(1, a.shape[-1] + 1)
    cos, sin = np.cos(angles), np.sin(angles)
    return np.stack([(a * cos - b * sin).sum(-1), (a * sin + b * cos).sum(-1)], axis=-1).astype(np.float32)


@numba.njit(inline="always", error_model="numpy")
def _interpolation_at(points, value):
    """`_interpolation` for the GRU kernel."""
    n = points.shape[0]
    if n == 1:
        return 0, 0.0
    clamped = min(max(np.float64(value), points[0]), points[n - 1])
    k = 0
    while k < n - 2 and points[k + 1] <= clamped:
        k += 1
    return k, (clamped - points[k]) / (points[k + 1] - points[k])


@numba.njit(inline="always", error_model="numpy")
def template_coefficients_into(table, pitches, frame_s, x, y, pitch, age_s, sample_rate, out):
    """`template_coefficients` for the GRU kernel (Numba, no allocation): writes out [2M]."""
    last = table.shape[0] - 1
    column = min(max(np.float64(x), 0.0), 1.0) * last
    row = min(max(np.float64(y), 0.0), 1.0) * last
    c0, r0 = min(int(np.floor(column)), last - 1), min(int(np.floor(row)), last - 1)
    fx, fy = column - c0, row - r0
    corner = ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)
    k, fk = _interpolation_at(pitches, pitch)
    a, fa = _interpolation_at(frame_s[:table.shape[3]], age_s)
    k1, a1 = min(k + 1, table.shape[2] - 1), min(a + 1, table.shape[3] - 1)
    f0_hz = A4_HZ * 2.0 ** ((np.float64(pitch) - A4_MIDI) / 12.0)
    for m in range(out.shape[0] // 2):
        out[2 * m], out[2 * m + 1] = np.float32(0.0), np.float32(0.0)
        if (m + 1) * f0_hz >= 0.5 * sample_rate:
            continue
        magnitude, real, imaginary = 0.0, 0.0, 0.0
        for index in range(16):  # 4 corners x 2 pitches x 2 frames
            r, c = r0 + (index >> 3), c0 + ((index >> 2) & 1)
            p = k1 if (index >> 1) & 1 else k
            t = a1 if index & 1 else a
            w = corner[index >> 2] * (fk if (index >> 1) & 1 else 1 - fk) * (fa if index & 1 else 1 - fa)
            re, im = np.float64(table[r, c, p, t, 2 * m]), np.float64(table[r, c, p, t, 2 * m + 1])
            size = np.sqrt(re * re + im * im)
            if w == 0.0 or size == 0.0:
                continue
            magnitude += w * size
            real += w * re / size
            imaginary += w * im / size
        length = np.sqrt(real * real + imaginary * imaginary)
        scale = magnitude / max(length, DIRECTION_FLOOR)
        out[2 * m], out[2 * m + 1] = np.float32(real * scale), np.float32(imaginary * scale)


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
def mu_law_class_at(value, n_classes):
    """The mu-law class of clip(value, -1, 1) (float64 arithmetic, as `models.mu_law.mu_law_encode`)."""
    mu = np.float64(n_classes - 1)
    x = min(max(np.float64(value), -1.0), 1.0)
    compressed = np.log1p(mu * abs(x)) / np.log1p(mu)
    if x < 0:
        compressed = -compressed
    return int(np.floor((compressed + 1.0) * 0.5 * mu + 0.5))


@numba.njit(inline="always", error_model="numpy")
def shifted_class_at(mu_class, offset, n_classes):
    """`shifted_class` for the GRU kernel (float64 arithmetic, same result)."""
    mu = np.float64(n_classes - 1)
    y = 2.0 * mu_class / mu - 1.0
    value = np.expm1(abs(y) * np.log1p(mu)) / mu
    if y < 0:
        value = -value
    return mu_law_class_at(value + np.float64(offset), n_classes)

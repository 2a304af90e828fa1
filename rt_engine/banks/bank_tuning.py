"""Tuning of rendered bank notes: measure each note's fundamental near its nominal pitch and
retune it, so a GAN note that came out a few cents off plays in tune.

Pure functions, run in the bank worker process on arrival of a rendered chunk (never on the
audio thread). The estimate is a harmonic sum over a fine grid of candidate fundamentals within
±`search_cents` of the nominal pitch, on a zero-padded magnitude spectrum of the note's body.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from models.pitch import midi_to_hz
from models.resample import resample_poly
from models.spectral import rfft_frames

SEARCH_CENTS = 100.0
"""How far from the nominal pitch the fundamental is looked for (cents)."""
MIN_RETUNE_CENTS = 3.0
"""Notes measured closer to their nominal pitch than this are not retuned: at 1-cent steps the
estimate's own scatter on notes the harmonic-prior inversion rendered at their nominal pitch is
0-2 cents (below what a listener can hear), and skipping them leaves most rows to the plain
rate change."""
MIN_HARMONIC_PROMINENCE_DB = 12.0
"""A note whose harmonics stand less than this above the spectrum's median is left alone."""


def measure_detune_cents(notes: np.ndarray, pitches, sample_rate: int,
                         search_cents: float = SEARCH_CENTS) -> np.ndarray:
    """Detune of each note from its nominal MIDI pitch (cents; + is sharp), NaN where no clear
    harmonic series is found or the best candidate is at the edge of the search (the fundamental
    may lie outside it: the lowest keys, whose harmonics the window hardly resolves).
    notes float32 [n, n_samples] at `sample_rate` (Hz)."""
    notes = np.asarray(notes, dtype=np.float64)
    n_samples = notes.shape[1]
    body = notes[:, n_samples // 10: n_samples // 10 + min(8192, n_samples - n_samples // 10)]
    n_fft = 8 * 8192
    padded = np.zeros((len(notes), n_fft), dtype=np.float32)
    padded[:, :body.shape[1]] = body * np.hanning(body.shape[1])
    spectrum = np.abs(rfft_frames(padded))
    bin_hz = sample_rate / n_fft
    candidates_cents = np.arange(-search_cents, search_cents + 0.5, 1.0)
    detune = np.full(len(notes), np.nan)
    for row, pitch in enumerate(pitches):
        nominal_hz = midi_to_hz(float(pitch))
        f0_hz = nominal_hz * 2.0 ** (candidates_cents / 1200.0)               # [n_candidates]
        n_harmonics = int(max(1, min(10, (0.45 * sample_rate) // (f0_hz.max()))))
        harmonic_hz = f0_hz[:, None] * np.arange(1, n_harmonics + 1)[None, :]
        # Linear magnitudes: the strong harmonics lead, empty ones add nothing.
        level = np.interp(harmonic_hz / bin_hz, np.arange(spectrum.shape[1]), spectrum[row])
        score = level.sum(axis=1)
        best = int(np.argmax(score))
        prominence_db = 20.0 * np.log10(level[best].max() / (np.median(spectrum[row]) + 1e-12) + 1e-12)
        if prominence_db >= MIN_HARMONIC_PROMINENCE_DB and 0 < best < len(candidates_cents) - 1:
            detune[row] = candidates_cents[best]
    return detune


def retune(notes: np.ndarray, detune_cents: np.ndarray, min_cents: float = MIN_RETUNE_CENTS,
           rate_ratio: Fraction = Fraction(1)) -> np.ndarray:
    """Resample each note [n, n_samples] so that its measured detune (cents) becomes 0 and, in the
    same pass, by `rate_ratio` (output rate / input rate, e.g. 48000/32000 to the device rate).
    Notes with NaN or |detune| < `min_cents` are only rate-converted (unchanged at ratio 1).
    Output float32 [n, ceil(n_samples * rate_ratio)]: a stretched note is zero-padded or cut at
    the end. Polyphase windowed-sinc resampling by the nearest rational ratio (denominator <= 1000:
    within 0.05 cents of the exact one at the device rates); notes that share a ratio are
    resampled together."""
    notes = np.asarray(notes, dtype=np.float32)
    rate_ratio = Fraction(rate_ratio)
    n_out = -(-notes.shape[1] * rate_ratio.numerator // rate_ratio.denominator)
    ratios = []
    for cents in np.asarray(detune_cents, dtype=np.float64):
        if not np.isfinite(cents) or abs(cents) < min_cents:
            ratios.append(rate_ratio)
        else:  # sharp by c cents: stretch by 2^(c/1200) so that it plays 2^(-c/1200) lower
            ratios.append(Fraction(float(rate_ratio) * 2.0 ** (cents / 1200.0)).limit_denominator(1000))
    out = np.zeros((notes.shape[0], n_out), dtype=np.float32)
    for ratio in set(ratios):
        rows = [row for row, r in enumerate(ratios) if r == ratio]
        if ratio == 1:
            out[rows] = notes[rows]
            continue
        stretched = resample_poly(notes[rows], ratio.numerator, ratio.denominator, axis=1)
        n = min(stretched.shape[1], n_out)
        out[rows, :n] = stretched[:, :n]
    return out

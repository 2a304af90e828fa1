"""The own-sample blend of a one-shot bank: at the input's own pitch and within an interval of it
the bank plays the input itself, resampled to each pitch (what a plain sampler does), and
crossfades to the generated notes further away, where resampling's timbre shift grows.

Pure functions, arrays in, arrays out. The one-shot bank path (`models.gan_bank.GanBankSource`,
attribute `own_sample_blend`: an `OwnSampleBlend` or None for off) estimates the input's pitch
once per request (`estimate_pitch_midi`) and applies `blend_own_sample` to every rendered chunk.
An input without a clear pitch (no YIN dip) plays generated notes only.

The default (`DEFAULT_BLEND`: the input within 9 semitones, crossfaded to generated notes over
the next 2) is a measured choice: `latentsynth eval --one-shot-fidelity` on TimGM6mb (a font the
default 16 kHz model never trained on; one note at MIDI 60 per GM program 0-111, log-mel distance in dB
to the font's notes MIDI 36-84 over the first 0.5 s), chosen on the 84 programs not held out:

| bank (interval, crossfade in semitones) | 84 programs | 28 held out (p % 4 == 3) |
|---|---|---|
| generated only (off) | 12.01 dB | 11.66 dB |
| blend 0.5, 0 (own key only) / 1, 2 | 11.50 / 11.48 | 11.26 / 11.26 |
| blend 3, 2 / 6, 2 | 11.31 / 11.03 | 11.09 / 11.01 |
| blend 9, 2 (default) / 12, 2 | 10.81 / 10.92 | 10.97 / 11.24 |
| the one-shot resampled (a plain sampler) | 11.57 | 12.17 |
| best of nearest and same-named preset | 12.30 | 12.50 |

Share of programs where the bank is closer than both the sampler and the best preset: 0.38 off,
0.56 with the default (held out: 0.43, 0.64). The input's pitch is estimated (YIN); 19 of 112
programs estimate it more than half a semitone from the font's MIDI 60 (organs, bells and
percussion an octave or more off). Centred on the known MIDI 60 instead, the default blend scores
9.94 / 9.90 dB (0.62 / 0.82 of programs).

The user's switch: `--own-sample-blend on|off|INTERVAL[,CROSSFADE]` on `serve`, `generate` and
`eval --one-shot-fidelity` (`parse_blend`); `serve` hands it to its bank worker process in the
environment variable BLEND_ENVIRONMENT, which `models.gan_bank.load_source` reads.

Public API:
    OwnSampleBlend                    frozen dataclass: interval_semitones, crossfade_semitones
    DEFAULT_BLEND                     the shipped setting (OwnSampleBlend or None)
    BLEND_ENVIRONMENT                 name of the environment variable a bank worker reads the setting from
    parse_blend(text) -> OwnSampleBlend | None   'on', 'off' (None), 'A' or 'A,B' semitones
    blend_text(blend) -> str          the inverse: 'off' or 'A,B'
    own_sample_weights(pitches [n], source_pitch, blend) -> float64 [n] in [0, 1] (1: the input itself)
    resample_to_pitch(note [n_samples], semitones, sample_rate) -> float32 [n_samples]
    estimate_pitch_midi(note [n_samples], sample_rate) -> float (MIDI, fractional; nan when unpitched)
    blend_rows(generated [n, n_samples], own [n, n_samples], weights [n]) -> float32 [n, n_samples]
    blend_own_sample(generated, pitches, note, source_pitch, sample_rate, blend) -> float32 [n, n_samples]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from models.one_shot import preprocess_note
from models.pitch import hz_to_midi, midi_to_hz
from models.resample import resample_poly

FADE_SECONDS = 0.1
"""The training data's fade-out (s), re-applied to each resampled note (`models.one_shot`)."""
FADE_DECAY = 5.0
YIN_THRESHOLD = 0.15
"""YIN's absolute threshold on the cumulative-mean-normalised difference (de Cheveigné & Kawahara)."""
YIN_UNPITCHED = 0.5
"""A note whose best normalised difference stays above this has no clear pitch."""
RATIO_DENOMINATOR = 1000
"""Largest denominator of the rational resampling ratio (under 2 cents of error)."""


@dataclass(frozen=True)
class OwnSampleBlend:
    """Where the input itself plays: within `interval_semitones` of its own pitch entirely, then
    a linear crossfade to the generated note over the next `crossfade_semitones`."""

    interval_semitones: float = 9.0
    crossfade_semitones: float = 2.0

    def __post_init__(self):
        if not (self.interval_semitones >= 0.0 and self.crossfade_semitones >= 0.0):
            raise ValueError(f"interval and crossfade must be >= 0 semitones, got {self}")


DEFAULT_BLEND: OwnSampleBlend | None = OwnSampleBlend()
BLEND_ENVIRONMENT = "LATENTSYNTH_OWN_SAMPLE_BLEND"


def parse_blend(text: str) -> OwnSampleBlend | None:
    """The user's setting: 'on' (`OwnSampleBlend()`: 9 semitones, 2 of crossfade), 'off' (None),
    'A' (the input within A semitones, the default crossfade) or 'A,B' (A semitones, B of
    crossfade). Anything else is a ValueError saying what is accepted."""
    text = str(text).strip().lower()
    if text == "on":
        return OwnSampleBlend()
    if text == "off":
        return None
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
        if len(values) not in (1, 2) or not all(math.isfinite(v) for v in values):
            raise ValueError
        return OwnSampleBlend(*values)
    except (ValueError, TypeError):
        raise ValueError(f"own-sample blend must be on, off, INTERVAL or INTERVAL,CROSSFADE (semitones >= 0), "
                         f"got {text!r}") from None


def blend_text(blend: OwnSampleBlend | None) -> str:
    """`parse_blend`'s inverse: 'off' for None, else 'A,B' (interval, crossfade in semitones)."""
    return "off" if blend is None else f"{blend.interval_semitones:g},{blend.crossfade_semitones:g}"


def own_sample_weights(pitches, source_pitch: float, blend: OwnSampleBlend) -> np.ndarray:
    """Weight of the input itself at each MIDI pitch `[n]`: 1 within `blend.interval_semitones` of
    `source_pitch` (MIDI), falling linearly to 0 over `blend.crossfade_semitones`. float64 [n]."""
    distance = np.abs(np.asarray(pitches, dtype=np.float64) - float(source_pitch))
    if blend.crossfade_semitones == 0.0:
        return (distance <= blend.interval_semitones).astype(np.float64)
    return np.clip(1.0 - (distance - blend.interval_semitones) / blend.crossfade_semitones, 0.0, 1.0)


def resample_to_pitch(note: np.ndarray, semitones: float, sample_rate: int) -> np.ndarray:
    """The note `[n_samples]` played `semitones` higher (negative: lower) by resampling, as a
    sampler does (duration scales by 2^(-semitones/12)); cut or zero-padded to n_samples, then the
    training data's preprocessing (peak 1.0, exponential fade-out). Polyphase windowed sinc by the
    nearest rational ratio. Returns float32 [n_samples]."""
    note = np.asarray(note, dtype=np.float32)
    n_samples = note.shape[-1]
    ratio = Fraction(2.0 ** (-float(semitones) / 12.0)).limit_denominator(RATIO_DENOMINATOR)
    shifted = note if ratio == 1 else resample_poly(note, ratio.numerator, ratio.denominator).astype(np.float32)
    shifted = np.pad(shifted[:n_samples], (0, max(0, n_samples - shifted.size)))
    return preprocess_note(shifted, sample_rate, FADE_SECONDS, FADE_DECAY)


def estimate_pitch_midi(note: np.ndarray, sample_rate: int, min_pitch: float = 21.0, max_pitch: float = 108.0,
                        start_seconds: float = 0.05) -> float:
    """YIN pitch (MIDI, fractional) of one note `[n_samples]` at `sample_rate` (Hz): the
    cumulative-mean-normalised difference function of one frame after the attack (from
    `start_seconds`), the first dip under YIN_THRESHOLD (else the global minimum) at lags of
    MIDI `min_pitch`..`max_pitch`, refined by a parabola. nan when the note has no clear pitch."""
    note = np.asarray(note, dtype=np.float64)
    min_lag = max(2, int(math.floor(sample_rate / midi_to_hz(max_pitch))))
    max_lag = int(math.ceil(sample_rate / midi_to_hz(min_pitch)))
    window = max(2 * max_lag, int(0.05 * sample_rate))
    start = min(int(start_seconds * sample_rate), max(0, note.size - window - max_lag - 1))
    frame = note[start:start + window + max_lag + 1]
    if frame.size < window + max_lag + 1 or not np.any(frame):
        return float("nan")
    n_fft = 1 << int(math.ceil(math.log2(frame.size + window)))
    correlation = np.fft.irfft(np.fft.rfft(frame, n_fft) * np.conj(np.fft.rfft(frame[:window], n_fft)), n_fft)
    energy = np.concatenate([[0.0], np.cumsum(frame ** 2)])
    lags = np.arange(max_lag + 1)
    difference = energy[window] + (energy[lags + window] - energy[lags]) - 2.0 * correlation[:max_lag + 1]
    difference[0] = 0.0
    cumulative = np.cumsum(difference[1:])
    normalised = np.ones(max_lag + 1)
    normalised[1:] = difference[1:] * lags[1:] / np.maximum(cumulative, 1e-12)
    candidates = np.flatnonzero(normalised[min_lag:max_lag] < YIN_THRESHOLD)
    if candidates.size:
        lag = min_lag + int(candidates[0])
        while lag + 1 < max_lag and normalised[lag + 1] < normalised[lag]:
            lag += 1
    else:
        lag = min_lag + int(np.argmin(normalised[min_lag:max_lag]))
    if normalised[lag] > YIN_UNPITCHED:
        return float("nan")
    left, centre, right = normalised[lag - 1], normalised[lag], normalised[lag + 1]
    curvature = left - 2.0 * centre + right
    offset = 0.5 * (left - right) / curvature if curvature > 0 else 0.0
    return float(hz_to_midi(sample_rate / (lag + float(np.clip(offset, -1.0, 1.0)))))


def blend_rows(generated: np.ndarray, own: np.ndarray, weights) -> np.ndarray:
    """Per-row crossfade `weights * own + (1 - weights) * generated` of two `[n, n_samples]` sets
    of notes (weights [n] in [0, 1]); mixed rows are peak-normalised to 1.0, rows of weight 0 or 1
    are the generated or own row exactly. Returns float32 [n, n_samples]."""
    weights = np.asarray(weights, dtype=np.float32)[:, None]
    mixed = weights * np.asarray(own, dtype=np.float32) + (1.0 - weights) * np.asarray(generated, dtype=np.float32)
    partial = ((weights > 0.0) & (weights < 1.0))[:, 0]
    peaks = np.abs(mixed[partial]).max(axis=1, keepdims=True)
    mixed[partial] /= np.maximum(peaks, 1e-9)
    return mixed.astype(np.float32)


def blend_own_sample(generated: np.ndarray, pitches, note: np.ndarray, source_pitch: float, sample_rate: int,
                     blend: OwnSampleBlend) -> np.ndarray:
    """A one-shot bank chunk with the own-sample blend: `generated` notes `[n, n_samples]` at MIDI
    `pitches` [n], the input `note` [n_samples] whose pitch is `source_pitch` (MIDI; nan: no
    blend). Only rows within reach of the input are resampled. Returns float32 [n, n_samples]."""
    generated = np.asarray(generated, dtype=np.float32)
    if not np.isfinite(source_pitch):
        return generated
    weights = own_sample_weights(pitches, source_pitch, blend)
    own = np.zeros_like(generated)
    for row in np.flatnonzero(weights > 0.0):
        own[row] = resample_to_pitch(note, float(pitches[row]) - source_pitch, sample_rate)
    return blend_rows(generated, own, weights)

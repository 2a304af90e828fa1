"""Agreement of the sample-level GRU with the GAN it was trained on (Sound Model Factory, sec. 5).

For every grid point (x, y) and MIDI pitch the GAN renders its note (`GanBankSource`, the teacher)
and the GRU generates its own from the same (x, y, pitch) conditioning (`stream_generate`); a GAN at
another rate than the GRU's is resampled to the GRU's, where both are compared. Measured:
- pitch accuracy of both (pyin voiced-median f0 within +-50 cents of the nominal pitch,
  `training.evaluation.pitch_accuracy`), side by side at the same points;
- the log-mel distance (dB) between each GRU note and its GAN note, and as a reference scale the
  distance between GAN notes at the same pitch from different grid points;
- nearest-of-N identification ("classified alike"): the share of GRU notes nearer (log-mel) to their
  own GAN note than to the GAN note of every other grid point at that pitch;
- the paper's agreement: a classifier of grid points trained on the GAN's notes alone (several noise
  seeds, the pitches a semitone and two around each evaluated pitch, never the evaluated pitch
  itself) labels each GRU note; the share labelled with its own point, and the share of (GRU, GAN)
  note pairs at the same point and pitch given the same label (the paper's measure: 88.8 %). The
  classifier is multinomial logistic regression on each note's harmonic levels (relative to its
  nominal f0, so they compare across pitches) and their spread over time, standardised; its accuracy on GAN notes at the evaluated pitches is reported
  beside it, as the ceiling.

Public API:
    log_mel_db(audio [n, n_samples], sample_rate) -> float64 [n, n_mels, n_frames] (dB re each note's peak)
    log_mel_distance_db(a [n, n_samples], b [m, n_samples], sample_rate) -> float64 [n, m] (dB)
    classified_alike_rate(distances [n_pitches, n_points, n_points]) -> float in [0, 1]
    timbre_features(audio [n, n_samples], pitches [n], sample_rate) -> float64 [n, 2 * N_HARMONICS + 1]
    PointClassifier.fit(features, labels).predict(features) -> int [n]
    default_grid_points(n_points, seed) -> float64 [n_points, 2]
    template_only(gru): ablate a residual voice to its template (in place)
    evaluate_gru_agreement(model_dir, grid_points, pitches, ...) -> dict
    main(): python3 -m training.gru_evaluation --model DIR --out DIR [--points 5] [--pitches 48,60,72]
            [--between-nodes] [--template-only] [--template-from-bank]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from training.evaluation import pitch_accuracy

DYNAMIC_RANGE_DB = 80.0
"""Log-mel values are floored this far below each note's peak (dB)."""
N_MELS = 128
N_HARMONICS = 16
"""Harmonics of the nominal f0 in `timbre_features`."""
TOLERANCE_CENTS = 50.0


def log_mel_db(audio: np.ndarray, sample_rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel magnitude of notes `[n, n_samples]` (n_fft 1024, hop 256 samples), in dB relative to
    each note's own peak bin and floored at -DYNAMIC_RANGE_DB, so notes of different level compare by
    spectral shape and envelope. Returns float64 [n, n_mels, n_frames]."""
    from models.spectral import mel_filterbank, stft

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise ValueError(f"audio must be [n_notes, n_samples] with n_samples > 0, got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio holds NaN or infinite values")
    mel = np.einsum("mk,nkt->nmt", mel_filterbank(sample_rate, n_mels=n_mels).astype(np.float64),
                    np.abs(stft(audio)).astype(np.float64))
    decibels = 20.0 * np.log10(np.maximum(mel, 1e-10))
    decibels -= decibels.max(axis=(1, 2), keepdims=True)
    return np.maximum(decibels, -DYNAMIC_RANGE_DB)


def log_mel_distance_db(a: np.ndarray, b: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS difference (dB) between the log-mel spectrograms (`log_mel_db`) of every note of a
    `[n, n_samples]` and every note of b `[m, n_samples]` (cut to the shorter length).
    Returns float64 [n, m]."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"a and b must be [n_notes, n_samples], got shapes {a.shape} and {b.shape}")
    n_samples = min(a.shape[1], b.shape[1])
    mel_a, mel_b = log_mel_db(a[:, :n_samples], sample_rate), log_mel_db(b[:, :n_samples], sample_rate)
    return np.sqrt(((mel_a[:, None] - mel_b[None, :]) ** 2).mean(axis=(2, 3)))


def classified_alike_rate(distances: np.ndarray) -> float:
    """Share of GRU notes nearer to their own GAN note than to any other grid point's GAN note.

    distances: float [n_pitches, n_points, n_points], [k, i, j] = distance (dB) from the GRU note of
    point i to the GAN note of point j at pitch k; needs n_points >= 2. Ties count as misses."""
    distances = np.asarray(distances, dtype=np.float64)
    if distances.ndim != 3 or distances.shape[1] != distances.shape[2] or distances.shape[1] < 2:
        raise ValueError(f"distances must be [n_pitches, n_points, n_points] with n_points >= 2, "
                         f"got shape {distances.shape}")
    own = np.diagonal(distances, axis1=1, axis2=2)
    others = np.where(np.eye(distances.shape[1], dtype=bool), np.inf, distances).min(axis=2)
    return float((own < others).mean())


def timbre_features(audio: np.ndarray, pitches, sample_rate: int) -> np.ndarray:
    """Pitch-invariant timbre of notes `[n, n_samples]` at MIDI `pitches` [n]: the level of each of
    the first `N_HARMONICS` harmonics of the nominal f0 (dB re the note's strongest harmonic, floored
    at -DYNAMIC_RANGE_DB; harmonics above Nyquist sit at the floor), averaged over time and its
    spread over time, plus the level between the harmonics. Returns float64 [n, 2 * N_HARMONICS + 1]."""
    from models.pitch import midi_to_hz
    from models.spectral import stft

    audio = np.asarray(audio, dtype=np.float32)
    n_fft = 2048
    magnitude = np.abs(stft(audio, n_fft=n_fft, hop_length=512)).astype(np.float64)  # [n, bins, frames]
    bin_hz = sample_rate / n_fft
    features = np.full((len(audio), 2 * N_HARMONICS + 1), -DYNAMIC_RANGE_DB)
    for i, f0_hz in enumerate(np.atleast_1d(midi_to_hz(np.asarray(pitches, dtype=np.float64)))):
        levels = np.full((N_HARMONICS, magnitude.shape[2]), 1e-10)
        harmonic_bins = np.zeros(magnitude.shape[1], dtype=bool)
        for k in range(1, N_HARMONICS + 1):
            low, high = k * f0_hz * 2 ** (-0.5 / 12), k * f0_hz * 2 ** (0.5 / 12)
            if high >= sample_rate / 2:
                break
            bins = slice(int(low / bin_hz), max(int(low / bin_hz) + 1, int(np.ceil(high / bin_hz)) + 1))
            levels[k - 1] = magnitude[i, bins].max(axis=0)
            harmonic_bins[bins] = True
        decibels = 20 * np.log10(levels)
        peak = decibels.max()
        decibels = np.maximum(decibels - peak, -DYNAMIC_RANGE_DB)
        between = 20 * np.log10(magnitude[i, ~harmonic_bins].mean() + 1e-10) - peak
        features[i] = np.concatenate([decibels.mean(axis=1), decibels.std(axis=1),
                                      [max(between, -DYNAMIC_RANGE_DB)]])
    return features


class PointClassifier:
    """Multinomial logistic regression (L2-regularised, full-batch gradient descent) on
    standardised features: which grid point a note was rendered at."""

    def __init__(self, l2: float = 1e-2, steps: int = 500, learning_rate: float = 0.5):
        self.l2, self.steps, self.learning_rate = l2, steps, learning_rate

    def fit(self, features: np.ndarray, labels: np.ndarray) -> "PointClassifier":
        """features float [n, d]; labels int [n] in 0..n_classes-1."""
        features, labels = np.asarray(features, np.float64), np.asarray(labels, np.int64)
        self.mean, self.scale = features.mean(axis=0), features.std(axis=0) + 1e-6
        x = (features - self.mean) / self.scale
        n_classes = int(labels.max()) + 1
        target = np.eye(n_classes)[labels]
        self.weights, self.bias = np.zeros((x.shape[1], n_classes)), np.zeros(n_classes)
        for _ in range(self.steps):
            error = self._probabilities(x) - target                      # [n, n_classes]
            self.weights -= self.learning_rate * (x.T @ error / len(x) + self.l2 * self.weights)
            self.bias -= self.learning_rate * error.mean(axis=0)
        return self

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = x @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Labels int [n] of features float [n, d]."""
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        return np.argmax(x @ self.weights + self.bias, axis=1)


CLASSIFIER_PITCH_OFFSETS = (-2, -1, 1, 2)
"""Semitones from each evaluated pitch at which the classifier's GAN training notes are rendered."""
CLASSIFIER_SEEDS = (0, 1, 2)
"""G's noise seeds of the classifier's training notes."""


def default_grid_points(n_points: int, seed: int = 0, random_only: bool = False) -> np.ndarray:
    """Grid points (x, y) in [0, 1]^2: the four corners and the centre first, then uniform random
    points from `seed`; `random_only` skips the corners and centre (grid nodes the GRU trained on),
    so every point lies between the nodes. Returns float64 [n_points, 2]."""
    if n_points < 2:
        raise ValueError(f"need at least 2 grid points to compare them, got {n_points}")
    fixed = np.zeros((0, 2)) if random_only else np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]])
    extra = np.random.default_rng(seed).uniform(0.0, 1.0, size=(max(0, n_points - len(fixed)), 2))
    return np.concatenate([fixed, extra])[:n_points]


def _check_inputs(grid_points, pitches, seconds: float, temperature: float) -> tuple[np.ndarray, list[int]]:
    points = np.asarray(grid_points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 2:
        raise ValueError(f"grid_points must be [n_points >= 2, 2] (x, y), got shape {points.shape}")
    if not np.all(np.isfinite(points)) or np.any((points < 0) | (points > 1)):
        raise ValueError(f"grid_points must lie in [0, 1]^2, got {points.tolist()}")
    pitch_list = [int(p) for p in pitches]
    if not pitch_list or any(p != q for p, q in zip(pitch_list, pitches)):
        raise ValueError(f"pitches must be a non-empty list of integer MIDI numbers, got {list(pitches)}")
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    return points, pitch_list


def _summary(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    return {"mean": float(finite.mean()) if finite.size else None,
            "median": float(np.median(finite)) if finite.size else None}


def template_only(gru) -> None:
    """Ablate a residual voice (`template_residual`) to its timbre template: the output layer always
    picks the zero residual, so the voice plays the template's harmonics alone. In place."""
    import torch

    from models.mu_law import mu_law_zero

    if not gru.config.template_residual:
        raise ValueError("--template-only needs a residual voice (template_residual); this one has none")
    with torch.no_grad():
        gru.output.weight.zero_()
        gru.output.bias.fill_(-20.0)
        gru.output.bias[mu_law_zero(gru.config.n_classes)] = 20.0


def evaluate_gru_agreement(model_dir, grid_points, pitches, seconds: float = 1.0, temperature: float = 1.0,
                           seed: int = 0, out_dir=None, progress: bool = True, gru_dir=None,
                           only_template: bool = False, template_from_bank: bool = False) -> dict:
    """Compare the GRU (`gru_dir`, default `model_dir/gru`) with the GAN (`model_dir/gan`...) at every
    grid point x pitch.

    grid_points: [n_points, 2] (x, y) in [0, 1]; pitches: MIDI numbers; seconds: GRU note length (s),
    compared with the GAN note over the shorter of the two; temperature: GRU sampling temperature;
    seed: GRU sampling seed (per note: seed + note index). With `out_dir` the report is also written
    to `out_dir/gru_eval.json`. Returns the report dict (distances in dB, accuracies in [0, 1],
    cents errors per [pitch][point], null where unvoiced). `only_template`: score a residual voice's
    template alone (`template_only`). `template_from_bank`: the voice reads a template measured from
    the point's own GAN bank notes at the evaluated pitches (`models.gru_template.point_table`)
    instead of its node table."""
    import torch
    from tqdm import tqdm

    from models.bank_source import TimbreRequest
    from models.gan_bank import GanBankSource
    from models.gru import load_gru
    from models.gru_stream import stream_generate
    from models.gru_template import point_table

    points, pitch_list = _check_inputs(grid_points, pitches, seconds, temperature)
    model_dir = Path(model_dir)
    started = time.perf_counter()
    gan = GanBankSource.from_dir(model_dir)
    gru = load_gru(Path(gru_dir) if gru_dir else model_dir / "gru")
    if only_template:
        template_only(gru)
    if template_from_bank and not gru.config.template_harmonics:
        raise ValueError("--template-from-bank needs a voice with a timbre template (template_harmonics)")
    rate = int(gru.config.sample_rate)  # both voices are compared at the GRU's rate
    divisor = math.gcd(rate, int(gan.sample_rate))
    n_gan_samples = gan.n_samples * rate // int(gan.sample_rate)
    n_points, n_pitches = len(points), len(pitch_list)
    n_gru_samples = int(round(seconds * rate))
    gan_notes = np.zeros((n_pitches, n_points, n_gan_samples), np.float32)
    gru_notes = np.zeros((n_pitches, n_points, n_gru_samples), np.float32)
    with torch.no_grad(), tqdm(total=n_points * (n_pitches + 1), desc="GRU vs GAN notes",
                               disable=not progress) as bar:
        for j, (x, y) in enumerate(points):
            bank = gan.render_bank(TimbreRequest(kind="xy", x=float(x), y=float(y)), pitch_list)
            if rate != gan.sample_rate:
                bank = resample_poly(bank, rate // divisor, int(gan.sample_rate) // divisor, axis=1)
            gan_notes[:, j] = bank[:, :n_gan_samples]
            template = None
            if template_from_bank:
                template = (point_table(bank, pitch_list, rate, gru.config.template_harmonics,
                                        gru.config.template_frame_s), pitch_list)
            bar.update()
            for k, pitch in enumerate(pitch_list):
                conditioning = np.tile(np.array([x, y, pitch], np.float32), (n_gru_samples, 1))
                gru_notes[k, j] = stream_generate(gru, conditioning, temperature, seed=seed + k * n_points + j,
                                                  template=template)
                bar.update()

        train_pitches = sorted({p + d for p in pitch_list for d in CLASSIFIER_PITCH_OFFSETS} - set(pitch_list))
        train_features, train_labels = [], []
        for j, (x, y) in enumerate(points):
            h = gan.conditioning_for(TimbreRequest(kind="xy", x=float(x), y=float(y)))
            for render_seed in CLASSIFIER_SEEDS:
                notes = gan.render_conditioning(np.repeat(h[None], len(train_pitches), 0), train_pitches,
                                                seed=render_seed)
                if rate != gan.sample_rate:
                    notes = resample_poly(notes, rate // divisor, int(gan.sample_rate) // divisor, axis=1)
                train_features.append(timbre_features(notes[:, :n_gru_samples], train_pitches, rate))
                train_labels += [j] * len(train_pitches)
    classifier = PointClassifier().fit(np.concatenate(train_features), np.array(train_labels))
    point_labels = np.tile(np.arange(n_points), n_pitches)
    n_compared = min(n_gan_samples, n_gru_samples)
    flat_pitches = np.repeat(pitch_list, n_points)
    gru_labels = classifier.predict(timbre_features(gru_notes.reshape(-1, n_gru_samples)[:, :n_compared],
                                                    flat_pitches, rate))
    gan_labels = classifier.predict(timbre_features(gan_notes.reshape(-1, n_gan_samples)[:, :n_compared],
                                                    flat_pitches, rate))
    gan_accuracy, gan_cents = pitch_accuracy(gan_notes.reshape(-1, n_gan_samples), flat_pitches,
                                             rate, TOLERANCE_CENTS)
    gru_accuracy, gru_cents = pitch_accuracy(gru_notes.reshape(-1, n_gru_samples), flat_pitches,
                                             rate, TOLERANCE_CENTS)
    # [k, i, j]: GRU note of point i vs GAN note of point j; GAN vs GAN for the reference scale
    gru_to_gan = np.stack([log_mel_distance_db(gru_notes[k], gan_notes[k], rate) for k in range(n_pitches)])
    gan_to_gan = np.stack([log_mel_distance_db(gan_notes[k], gan_notes[k], rate) for k in range(n_pitches)])
    upper = np.triu(np.ones((n_points, n_points), dtype=bool), k=1)
    own = np.diagonal(gru_to_gan, axis1=1, axis2=2)

    def per_note(cents: np.ndarray) -> list:
        return [[None if not np.isfinite(c) else round(float(c), 1) for c in row] for row in cents.reshape(n_pitches, n_points)]

    report = {
        "model_dir": str(model_dir),
        "grid_points": points.tolist(),
        "pitches": pitch_list,
        "seconds": seconds,
        "compared_at_hz": rate,
        "temperature": temperature,
        "template_only": only_template,
        "template_from_bank": template_from_bank,
        "seed": seed,
        "tolerance_cents": TOLERANCE_CENTS,
        "pitch_accuracy": {"gru": gru_accuracy, "gan": gan_accuracy},
        "cents_error": {"gru": per_note(gru_cents), "gan": per_note(gan_cents)},
        "gru_to_own_gan_db": {**_summary(own.ravel()), "per_note": np.round(own, 2).tolist()},
        "gan_between_points_db": _summary(gan_to_gan[:, upper].ravel()),
        "gru_to_other_gan_db": _summary(gru_to_gan[:, ~np.eye(n_points, dtype=bool)].ravel()),
        "classified_alike": classified_alike_rate(gru_to_gan),
        "chance_classified_alike": 1.0 / n_points,
        "classifier_agreement": float((gru_labels == point_labels).mean()),
        "classifier_accuracy_on_gan": float((gan_labels == point_labels).mean()),
        "classifier_pair_agreement": float((gru_labels == gan_labels).mean()),
        "classifier_trained_on": {"pitches": train_pitches, "seeds": list(CLASSIFIER_SEEDS)},
        "gru_rms": np.round(np.sqrt((gru_notes.astype(np.float64) ** 2).mean(axis=2)), 4).tolist(),
        "seconds_taken": round(time.perf_counter() - started, 1),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gru_eval.json").write_text(json.dumps(report, indent=2))
    return report


def _parse_pitches(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--pitches must be comma-separated MIDI numbers, got {text!r}") from error


def main(argv=None) -> int:
    """Command line: evaluate and write `OUT/gru_eval.json`; prints the headline numbers as JSON."""
    parser = argparse.ArgumentParser(prog="python3 -m training.gru_evaluation", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder holding gan/, features/, presets.json, gru/")
    parser.add_argument("--out", required=True, help="output folder for gru_eval.json")
    parser.add_argument("--gru", default=None, help="GRU checkpoint folder to evaluate (default: MODEL/gru)")
    parser.add_argument("--points", type=int, default=5, help="grid points: corners, centre, then random (default 5)")
    parser.add_argument("--pitches", type=_parse_pitches, default=[48, 60, 72], help="MIDI pitches (default 48,60,72)")
    parser.add_argument("--seconds", type=float, default=1.0, help="GRU note length (s)")
    parser.add_argument("--temperature", type=float, default=1.0, help="GRU sampling temperature")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--between-nodes", action="store_true",
                        help="random points only (held out: none is a grid node the GRU trained on)")
    parser.add_argument("--template-only", action="store_true",
                        help="a residual voice's timbre template alone: its GRU always picks the zero residual")
    parser.add_argument("--template-from-bank", action="store_true",
                        help="the voice's template measured from each point's own GAN bank notes, not its node table")
    args = parser.parse_args(argv)
    points = default_grid_points(args.points, args.seed, random_only=args.between_nodes)
    try:
        report = evaluate_gru_agreement(args.model, points, args.pitches, args.seconds, args.temperature,
                                        args.seed, out_dir=args.out, gru_dir=args.gru,
                                        only_template=args.template_only,
                                        template_from_bank=args.template_from_bank)
    except ValueError as error:  # a bad voice or option, named (CheckpointError is one)
        parser.error(str(error))
    headline = {key: report[key] for key in ("pitch_accuracy", "classified_alike", "chance_classified_alike",
                                             "classifier_agreement", "classifier_accuracy_on_gan", "classifier_pair_agreement",
                                             "gan_between_points_db", "gru_to_other_gan_db", "seconds_taken")}
    headline["gru_to_own_gan_db"] = {key: report["gru_to_own_gan_db"][key] for key in ("mean", "median")}
    print(json.dumps(headline, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

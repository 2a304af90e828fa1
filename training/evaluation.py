"""Evaluation metrics of a GAN model folder: pitch accuracy (pyin; with the renderer's harmonic-prior
mel inversion, and without it for comparison), one-shot reconstruction of
held-out timbres against the nearest training preset, interpolation pitch accuracy, and the 88-key
spectrogram sheet (GANStrument Fig. 3). Two figures of how real the generated timbres are: their
spread (how distinct the held-out timbres' notes are from each other, generated vs real) and their
temporal detail (frame-to-frame change; a regression-blurred note has less than the real one).

Public API:
    estimate_f0_hz(audio, sample_rate, expected_hz) -> float (Hz; nan when unvoiced)
    pitch_accuracy(audio [n, n_samples], pitches [n], sample_rate, tolerance_cents=50) -> (accuracy, cents [n])
    log_mel_distance_db(a, b, config) -> float64 [n] (dB)      RMS log-mel difference per note
    timbre_spread_db(notes_by_timbre, config) -> float (dB)    mean distance between timbres, same pitch
    temporal_detail_db(audio, config) -> float64 [n] (dB)      mean frame-to-frame log-mel change
    band_level_db(audio, sample_rate, low_hz, high_hz) -> float64 [n] (dB)  band energy / note energy
    high_band_agreement(generated, real, sample_rate) -> dict    8-15 kHz level, generated vs real
    evaluate_model(model_dir, data_dir, out_dir, ...) -> dict   writes eval.json and PNGs
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from models.pitch import midi_to_hz

EVAL_PITCHES = tuple(range(28, 97))
"""MIDI 28-96: the range the pitch-accuracy target is defined over."""
HIGH_BAND_HZ = (8_000.0, 15_000.0)
"""The band a 16 kHz model cannot fill: its level is compared between generated and real notes (Hz)."""
HIGH_BAND_TOLERANCE_DB = 6.0
"""A generated note's high-band level counts as matching the real note's within this (dB)."""
BAND_LEVEL_FLOOR_DB = -120.0
"""Band levels are floored here (dB): an empty band (above a model's Nyquist) reads as -120 dB."""


def estimate_f0_hz(audio: np.ndarray, sample_rate: int, expected_hz: float) -> float:
    """Median pyin f0 (Hz) over the voiced frames (hop 512) of the first 0.75 s of one note
    `[n_samples]`, searching 1.5 octaves either side of `expected_hz` (within 25 Hz .. Nyquist / 2);
    nan when no frame is voiced. pyin's window lasts about 128 ms when the search reaches below
    60 Hz and 64 ms otherwise, at any rate."""
    import librosa

    fmin = max(25.0, expected_hz / 2 ** 1.5)
    fmax = min(sample_rate / 4.0, expected_hz * 2 ** 1.5)
    rate_scale = 2 ** max(0, round(math.log2(sample_rate / 16_000)))  # the same window in seconds at any rate
    frame_length = (2048 if fmin < 60 else 1024) * rate_scale
    analysed = np.asarray(audio, dtype=np.float64)[: int(0.75 * sample_rate)]  # the held part, not the fade
    f0, voiced, _ = librosa.pyin(analysed, fmin=fmin, fmax=fmax, sr=sample_rate,
                                 frame_length=frame_length, hop_length=512, center=True)
    voiced_f0 = f0[voiced & np.isfinite(f0)]
    return float(np.median(voiced_f0)) if voiced_f0.size else float("nan")


def pitch_accuracy(audio: np.ndarray, pitches, sample_rate: int, tolerance_cents: float = 50.0):
    """Share of notes `[n, n_samples]` whose pyin f0 is within `tolerance_cents` of MIDI `pitches`
    [n]. Returns (accuracy in [0, 1], cents error float64 [n], nan where unvoiced)."""
    cents = np.empty(len(pitches))
    for row, pitch in enumerate(pitches):
        expected_hz = midi_to_hz(pitch)
        f0_hz = estimate_f0_hz(audio[row], sample_rate, expected_hz)
        cents[row] = 1200.0 * np.log2(f0_hz / expected_hz) if np.isfinite(f0_hz) else np.nan
    correct = np.isfinite(cents) & (np.abs(np.nan_to_num(cents, nan=1e9)) <= tolerance_cents)
    return float(correct.mean()) if len(pitches) else float("nan"), cents


def _model_log_mel_db(audio: np.ndarray, config) -> np.ndarray:
    """The model representation's log-mel of notes `[n, n_samples]` in dB, float64
    `[n, n_mels, n_frames]` (un-normalised; silence sits at the log floor). Not
    `gru_evaluation.log_mel_db`, which is the core STFT's, relative to each note's peak."""
    import torch

    from models.features import log_mel
    from models.model_config import denormalise_log_mel

    with torch.no_grad():
        nepers = denormalise_log_mel(log_mel(torch.from_numpy(np.asarray(audio, dtype=np.float32)), config), config)
    return 20.0 / np.log(10.0) * nepers.numpy().astype(np.float64)


def log_mel_distance_db(a: np.ndarray, b: np.ndarray, config) -> np.ndarray:
    """RMS difference (dB) between the log-mel spectrograms of notes a and b, both `[n, n_samples]`
    (magnitudes floored at -80 dB below each note's peak). Returns float64 [n]."""

    def floored(audio):
        decibels = _model_log_mel_db(audio, config)
        return np.maximum(decibels, decibels.max(axis=(1, 2), keepdims=True) - 80.0)

    return np.sqrt(((floored(a) - floored(b)) ** 2).mean(axis=(1, 2)))


def timbre_spread_db(notes_by_timbre: dict, config) -> float:
    """Mean log-mel distance (dB) between the notes of different timbres at the same pitch.
    `notes_by_timbre`: {timbre: {midi_pitch: audio [n_samples]}}; pitches that fewer than two
    timbres have are skipped. nan when no pair exists."""
    timbres = list(notes_by_timbre)
    left, right = [], []
    for a_index, a in enumerate(timbres):
        for b in timbres[a_index + 1:]:
            for pitch in sorted(set(notes_by_timbre[a]) & set(notes_by_timbre[b])):
                left.append(notes_by_timbre[a][pitch])
                right.append(notes_by_timbre[b][pitch])
    if not left:
        return float("nan")
    return float(log_mel_distance_db(np.stack(left), np.stack(right), config).mean())


def temporal_detail_db(audio: np.ndarray, config) -> np.ndarray:
    """Mean absolute frame-to-frame change (dB) of the log-mel of each note `[n, n_samples]`,
    over the bins within 60 dB of the note's peak and the frames whose window lies inside the note
    (the centred STFT's first and last n_fft / (2 hop) frames reach into the padding). Returns float64 [n]."""
    edge = math.ceil(config.n_fft / (2 * config.hop_length))
    decibels = _model_log_mel_db(audio, config)[:, :, edge:-edge]
    audible = decibels > decibels.max(axis=(1, 2), keepdims=True) - 60.0
    change = np.abs(np.diff(decibels, axis=2))
    both = audible[:, :, 1:] & audible[:, :, :-1]
    return (change * both).sum(axis=(1, 2)) / np.maximum(both.sum(axis=(1, 2)), 1)


def band_level_db(audio: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Energy of each note `[n, n_samples]` in the band [low_hz, high_hz) (Hz) relative to the note's
    whole energy (dB, floored at BAND_LEVEL_FLOOR_DB; a band above Nyquist is empty). Peak
    normalisation does not change it. Returns float64 [n]."""
    audio = np.asarray(audio, dtype=np.float64)
    power = np.abs(np.fft.rfft(audio, axis=-1)) ** 2
    freqs_hz = np.fft.rfftfreq(audio.shape[-1], 1.0 / sample_rate)
    in_band = (freqs_hz >= low_hz) & (freqs_hz < high_hz)
    ratio = power[:, in_band].sum(axis=-1) / np.maximum(power.sum(axis=-1), 1e-300)
    return np.maximum(10.0 * np.log10(np.maximum(ratio, 1e-300)), BAND_LEVEL_FLOOR_DB)


def high_band_agreement(generated: np.ndarray, real: np.ndarray, generated_rate: int, real_rate: int) -> dict:
    """8-15 kHz level (`band_level_db`) of generated notes vs the real notes at the same pitch, both
    `[n, n_samples]` (each at its own rate, Hz): mean generated and real level (dB), the mean
    absolute difference (dB) and the share of pairs within HIGH_BAND_TOLERANCE_DB."""
    generated_db = band_level_db(generated, generated_rate, *HIGH_BAND_HZ)
    real_db = band_level_db(real, real_rate, *HIGH_BAND_HZ)
    difference = np.abs(generated_db - real_db)
    return {"generated_db": float(generated_db.mean()), "real_db": float(real_db.mean()),
            "mean_abs_difference_db": float(difference.mean()),
            "within_tolerance": float((difference <= HIGH_BAND_TOLERANCE_DB).mean()),
            "tolerance_db": HIGH_BAND_TOLERANCE_DB, "band_hz": list(HIGH_BAND_HZ), "n_pairs": int(len(difference))}


def _held_out_instruments(store, n_timbres: int) -> list[str]:
    names = sorted({store.instrument[n] for n in store.indices("valid")})
    if not names:
        raise ValueError(f"{store.path}: no held-out ('valid') instruments to evaluate on")
    step = max(1, len(names) // n_timbres)
    return names[::step][:n_timbres]


def _reference_note(store, instrument: str, preferred_pitch: int = 60) -> int:
    rows = [n for n in range(store.n_notes) if store.instrument[n] == instrument]
    return min(rows, key=lambda n: (abs(int(store.pitch[n]) - preferred_pitch), n))


def evaluate_model(model_dir, data_dir, out_dir, pitch_step: int = 4, n_timbres: int = 4,
                   interpolation_alphas=(0.25, 0.5, 0.75), seed: int = 0, progress: bool = True) -> dict:
    """Evaluate the model at `model_dir` on held-out instruments of the note store `data_dir`.
    Pitches: MIDI 28-96 every `pitch_step`. Writes eval.json and keyboard_sheet.png into
    `out_dir`; returns the metrics dict."""
    from tqdm import tqdm

    from models.gan_bank import GanBankSource, interpolate_conditioning, log_mel_to_audio
    from training.note_dataset import NoteStore

    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = GanBankSource.from_dir(model_dir)
    config = source.config
    store = NoteStore(data_dir)
    if store.sample_rate != source.sample_rate or store.n_samples != source.n_samples:
        raise ValueError(f"{data_dir}: notes are {store.n_samples} samples at {store.sample_rate} Hz, the model at "
                         f"{model_dir} makes {source.n_samples} at {source.sample_rate} Hz: evaluate on a store "
                         f"rendered at the model rate (latentsynth dataset render-sf2 --sample-rate "
                         f"{source.sample_rate})")
    pitches = list(EVAL_PITCHES[::max(1, pitch_step)])
    preset_names = source.preset_names()
    preset_h = np.stack([source.presets[name] for name in preset_names])
    lookup = {(store.instrument[n], int(store.pitch[n])): n for n in range(store.n_notes)}
    per_timbre, generated_correct, real_correct, plain_correct = [], [], [], []
    instance_db, preset_db, instance_f, preset_f = [], [], [], []
    generated_by_timbre, real_by_timbre, generated_detail, real_detail = {}, {}, [], []
    high_band_generated, high_band_real = [], []
    for instrument in tqdm(_held_out_instruments(store, n_timbres), desc="eval timbres", disable=not progress):
        reference = _reference_note(store, instrument)
        h = source.features_of_audio(np.asarray(store.audio[reference])[None])[0]
        nearest = int(np.argmin(((preset_h - h) ** 2).sum(1)))
        log_mels = source._generate(np.repeat(h[None], len(pitches), 0), pitches, seed)
        audio = log_mel_to_audio(log_mels, config, pitches=pitches)
        accuracy, cents = pitch_accuracy(audio, pitches, source.sample_rate)
        generated_correct.append(accuracy)
        plain_correct.append(pitch_accuracy(log_mel_to_audio(log_mels, config), pitches, source.sample_rate)[0])
        available = [p for p in pitches if (instrument, p) in lookup]
        real = np.asarray(store.audio[[lookup[(instrument, p)] for p in available]])
        real_accuracy, _ = pitch_accuracy(real, available, source.sample_rate)
        real_correct.append(real_accuracy)
        rows = [pitches.index(p) for p in available]
        generated_by_timbre[instrument] = dict(zip(available, audio[rows]))
        real_by_timbre[instrument] = dict(zip(available, real))
        generated_detail.extend(temporal_detail_db(audio[rows], config))
        high_band_generated.append(audio[rows])
        high_band_real.append(real)
        real_detail.extend(temporal_detail_db(real, config))
        preset_audio = source.render_conditioning(np.repeat(preset_h[nearest][None], len(available), 0), available,
                                                  seed=seed)
        instance_db.append(float(log_mel_distance_db(audio[rows], real, config).mean()))
        preset_db.append(float(log_mel_distance_db(preset_audio, real, config).mean()))
        h_real = source.features_of_audio(real)
        instance_f.append(float(((source.features_of_audio(audio[rows]) - h_real) ** 2).mean()))
        preset_f.append(float(((source.features_of_audio(preset_audio) - h_real) ** 2).mean()))
        per_timbre.append({"instrument": instrument, "reference_pitch": int(store.pitch[reference]),
                           "nearest_preset": preset_names[nearest], "pitch_accuracy": accuracy,
                           "pitch_accuracy_without_harmonic_prior": plain_correct[-1],
                           "real_notes_pitch_accuracy": real_accuracy,
                           "median_abs_cents": float(np.nanmedian(np.abs(cents))) if np.isfinite(cents).any() else None,
                           "cents_by_pitch": {int(p): (round(float(c), 1) if np.isfinite(c) else None)
                                              for p, c in zip(pitches, cents)},
                           "log_mel_db_instance": instance_db[-1], "log_mel_db_nearest_preset": preset_db[-1],
                           "f_mse_instance": instance_f[-1], "f_mse_nearest_preset": preset_f[-1]})
    interpolation = []
    corners = [source.presets[name] for name in source.corners]
    for (a, b) in ((0, 3), (1, 2)):
        for alpha in interpolation_alphas:
            h = interpolate_conditioning(np.stack([corners[a], corners[b]]), [1.0 - alpha, alpha])
            sub = pitches[::2]
            audio = source.render_conditioning(np.repeat(h[None], len(sub), 0), sub, seed=seed)
            interpolation.append({"a": source.corners[a], "b": source.corners[b], "alpha": alpha,
                                  "pitch_accuracy": pitch_accuracy(audio, sub, source.sample_rate)[0]})
    write_keyboard_sheet(source, per_timbre[0]["instrument"], store, out_dir / "keyboard_sheet.png", seed)
    metrics = {
        "model": str(model_dir), "data": str(data_dir), "pitches": pitches, "n_timbres": len(per_timbre),
        "pitch_accuracy": float(np.mean(generated_correct)),
        "pitch_accuracy_without_harmonic_prior": float(np.mean(plain_correct)),
        "real_notes_pitch_accuracy": float(np.mean(real_correct)),
        "interpolation_pitch_accuracy": float(np.mean([r["pitch_accuracy"] for r in interpolation])),
        "reconstruction": {"log_mel_db_instance": float(np.mean(instance_db)),
                           "log_mel_db_nearest_preset": float(np.mean(preset_db)),
                           "f_mse_instance": float(np.mean(instance_f)),
                           "f_mse_nearest_preset": float(np.mean(preset_f))},
        "timbre_spread_db": {"generated": timbre_spread_db(generated_by_timbre, config),
                             "real": timbre_spread_db(real_by_timbre, config)},
        "temporal_detail_db": {"generated": float(np.mean(generated_detail)), "real": float(np.mean(real_detail))},
        "high_band": high_band_agreement(np.concatenate(high_band_generated), np.concatenate(high_band_real),
                                         source.sample_rate, store.sample_rate),
        "per_timbre": per_timbre, "interpolation": interpolation,
        "eval_seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / "eval.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def write_keyboard_sheet(source, instrument: str, store, png_path: Path, seed: int = 0) -> None:
    """G's log-mel spectrograms of all 88 keys for the timbre of `instrument`'s reference note,
    tiled 8 x 11 (GANStrument Fig. 3), into `png_path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.bank_source import KEYBOARD_PITCHES

    h = source.features_of_audio(np.asarray(store.audio[_reference_note(store, instrument)])[None])[0]
    spectrograms = source.render_spectrogram(np.repeat(h[None], len(KEYBOARD_PITCHES), 0), list(KEYBOARD_PITCHES), seed)
    fig, axes = plt.subplots(8, 11, figsize=(16, 10))
    for axis, pitch, spectrogram in zip(axes.flat, KEYBOARD_PITCHES, spectrograms):
        axis.imshow(spectrogram, origin="lower", aspect="auto", vmin=np.log(source.config.log_floor), vmax=3.0)
        axis.set_title(str(pitch), fontsize=7)
        axis.set_xticks([])
        axis.set_yticks([])
    fig.suptitle(f"88 keys from a one-shot of {instrument} (log-mel, G output)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=60)
    plt.close(fig)

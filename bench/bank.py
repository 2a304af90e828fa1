"""Benchmark: how fast the GAN turns a new one-shot sound into playable notes.

Prints JSON: parameter counts; time to the first playable note for a new one-shot timbre, split
into feature extraction (WAV -> h), generator (one pitch) and inversion (the renderer's: harmonic-
prior mel -> linear, PGHI, `models.gan_bank.PHASE_ITERATIONS` FGLA iterations); time for the 88-key
bank (G + inversion); and, as the in-process baseline, the same 88-key bank inverted by pseudo-inverse
+ `librosa.griffinlim` (32 iterations, random phase), with the speed-up ratio.
Targets: first note <= 50 ms, 88-key bank <= 1 s. With --inversion-iterations DATA, the sweep behind
the inversion's iteration counts: real notes of DATA through the model's log-mel and the inversion
at 20 and 30 harmonic-prior updates times 0-16 Fast Griffin-Lim iterations, each with its log-mel
distance to the real note, spectral convergence, pitch accuracy and time.
With --compare-representations DATA, also the measured comparison behind the representation choice:
real notes of the store DATA (MIDI 28-96) through each candidate representation and back (mel 128
and 256 via the core's MelInverter, linear log-magnitude, all with PGHI + 16 FGLA iterations; GANSynth
IF with its exact phase, an upper bound), reporting spectral convergence against the original
|STFT| (dB), pyin pitch accuracy (the original notes' accuracy is the ceiling), values per note
(what G must produce) and inversion time.

    python3 bench/bank.py [--model DIR] [--repeats 5] [--threads N] [--compare-representations data/fluidr3]
                        [--inversion-iterations data/fluidr3_32k --notes 128]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.timbre_sources import DEFAULT_MODEL_DIR  # noqa: E402 (after the checkout joins sys.path)


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(1000.0 * (time.perf_counter() - started))
    return float(np.median(times))


def _one_shot_wav(folder: Path, sample_rate: int) -> Path:
    """A decaying harmonic tone (MIDI 57) as the 'new' one-shot sound."""
    import soundfile

    t = np.arange(sample_rate) / sample_rate
    tone = sum(np.sin(2 * np.pi * 220.0 * k * t) / k for k in range(1, 12)) * np.exp(-3 * t)
    path = folder / "one_shot.wav"
    soundfile.write(path, (0.5 * tone).astype(np.float32), sample_rate)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch and inversion threads (0: their defaults, one per core)")
    parser.add_argument("--compare-representations", metavar="DATA", default=None,
                        help="also compare representations on real notes of this note store")
    parser.add_argument("--notes", type=int, default=24, help="real notes for the representation comparison")
    parser.add_argument("--inversion-iterations", metavar="DATA", default=None,
                        help="also sweep the inversion's iteration counts (harmonic prior, Fast Griffin-Lim) "
                             "on real notes of this note store")
    args = parser.parse_args()

    import librosa
    import numba
    import torch

    from models.bank_source import KEYBOARD_PITCHES
    from models.model_config import denormalise_log_mel
    from models.gan_bank import GanBankSource, load_one_shot, log_mel_to_audio
    from models.harmonic_inversion import mel_inverter

    if args.threads:  # torch's and the inversion's (Numba's parallel kernels reset OpenMP's count to theirs)
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    source = GanBankSource.from_dir(args.model)
    config = source.config
    keys = list(KEYBOARD_PITCHES)
    with tempfile.TemporaryDirectory() as folder:
        wav = _one_shot_wav(Path(folder), config.sample_rate)
        state: dict = {}

        def features():
            audio = load_one_shot(wav, config.sample_rate, config.n_samples)
            state["h"] = source.features_of_audio(audio[None])[0]

        def generate_one():
            state["x1"] = source._generate(state["h"][None], [60], seed=0)

        def invert_one():
            log_mel_to_audio(state["x1"], config, pitches=[60])

        def generate_88():
            state["x88"] = source._generate(np.repeat(state["h"][None], 88, 0), keys, seed=0)

        def invert_88():
            log_mel_to_audio(state["x88"], config, pitches=keys)

        def baseline_invert_88():
            mel = np.exp(denormalise_log_mel(state["x88"], config))
            linear = np.maximum(np.einsum("fm,bmt->bft", mel_inverter(config).inverse, mel), 0.0)
            librosa.griffinlim(linear, n_iter=32, hop_length=config.hop_length, n_fft=config.n_fft,
                               length=config.n_samples, random_state=0)

        for warm_up in (features, generate_one, invert_one, generate_88, invert_88):
            warm_up()  # compile Numba kernels, build the mel inverter, warm torch
        timings = {name: median_ms(function, args.repeats) for name, function in
                   (("features_ms", features), ("generator_one_ms", generate_one), ("inversion_one_ms", invert_one),
                    ("generator_88_ms", generate_88), ("inversion_88_ms", invert_88))}
        baseline_ms = median_ms(baseline_invert_88, max(1, args.repeats // 2))
    first_note_ms = timings["features_ms"] + timings["generator_one_ms"] + timings["inversion_one_ms"]
    bank_ms = timings["generator_88_ms"] + timings["inversion_88_ms"]
    report = {
        "model": args.model, "torch_threads": torch.get_num_threads(), "inversion_threads": numba.get_num_threads(),
        "generator_parameters": sum(p.numel() for p in source.generator.parameters()),
        "feature_extractor_parameters": sum(p.numel() for p in source.extractor.parameters()),
        **{k: round(v, 2) for k, v in timings.items()},
        "first_note_ms": round(first_note_ms, 2), "first_note_target_ms": 50.0,
        "bank_88_ms": round(bank_ms, 2), "bank_88_target_ms": 1000.0,
        "baseline_inversion_88_ms (pinv + librosa.griffinlim 32)": round(baseline_ms, 2),
        "inversion_speedup_vs_baseline": round(baseline_ms / timings["inversion_88_ms"], 2),
        "repeats": args.repeats,
    }
    if args.compare_representations:
        report["representations"] = compare_representations(args.compare_representations, args.notes, config)
    if args.inversion_iterations:
        report["inversion_iterations"] = sweep_inversion_iterations(args.inversion_iterations, args.notes, config)
    print(json.dumps(report, indent=2))
    return 0


def compare_representations(data_dir: str, n_notes: int, config) -> dict:
    """Round trip of `n_notes` real notes (MIDI 28-96, seeded choice) through each representation."""
    from models.mel_inversion import MelInverter
    from models.phase_reconstruction import griffin_lim, spectral_convergence_db
    from models.spectral import audio_to_magnitude_and_if, magnitude_and_if_to_audio, mel_filterbank, stft
    from training.evaluation import pitch_accuracy
    from training.note_dataset import NoteStore

    store = NoteStore(data_dir)
    candidates = np.flatnonzero((store.pitch >= 28) & (store.pitch <= 96))
    chosen = np.sort(np.random.default_rng(0).choice(candidates, min(n_notes, candidates.size), replace=False))
    audio = np.asarray(store.audio[chosen])
    pitches = store.pitch[chosen].tolist()
    magnitude = np.abs(stft(audio, config.n_fft, config.hop_length))
    n_samples = audio.shape[1]

    def phase(linear):
        return griffin_lim(linear, n_samples, n_iter=16, init="pghi", hop_length=config.hop_length)

    def mel_round_trip(n_mels):
        inverter = MelInverter(mel_filterbank(config.sample_rate, config.n_fft, n_mels))
        return phase(inverter.invert(np.einsum("mf,bft->bmt", inverter.filterbank, magnitude), n_iter=16))

    def if_round_trip():
        return magnitude_and_if_to_audio(*audio_to_magnitude_and_if(audio, config.n_fft, config.hop_length),
                                         n_samples, config.hop_length)

    n_frames = magnitude.shape[2]
    results = {"n_notes": len(chosen), "original_pitch_accuracy": pitch_accuracy(audio, pitches, config.sample_rate)[0]}
    for name, values, round_trip in (
        ("log_mel_128 (chosen)", 128 * n_frames, lambda: mel_round_trip(128)),
        ("log_mel_256", 256 * n_frames, lambda: mel_round_trip(256)),
        ("log_magnitude_513", magnitude.shape[1] * n_frames, lambda: phase(magnitude)),
        ("magnitude_and_if_513 (exact phase)", 2 * magnitude.shape[1] * n_frames, if_round_trip),
    ):
        started = time.perf_counter()
        rebuilt = round_trip()
        seconds = time.perf_counter() - started
        results[name] = {
            "values_per_note": int(values),
            "spectral_convergence_db": round(float(np.mean(spectral_convergence_db(magnitude, rebuilt, config.hop_length))), 2),
            "pitch_accuracy": pitch_accuracy(rebuilt, pitches, config.sample_rate)[0],
            "inversion_ms": round(1000 * seconds, 1),
        }
    return results


def sweep_inversion_iterations(data_dir: str, n_notes: int, config) -> dict:
    """The bank renderer's inversion at each pair of harmonic-prior update and Fast Griffin-Lim
    iteration counts, on `n_notes` real notes (MIDI 28-96, seeded choice) taken to the model's
    log-mel: log-mel distance to the real note (dB, mean and its standard error,
    `training.evaluation.log_mel_distance_db`, what the timbre evaluations measure), spectral
    convergence against its |STFT| (dB), pyin pitch accuracy, and the inversion's time."""
    import torch

    from models.gan_bank import log_mel_to_audio
    from models.features import log_mel
    from models.phase_reconstruction import spectral_convergence_db
    from models.spectral import stft
    from training.evaluation import log_mel_distance_db, pitch_accuracy
    from training.note_dataset import NoteStore

    store = NoteStore(data_dir)
    candidates = np.flatnonzero((store.pitch >= 28) & (store.pitch <= 96))
    chosen = np.sort(np.random.default_rng(0).choice(candidates, min(n_notes, candidates.size), replace=False))
    audio = np.asarray(store.audio[chosen], dtype=np.float32)[:, :config.n_samples]
    pitches = store.pitch[chosen].tolist()
    x = log_mel(torch.from_numpy(audio), config).numpy()
    magnitude = np.abs(stft(audio, config.n_fft, config.hop_length))
    results = {"n_notes": len(chosen), "real_pitch_accuracy": pitch_accuracy(audio, pitches, config.sample_rate)[0]}
    for harmonic in (20, 30):
        for phase in (0, 3, 4, 6, 8, 16):
            started = time.perf_counter()
            rebuilt = log_mel_to_audio(x, config, pitches=pitches, phase_iterations=phase, harmonic_iterations=harmonic)
            seconds = time.perf_counter() - started
            distance = log_mel_distance_db(rebuilt, audio, config)
            results[f"harmonic_{harmonic}_fgla_{phase}"] = {
                "log_mel_distance_db": round(float(distance.mean()), 3),
                "log_mel_distance_standard_error_db": round(float(distance.std() / np.sqrt(distance.size)), 3),
                "spectral_convergence_db": round(float(np.mean(spectral_convergence_db(magnitude, rebuilt, config.hop_length))), 2),
                "pitch_accuracy": pitch_accuracy(rebuilt, pitches, config.sample_rate)[0],
                "inversion_ms_per_88": round(1000 * seconds * 88 / len(chosen), 1),
            }
    return results


if __name__ == "__main__":
    sys.exit(main())

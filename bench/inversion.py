"""Inversion benchmark: waveforms from spectrograms for a batch of one-second harmonic notes.

Prints one JSON object: for each method its wall time (min and median over repeats, seconds), CPU
time (all threads; on a shared machine the steadier figure) and
its quality (spectral convergence against the target magnitudes, dB, mean over notes; for mel ->
linear the relative mel residual, dB), beside `librosa.griffinlim` and `scipy.optimize.nnls` run in
the same process, and the speed-up ratios. Kernels are compiled (or loaded from Numba's cache)
before timing. Optionally writes a per-note plot to bench/out/inversion.png.

    python3 bench/inversion.py [--n-notes 88] [--repeats 5] [--n-iter 32] [--nnls-notes 2] [--plot]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import mel_inversion as mi  # noqa: E402
from models import phase_reconstruction as pr  # noqa: E402
from models import spectral as sp  # noqa: E402
from models.pitch import midi_to_hz  # noqa: E402


def harmonic_notes(pitches, n_samples: int, seed: int = 0) -> np.ndarray:
    """Decaying harmonic notes at MIDI `pitches`, random partial amplitudes and phases, 10 ms attack:
    float32 [len(pitches), n_samples] at 16 kHz, peak 0.9."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sp.SAMPLE_RATE
    notes = np.zeros((len(pitches), n_samples))
    for row, pitch in enumerate(pitches):
        f0_hz = float(midi_to_hz(pitch))
        harmonics = np.arange(1, int(sp.SAMPLE_RATE / 2 / f0_hz) + 1)
        amplitudes = rng.uniform(0.3, 1.0, harmonics.size) / harmonics
        phases = rng.uniform(0, 2 * np.pi, harmonics.size)
        for h, amplitude, phase in zip(harmonics, amplitudes, phases):
            notes[row] += amplitude * np.sin(2 * np.pi * h * f0_hz * t + phase) * np.exp(-t * (1.5 + 0.5 * h))
        notes[row] *= np.minimum(t / 0.01, 1.0)
        notes[row] *= 0.9 / np.abs(notes[row]).max()
    return notes.astype(np.float32)


def timed(fn, repeats: int):
    """Run `fn` once to warm up, then `repeats` times. Returns (last result, timing): wall time
    (min and median, seconds) and the process's CPU time (all threads, median, seconds)."""
    result = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return result, {"min_s": round(min(wall), 5), "median_s": round(statistics.median(wall), 5),
                    "cpu_median_s": round(statistics.median(cpu), 5)}


def fft_backends(repeats: int) -> dict:
    """One Griffin-Lim slice's FFTs (4 notes x 63 frames of 2048 samples, float32) on one thread:
    `spectral.rfft_frames`/`irfft_frames` (torch's MKL FFT when torch is installed) against scipy.fft."""
    import scipy.fft

    frames = np.random.default_rng(0).standard_normal((4, 63, 2048)).astype(np.float32)
    spectra = scipy.fft.rfft(frames, axis=-1)
    with scipy.fft.set_workers(1):
        timings = {"backend": "torch" if sp._torch_or_none() is not None else "scipy"}
        for name, fn in (("rfft_frames", lambda: sp.rfft_frames(frames)),
                         ("scipy_rfft", lambda: scipy.fft.rfft(frames, axis=-1)),
                         ("irfft_frames", lambda: sp.irfft_frames(spectra, 2048)),
                         ("scipy_irfft", lambda: scipy.fft.irfft(spectra, n=2048, axis=-1))):
            timings[f"{name}_ms"] = round(1000 * timed(fn, repeats * 20)[1]["median_s"], 3)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-notes", type=int, default=88, help="notes, spread over MIDI 21-108 (default 88)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (default 5)")
    parser.add_argument("--n-iter", type=int, default=32, help="Griffin-Lim and mel-solver iterations")
    parser.add_argument("--nnls-notes", type=int, default=2, help="notes given to scipy NNLS (slow; scaled up)")
    parser.add_argument("--plot", action="store_true", help="write bench/out/inversion.png")
    args = parser.parse_args(argv)
    if not 1 <= args.n_notes <= 88 or args.repeats < 1 or args.n_iter < 1 or args.nnls_notes < 1:
        parser.error("need 1 <= --n-notes <= 88 and positive --repeats, --n-iter, --nnls-notes")
    import librosa
    import numba

    pitches = np.round(np.linspace(21, 108, args.n_notes)).astype(int)
    n_samples = sp.SAMPLE_RATE
    audio = harmonic_notes(pitches, n_samples)
    spectrogram = sp.stft(audio)
    magnitude = np.abs(spectrogram)
    log_mag, inst_freq = sp.magnitude_and_if(spectrogram)
    n_iter = args.n_iter
    report: dict = {
        "setup": {"n_notes": len(pitches), "n_samples": n_samples, "sample_rate": sp.SAMPLE_RATE,
                  "n_fft": sp.N_FFT, "hop_length": sp.HOP_LENGTH, "n_iter": n_iter, "repeats": args.repeats,
                  "cpu_count": os.cpu_count(), "numba_threads": numba.get_num_threads(),
                  "load_average_1min": round(os.getloadavg()[0], 2)},
        "methods": {},
    }
    methods = report["methods"]
    per_note: dict[str, np.ndarray] = {}

    def phase_method(name: str, fn) -> None:
        rebuilt, timing = timed(fn, args.repeats)
        sc_db = pr.spectral_convergence_db(magnitude, rebuilt)
        per_note[name] = sc_db
        methods[name] = {**timing, "spectral_convergence_db": round(float(sc_db.mean()), 2)}

    phase_method("if_inversion", lambda: sp.magnitude_and_if_to_audio(log_mag, inst_freq, n_samples))
    _, methods["pghi_phase_only"] = timed(lambda: pr.pghi_phase(magnitude), args.repeats)
    phase_method("pghi", lambda: pr.pghi(magnitude, n_samples))
    phase_method(f"fgla{n_iter}_random", lambda: pr.griffin_lim(magnitude, n_samples, n_iter, init="random"))
    phase_method(f"fgla{n_iter}_pghi", lambda: pr.griffin_lim(magnitude, n_samples, n_iter, init="pghi"))
    phase_method(f"librosa_griffinlim{n_iter}_random", lambda: librosa.griffinlim(
        magnitude, n_iter=n_iter, hop_length=sp.HOP_LENGTH, n_fft=sp.N_FFT, length=n_samples, momentum=0.99,
        init="random", random_state=0, pad_mode="constant"))

    filterbank = sp.mel_filterbank()
    mel = np.einsum("mk,bkt->bmt", filterbank, magnitude)
    inverter, setup_timing = timed(lambda: mi.MelInverter(filterbank), 1)
    methods["mel_inverter_setup"] = setup_timing

    def mel_method(name: str, fn, n_rows: int) -> None:
        linear, timing = timed(fn, args.repeats if n_rows == len(mel) else 1)
        methods[name] = {**timing, "n_notes": n_rows, "mel_residual_db": round(float(
            mi.mel_residual_db(mel[:n_rows], filterbank, linear).mean()), 2)}

    mel_method(f"mel_pinv_fista{n_iter}", lambda: inverter.invert(mel, n_iter), len(mel))
    mel_method(f"mel_pinv_gradient{n_iter}", lambda: inverter.invert(mel, n_iter, accelerated=False), len(mel))
    mel_method(f"mel_random_gradient{n_iter}", lambda: inverter.invert(mel, n_iter, init="random",
                                                                      accelerated=False), len(mel))
    n_nnls = min(args.nnls_notes, len(mel))
    mel_method("scipy_nnls", lambda: mi.mel_to_linear_nnls(mel[:n_nnls], filterbank), n_nnls)
    nnls_per_note_s = methods["scipy_nnls"]["min_s"] / n_nnls
    methods["scipy_nnls"]["estimated_batch_s"] = round(nnls_per_note_s * len(mel), 3)

    def mel_pipeline():
        return pr.pghi(inverter.invert(mel, n_iter), n_samples)

    phase_method(f"mel_to_audio_pinv_fista{n_iter}_pghi", mel_pipeline)

    fgla_s = methods[f"fgla{n_iter}_random"]["min_s"]
    report["ratios"] = {
        f"librosa_griffinlim{n_iter}_over_fgla{n_iter}_time": round(
            methods[f"librosa_griffinlim{n_iter}_random"]["min_s"] / fgla_s, 2),
        f"librosa_griffinlim{n_iter}_over_fgla{n_iter}_cpu": round(
            methods[f"librosa_griffinlim{n_iter}_random"]["cpu_median_s"]
            / methods[f"fgla{n_iter}_random"]["cpu_median_s"], 2),
        f"fgla{n_iter}_minus_librosa_sc_db": round(methods[f"fgla{n_iter}_random"]["spectral_convergence_db"]
                                                 - methods[f"librosa_griffinlim{n_iter}_random"]
                                                 ["spectral_convergence_db"], 2),
        "pghi_minus_fgla_sc_db": round(methods["pghi"]["spectral_convergence_db"]
                                       - methods[f"fgla{n_iter}_random"]["spectral_convergence_db"], 2),
        f"fgla{n_iter}_over_pghi_time": round(fgla_s / methods["pghi"]["min_s"], 2),
        f"nnls_over_mel_pinv_fista{n_iter}_time": round(
            methods["scipy_nnls"]["estimated_batch_s"] / methods[f"mel_pinv_fista{n_iter}"]["min_s"], 1),
    }
    report["fft_2048"] = fft_backends(args.repeats)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(__file__).resolve().parent / "out"
        out_dir.mkdir(exist_ok=True)
        fig, ax = plt.subplots(figsize=(8, 4))
        for name, sc_db in per_note.items():
            if name != "if_inversion":
                ax.plot(pitches, sc_db, label=name)
        ax.set_xlabel("MIDI pitch")
        ax.set_ylabel("spectral convergence (dB)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "inversion.png", dpi=120)
        report["plot"] = str(out_dir / "inversion.png")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: which model sample rate to ship. Measures, at 16, 32 and 44.1 kHz, what the model's
representation (128-band log-mel, G's 63 frames) and the renderer's inversion keep of real notes, and
what the inversion of a bank costs.

For each rate, held-out programs of a General MIDI font are rendered at that rate (tinysoundfont,
preprocessed like the training data), turned into the model's normalised log-mel and rendered back
by the bank renderer's inversion (`models.gan_bank.log_mel_to_audio`, harmonic prior + PGHI + FGLA):
the ceiling any generator at that rate can reach. Reported per rate:
- pitch accuracy of the rendered-back notes (pyin, +-50 cents, MIDI 28-96);
- the 8-15 kHz level (`training.evaluation.band_level_db`, dB re the note's energy) against the same
  notes rendered at 44.1 kHz, the full-band reference: mean |difference| and the share within 6 dB;
- the inversion's cost for 88 keys (median of --repeats; --threads torch threads). G's cost does not
  depend on the rate (the same 128 x 63 log-mel at every rate): `bench/bank.py` times it on the
  shipped model.

    python3 bench/model_rate.py [--sf2 /usr/share/sounds/sf2/FluidR3_GM.sf2] [--repeats 3] [--threads 1]
                                [--phase-iterations N]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.bank import median_ms  # noqa: E402
from models.bank_source import KEYBOARD_PITCHES  # noqa: E402
from models.features import log_mel  # noqa: E402
from models.model_config import GanConfig  # noqa: E402
from models.gan_bank import PHASE_ITERATIONS, log_mel_to_audio  # noqa: E402
from training.evaluation import HIGH_BAND_HZ, EVAL_PITCHES, band_level_db, high_band_agreement, pitch_accuracy  # noqa: E402
from training.sf2_render import open_soundfont, preprocess_note, render_program_notes  # noqa: E402

RATES = {16_000: (1024, 256), 32_000: (2048, 512), 44_100: (2816, 705)}
"""Model rate (Hz) -> (n_fft, hop_length) samples: every rate keeps G's 63 frames of a 1 s note and 4x overlap."""
REFERENCE_RATE = 44_100
PROGRAMS = (9, 29, 49, 59, 69, 79)
"""Programs held out of the training split (`RenderConfig.validation_programs`)."""


def _render(sf2: str, rate: int, programs, pitches) -> tuple[np.ndarray, list[int]]:
    """Preprocessed 1 s notes [n, rate] of `programs` x `pitches`, silent ones dropped, and their pitches."""
    synth, sfid = open_soundfont(sf2, rate)
    notes, kept = [], []
    for program in programs:
        for pitch, raw in zip(pitches, render_program_notes(synth, sfid, program, pitches, 100, rate)):
            if np.abs(raw).max() >= 1e-4:
                notes.append(preprocess_note(raw, rate, 0.1, 5.0))
                kept.append(int(pitch))
    return np.stack(notes), kept


def _spectral_config(rate: int) -> GanConfig:
    n_fft, hop_length = RATES[rate]
    shipped = json.loads((Path(__file__).resolve().parent.parent / "training" / "configs" / "gan_default.json").read_text())
    sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in shipped["model"].items()}
    sizes.update(sample_rate=rate, n_samples=rate, n_fft=n_fft, hop_length=hop_length)
    return GanConfig(**sizes)


def measure_rate(sf2: str, rate: int, pitches, repeats: int, phase_iterations: int = PHASE_ITERATIONS) -> dict:
    config = _spectral_config(rate)
    real, kept = _render(sf2, rate, PROGRAMS, pitches)
    reference, reference_kept = _render(sf2, REFERENCE_RATE, PROGRAMS, pitches)
    if kept != reference_kept:
        raise RuntimeError(f"renders at {rate} and {REFERENCE_RATE} Hz dropped different notes")
    with torch.no_grad():
        x = log_mel(torch.from_numpy(real), config).numpy()
    rendered = log_mel_to_audio(x, config, pitches=kept, phase_iterations=phase_iterations)
    band = high_band_agreement(rendered, reference, rate, REFERENCE_RATE)
    band["real_at_this_rate_db"] = float(band_level_db(real, rate, *HIGH_BAND_HZ).mean())

    keys = list(KEYBOARD_PITCHES)
    keyboard_real, keyboard_pitches = _render(sf2, rate, (0,), keys)
    with torch.no_grad():
        keyboard_x = log_mel(torch.from_numpy(keyboard_real), config).numpy()

    def invert_88():
        log_mel_to_audio(keyboard_x, config, pitches=keyboard_pitches, phase_iterations=phase_iterations)

    invert_88()  # compile and build the inverter once
    inversion_ms = median_ms(invert_88, repeats)
    return {
        "sample_rate": rate, "n_fft": config.n_fft, "hop_length": config.hop_length, "n_frames": config.n_frames,
        "n_mels": config.n_mels, "mel_top_hz": rate / 2, "n_notes": len(kept),
        "pitch_accuracy_real": pitch_accuracy(real, kept, rate)[0],
        "pitch_accuracy_rendered_back": pitch_accuracy(rendered, kept, rate)[0],
        "high_band_vs_full_band_real": band,
        "inversion_88_ms": round(inversion_ms, 1), "n_keys_timed": len(keyboard_pitches),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sf2", default="/usr/share/sounds/sf2/FluidR3_GM.sf2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--pitch-step", type=int, default=6, help="every Nth pitch of MIDI 28-96")
    parser.add_argument("--phase-iterations", type=int, default=PHASE_ITERATIONS,
                        help=f"Fast Griffin-Lim iterations of the inversion (default: the renderer's, {PHASE_ITERATIONS})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pitches = list(EVAL_PITCHES[::args.pitch_step])
    rows = [measure_rate(args.sf2, rate, pitches, args.repeats, args.phase_iterations) for rate in RATES]
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "torch_threads": args.threads,
                      "phase_iterations": args.phase_iterations,
                      "programs": list(PROGRAMS), "pitches": pitches, "reference_rate": REFERENCE_RATE,
                      "rates": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

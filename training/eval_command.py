"""`latentsynth eval --model DIR --out DIR [--data DIR] [--pitch-step N] [--timbres N]`.

Writes eval.json (pitch accuracy by pyin over MIDI 28-96 on held-out timbres, one-shot
reconstruction vs the nearest training preset, interpolation pitch accuracy) and PNGs
(keyboard_sheet.png: the 88-key spectrogram sheet) into --out, and prints the headline numbers.
"""
from __future__ import annotations

import argparse
import json
import sys

from training.generate_command import DEFAULT_MODEL_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model folder (default: the shipped model)")
    parser.add_argument("--out", required=True, help="folder for eval.json and the PNGs")
    parser.add_argument("--data", default="data/fluidr3", help="note store with held-out ('valid') instruments")
    parser.add_argument("--pitch-step", type=int, default=4, help="evaluate every Nth pitch of MIDI 28-96 (1: all)")
    parser.add_argument("--timbres", type=int, default=4, help="held-out timbres to evaluate")
    parser.add_argument("--seed", type=int, default=0, help="noise seed z")


def main(args: argparse.Namespace) -> int:
    from models.checkpoint import CheckpointError
    from training.evaluation import evaluate_model
    from training.note_dataset import NoteStoreError

    if args.pitch_step < 1 or args.timbres < 1:
        print("latentsynth eval: --pitch-step and --timbres must be >= 1", file=sys.stderr)
        return 2
    try:
        metrics = evaluate_model(args.model, args.data, args.out, pitch_step=args.pitch_step,
                                 n_timbres=args.timbres, seed=args.seed)
    except (FileNotFoundError, ValueError, CheckpointError, NoteStoreError) as error:
        print(f"latentsynth eval: {error}", file=sys.stderr)
        return 1
    headline = {key: metrics[key] for key in ("pitch_accuracy", "pitch_accuracy_without_harmonic_prior",
                                              "real_notes_pitch_accuracy",
                                              "interpolation_pitch_accuracy", "reconstruction", "eval_seconds")}
    print(json.dumps(headline, indent=2))
    return 0

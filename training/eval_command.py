"""`latentsynth eval --model DIR --out DIR [--data DIR] [--pitch-step N] [--timbres N]`.

Writes eval.json (pitch accuracy by pyin over MIDI 28-96 on held-out timbres, one-shot
reconstruction vs the nearest training preset, interpolation pitch accuracy) and PNGs
(keyboard_sheet.png: the 88-key spectrogram sheet) into --out, and prints the headline numbers.
`--one-shot-fidelity [--sf2 FONT] [--own-sample-blend on|off|A[,B]] [--one-shot-refinement on|off|N]`
runs `training.one_shot_fidelity` instead (the settings are those of its ablation's blend and
refinement rows).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rt_engine.subcommands.serve_command import add_one_shot_refinement_argument, add_own_sample_blend_argument
from training.generate_command import DEFAULT_MODEL_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model folder (default: the shipped model)")
    parser.add_argument("--out", required=True, help="folder for eval.json and the PNGs")
    parser.add_argument("--data", default=None,
                        help="note store with held-out ('valid') instruments (default: the store the model's GAN "
                             "was trained on, from gan/metadata.json)")
    parser.add_argument("--pitch-step", type=int, default=4, help="evaluate every Nth pitch of MIDI 28-96 (1: all)")
    parser.add_argument("--timbres", type=int, default=4, help="held-out timbres to evaluate")
    parser.add_argument("--seed", type=int, default=0, help="noise seed z")
    parser.add_argument("--one-shot-fidelity", action="store_true",
                        help="instead: one note at MIDI 60 of each program of --sf2 -> the bank, against the font's "
                             "real notes MIDI 36-84 (training.one_shot_fidelity; one_shot_fidelity.json/.png)")
    parser.add_argument("--sf2", default=None, help="font of the one-shot fidelity evaluation "
                                                     "(default: Debian's TimGM6mb, /usr/share/sounds/sf2)")
    add_own_sample_blend_argument(parser)
    add_one_shot_refinement_argument(parser)


def training_data_of(model_dir) -> str:
    """The note store a model folder's GAN was trained on (`data` in gan/metadata.json)."""
    metadata_path = Path(model_dir) / "gan" / "metadata.json"
    try:
        return str(json.loads(metadata_path.read_text())["data"])
    except (OSError, ValueError, KeyError) as error:
        raise FileNotFoundError(f"{metadata_path}: no training data recorded ({error}); pass --data") from error


def main(args: argparse.Namespace) -> int:
    from models.checkpoint import CheckpointError
    from training.evaluation import evaluate_model
    from training.note_dataset import NoteStoreError

    if args.pitch_step < 1 or args.timbres < 1:
        print("latentsynth eval: --pitch-step and --timbres must be >= 1", file=sys.stderr)
        return 2
    if args.one_shot_fidelity:
        return one_shot_fidelity_main(args)
    try:
        data = args.data or training_data_of(args.model)
        metrics = evaluate_model(args.model, data, args.out, pitch_step=args.pitch_step,
                                 n_timbres=args.timbres, seed=args.seed)
    except (FileNotFoundError, ValueError, CheckpointError, NoteStoreError) as error:
        print(f"latentsynth eval: {error}", file=sys.stderr)
        return 1
    headline = {key: metrics[key] for key in ("pitch_accuracy", "pitch_accuracy_without_harmonic_prior",
                                              "real_notes_pitch_accuracy",
                                              "interpolation_pitch_accuracy", "reconstruction", "high_band",
                                              "timbre_spread_db", "temporal_detail_db", "eval_seconds")}
    print(json.dumps(headline, indent=2))
    return 0


def one_shot_fidelity_main(args: argparse.Namespace) -> int:
    """`eval --one-shot-fidelity`: writes the JSON and PNG, prints both subsets' summaries."""
    from models.checkpoint import CheckpointError
    from models.one_shot_refinement import REFINEMENT_STEPS, parse_refinement
    from models.own_sample_blend import DEFAULT_BLEND, parse_blend
    from training.one_shot_fidelity import DEFAULT_SF2, FidelityConfig, evaluate_one_shot_fidelity

    try:
        blend = DEFAULT_BLEND if args.own_sample_blend is None else parse_blend(args.own_sample_blend)
        steps = REFINEMENT_STEPS if args.one_shot_refinement is None else parse_refinement(args.one_shot_refinement)
        metrics = evaluate_one_shot_fidelity(args.model, args.sf2 or DEFAULT_SF2, args.out,
                                             FidelityConfig(blend=blend, refinement_steps=steps))
    except (FileNotFoundError, ValueError, CheckpointError) as error:
        print(f"latentsynth eval: {error}", file=sys.stderr)
        return 1
    print(json.dumps({key: metrics[key] for key in ("held_out_rule", "chosen_on_development", "development",
                                                    "held_out", "ablation", "eval_seconds")}, indent=2))
    return 0

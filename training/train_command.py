"""`latentsynth train KIND --config FILE [--out DIR] [--resume]`, KIND in features|gan|grid|gru.

Each kind lives in `training.train_<kind>` and exposes `run_from_cli(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

KINDS = ("features", "gan", "grid", "gru")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="what to train")
    parser.add_argument("--config", required=True, help="training config JSON (see training/configs/)")
    parser.add_argument("--out", default=None, help="run folder (default runs/<kind>)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")


def main(args: argparse.Namespace) -> int:
    module_name = f"training.train_{args.kind}"
    if importlib.util.find_spec(module_name) is None:
        print(f"latentsynth train {args.kind}: not built yet in this version.", file=sys.stderr)
        return 2
    module = importlib.import_module(module_name)
    try:
        return int(module.run_from_cli(args) or 0)
    except (FileNotFoundError, ValueError) as error:
        print(f"latentsynth train {args.kind}: {error}", file=sys.stderr)
        return 1

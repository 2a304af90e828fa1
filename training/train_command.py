"""`latentsynth train KIND [--config FILE] [--out DIR] [--resume]`, KIND in features|gan|grid|gru|hyper.

Each kind lives in `training.train_<kind>` and exposes `run_from_cli(args) -> int`; the grid and GRU
modules add their own options (`add_arguments`), which do not overlap. Without `--config`, the
kind's default config in `training/configs/<kind>_default.json` is used.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

KINDS = ("features", "gan", "grid", "gru", "hyper")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="what to train")
    parser.add_argument("--config", default=None,
                        help="training config JSON (default: training/configs/<kind>_default.json)")
    parser.add_argument("--out", default=None,
                        help="features/gan/hyper: run folder (default runs/<kind>); grid/gru: exported model folder")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    from training import train_grid, train_gru  # light modules: torch is imported in run_from_cli

    train_grid.add_arguments(parser)
    train_gru.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    module_name = f"training.train_{args.kind}"
    if importlib.util.find_spec(module_name) is None:
        print(f"latentsynth train {args.kind}: not built yet in this version.", file=sys.stderr)
        return 2
    module = importlib.import_module(module_name)
    if args.config is None:
        default = CONFIG_DIR / f"{args.kind}_default.json"
        if not default.is_file():
            print(f"latentsynth train {args.kind}: no --config and no default {default}", file=sys.stderr)
            return 2
        args.config = str(default)
    try:
        return int(module.run_from_cli(args) or 0)
    except (FileNotFoundError, ValueError) as error:
        print(f"latentsynth train {args.kind}: {error}", file=sys.stderr)
        return 1

"""The `latentsynth` command line: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module, which exposes

    add_arguments(parser: argparse.ArgumentParser) -> None
    main(args: argparse.Namespace) -> int

Subcommand modules must import quickly: heavy imports (torch, numba kernels) go inside `main`.
Only the chosen subcommand's module is imported (`latentsynth render` never loads the training
modules); the others are listed by name and help text. A subcommand whose module is not there yet
says so clearly and exits with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# name -> (module implementing it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("rt_engine.subcommands.serve_command", "play live: open the audio device, listen for OSC and MIDI"),
    "render": ("rt_engine.subcommands.render_command", "render a MIDI file or an OSC score to a WAV, offline"),
    "generate": ("training.generate_command", "render notes of a timbre with the GAN to WAV files"),
    "dataset": ("training.dataset_command", "build training sets (render SoundFonts, index NSynth)"),
    "train": ("training.train_command", "train the feature extractor, GAN, timbre grid or GRU"),
    "eval": ("training.eval_command", "evaluate a model: pitch accuracy, reconstruction, plots"),
    "bench": ("rt_engine.subcommands.bench_command", "run a benchmark from bench/ and print its JSON"),
    "devices": ("rt_engine.subcommands.devices_command", "list audio devices and MIDI ports"),
    "build-caches": ("rt_engine.subcommands.build_caches_command", "compile and cache the kernels, so the first serve starts warm"),
}


def _module_exists(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser; subcommand `selected` gets its module's arguments (None: every subcommand's)."""
    parser = argparse.ArgumentParser(
        prog="latentsynth",
        description="latentsynth: a real-time neural instrument played over OSC and MIDI.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if selected is not None and name != selected:
            subparsers.add_parser(name, help=help_text, add_help=False)
        elif _module_exists(module_name):
            sub = subparsers.add_parser(name, help=help_text, description=help_text)
            importlib.import_module(module_name).add_arguments(sub)
            sub.set_defaults(_module=module_name)
        else:
            sub = subparsers.add_parser(name, help=f"{help_text} (not built yet)", add_help=False)
            sub.set_defaults(_module=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    words = [word for word in argv if not word.startswith("-")]
    parser = build_parser(words[0] if words and words[0] in SUBCOMMANDS else "")
    args, unparsed = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args._module is None:
        print(f"latentsynth {args.command}: not built yet in this version.", file=sys.stderr)
        return 2
    if unparsed:
        parser.error(f"unrecognized arguments for {args.command}: {' '.join(unparsed)}")
    return int(importlib.import_module(args._module).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

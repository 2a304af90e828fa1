"""`latentsynth dataset`: build note stores.

    latentsynth dataset render-sf2 --sf2 PATH [PATH ...] --out DIR [--velocities 100 ...] [--seconds 1.0]
    latentsynth dataset nsynth --root DIR --out DIR [--splits train valid test]
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="dataset_action", metavar="{render-sf2,nsynth}")
    render = actions.add_parser("render-sf2", help="render GM SoundFonts into an NSynth-like note store")
    render.add_argument("--sf2", nargs="+", required=True, help="SoundFont file(s)")
    render.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    render.add_argument("--velocities", nargs="+", type=int, default=[100], help="MIDI velocities (default 100)")
    render.add_argument("--seconds", type=float, default=1.0, help="note length (s), default 1.0")
    render.add_argument("--sample-rate", type=int, default=32_000,
                        help="rate (Hz), default 32000 (the default model's)")
    render.add_argument("--programs", default="0-111", help="GM programs, e.g. 0-111 or 0,24,40 (default 0-111)")
    render.add_argument("--pitches", default="21-108", help="MIDI pitches, e.g. 21-108 (default)")
    nsynth = actions.add_parser("nsynth", help="index real NSynth (examples.json + audio/*.wav) into a note store")
    nsynth.add_argument("--root", required=True, help="folder holding nsynth-train/, nsynth-valid/, nsynth-test/")
    nsynth.add_argument("--out", required=True, help="output folder")
    nsynth.add_argument("--splits", nargs="+", default=["train", "valid", "test"], help="NSynth splits to read")
    nsynth.add_argument("--seconds", type=float, default=1.0, help="keep the first SECONDS of each note")
    nsynth.add_argument("--sample-rate", type=int, default=16_000,
                        help="store rate (Hz), default NSynth's 16000; higher (the default model's 32000) resamples "
                             "up, with a warning: NSynth holds nothing above 8 kHz")


def parse_int_list(text: str, what: str) -> tuple[int, ...]:
    """'21-108' or '0,24,40-47' -> tuple of ints; a bad token is a ValueError naming `what`."""
    values: list[int] = []
    try:
        for token in text.split(","):
            token = token.strip()
            if "-" in token:
                low, high = token.split("-")
                values.extend(range(int(low), int(high) + 1))
            else:
                values.append(int(token))
    except ValueError as error:
        raise ValueError(f"bad {what} list {text!r}: use forms like 21-108 or 0,24,40-47") from error
    if not values:
        raise ValueError(f"empty {what} list {text!r}")
    return tuple(values)


def main(args: argparse.Namespace) -> int:
    try:
        if args.dataset_action == "render-sf2":
            from training.sf2_render import RenderConfig, render_soundfonts

            config = RenderConfig(
                sf2_paths=tuple(args.sf2), sample_rate=args.sample_rate, seconds=args.seconds,
                velocities=tuple(args.velocities), programs=parse_int_list(args.programs, "program"),
                pitches=parse_int_list(args.pitches, "pitch"),
            )
            summary = render_soundfonts(config, args.out)
        elif args.dataset_action == "nsynth":
            from training.nsynth import build_nsynth_store

            summary = build_nsynth_store(args.root, args.out, splits=tuple(args.splits), seconds=args.seconds,
                                         sample_rate=args.sample_rate)
        else:
            print("latentsynth dataset: choose render-sf2 or nsynth", file=sys.stderr)
            return 2
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"latentsynth dataset: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0

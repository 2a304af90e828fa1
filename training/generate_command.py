"""`latentsynth generate`: render notes of a timbre with the GAN to WAV files.

    latentsynth generate --timbre (PRESET | x,y | FILE.wav) --pitch 60 --out note.wav
    latentsynth generate --timbre flute --pitches 21-108 --out DIR/      (one WAV per pitch: DIR/60.wav)
    latentsynth generate --timbre flute --blend trumpet --alpha 0.3 ...  (h = (1 - a) h1 + a h2)
    options: --model DIR (default models/pretrained/default), --seed N,
             --own-sample-blend on|off|A[,B] (a one-shot FILE: the input itself within A semitones),
             --one-shot-refinement on|off|STEPS (a one-shot FILE: its h refined at test time)
A one-shot FILE renders as `/timbre/audio`'s refined bank does: with the model's hypernetwork (hyper/)
when it has one, h refined at the input's pitch, and the own-sample blend on top.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from models.timbre_sources import DEFAULT_MODEL_DIR
from rt_engine.subcommands.serve_command import add_one_shot_refinement_argument, add_own_sample_blend_argument

_XY = re.compile(r"^\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*$")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timbre", required=True,
                        help="preset name, grid point 'x,y' (0..1), or a one-shot sound file")
    pitch = parser.add_mutually_exclusive_group(required=True)
    pitch.add_argument("--pitch", type=int, help="one MIDI pitch; --out is a WAV file")
    pitch.add_argument("--pitches", help="MIDI pitches like 21-108 or 48,60,72; --out is a folder")
    parser.add_argument("--out", required=True, help="output WAV (with --pitch) or folder (with --pitches)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model folder (default: the shipped model)")
    parser.add_argument("--blend", default=None, help="a second timbre to interpolate toward")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of --blend: h = (1-alpha) h1 + alpha h2")
    parser.add_argument("--seed", type=int, default=0, help="noise seed z (default 0)")
    add_own_sample_blend_argument(parser)
    add_one_shot_refinement_argument(parser)


def parse_timbre(text: str):
    """'flute' -> preset, '0.2,0.7' -> grid point, 'a.wav' (or an existing file) -> audio:
    a `TimbreRequest`. Empty text is a ValueError."""
    from models.bank_source import TimbreRequest

    text = text.strip()
    if not text:
        raise ValueError("empty --timbre: give a preset name, x,y or a sound file")
    match = _XY.match(text)
    if match:
        return TimbreRequest("xy", x=float(match.group(1)), y=float(match.group(2)))
    if text.lower().endswith(AUDIO_SUFFIXES) or Path(text).is_file():
        return TimbreRequest("audio", path=text)
    return TimbreRequest("preset", name=text)


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile

    from models.checkpoint import CheckpointError
    from models.gan_bank import GanBankSource, interpolate_conditioning
    from models.one_shot_refinement import parse_refinement
    from models.own_sample_blend import parse_blend
    from training.dataset_command import parse_int_list

    try:
        pitches = [args.pitch] if args.pitch is not None else list(parse_int_list(args.pitches, "pitch"))
        if args.blend is not None and not 0.0 <= args.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
        source = GanBankSource.from_dir(args.model)
        if args.own_sample_blend is not None:
            source.own_sample_blend = parse_blend(args.own_sample_blend)
        if args.one_shot_refinement is not None:
            source.refinement_steps = parse_refinement(args.one_shot_refinement)
        h = source.conditioning_for(parse_timbre(args.timbre))
        if args.blend is not None:
            h2 = source.conditioning_for(parse_timbre(args.blend))
            h = interpolate_conditioning(np.stack([h, h2]), [1.0 - args.alpha, args.alpha])
        audio = source.render_pitches(h, pitches, seed=args.seed)  # a one-shot: refined G, own-sample blend
    except (FileNotFoundError, ValueError, KeyError, CheckpointError) as error:
        print(f"latentsynth generate: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    if args.pitch is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(out, audio[0], source.sample_rate)
        print(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for pitch, note in zip(pitches, audio):
            soundfile.write(out / f"{pitch}.wav", note, source.sample_rate)
        print(f"{len(pitches)} notes in {out}")
    return 0

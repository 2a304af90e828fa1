"""`latentsynth build-caches [--model DIR]`: compile and cache every Numba kernel the instrument
runs, so that the first `serve` on a machine starts warm (`.ci/install` runs it).

Numba compiles a kernel the first time it is called and caches the machine code beside its module
(`__pycache__`, keyed by the source and the CPU); a cold `serve` spends most of its start compiling.
This renders half a second through the engine offline (`rt_engine.subcommands.render_command.render`): the
block kernel, the GRU voice (unmuted) and its resampler in this process, and in the bank worker
the GAN's inversion, retuning and row preparation, for a timbre point no bank cache holds. Importing
the native audio and MIDI callbacks compiles them too, and the native OSC lane's loop is compiled
for its arrays. Prints the seconds it took.
"""
from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from models.timbre_sources import default_model_dir
from rt_engine.io import native_audio, native_midi  # noqa: F401 - importing compiles the C callbacks
from rt_engine.osc.native_osc import NativeOscLane
from rt_engine.subcommands.render_command import render


def build(model_dir: str | None) -> dict:
    """Run every kernel once (see the module docstring); returns the render's summary
    (`render_command.render`) with the seconds taken as "build_s"."""
    started = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        NativeOscLane(udp).compile()
    x, y = np.random.default_rng().uniform(0.05, 0.95, 2)  # a point no bank cache holds: the worker renders
    events = [(0.0, "osc", ("/mix/gru", [1.0])), (0.0, "osc", ("/timbre/xy", [float(x), float(y)])),
              (0.05, "osc", ("/note/on", [60.0, 100.0])), (0.3, "osc", ("/note/off", [60.0]))]
    with tempfile.TemporaryDirectory(prefix="latentsynth-build-caches-") as work:
        summary = render(events, str(Path(work) / "warm.wav"), 48_000, 256, model_dir, 8, 0.2, progress=False)
    return dict(summary, build_s=round(time.perf_counter() - started, 2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")


def main(args: argparse.Namespace) -> int:
    summary = build(args.model or default_model_dir())
    print(f"latentsynth build-caches: kernels compiled and cached in {summary['build_s']:.1f} s")
    return 1 if summary["failures"] else 0

"""Start-up and offline render speed: `serve` launch -> "ready", and `latentsynth render` of a 24 s
four-voice chorale (128 notes), wall clock with start-up included. Prints JSON.

The chorale is written by the bench (32 four-note chords of 0.75 s on one channel, voices moving
by step around C major), so the figure needs no file from outside. Each measurement is repeated
and alternated with the same measurement of `--before DIR` (an older checkout, e.g. a `git
worktree`) when given, so both trees run under the same machine load. Warm caches: the first
launch of each tree (Numba cache, bank cache) is not counted.

Usage: python bench/startup.py [--repeats 3] [--before DIR] [--model DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mido
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHORD_S = 0.75
TARGETS = {"serve_ready_s": 2.0, "render_realtime_factor": 20.0}


def write_chorale(path: Path, n_chords: int = 32) -> float:
    """A four-voice chorale-like MIDI file at `path`; returns its length (s)."""
    rng = np.random.default_rng(66)
    scale = [0, 2, 4, 5, 7, 9, 11]
    voices = np.array([48, 55, 64, 72])  # bass, tenor, alto, soprano
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=750_000, time=0))  # 80 bpm: a chord per beat
    ticks = 480
    for _ in range(n_chords):
        for note in voices:
            track.append(mido.Message("note_on", note=int(note), velocity=80, time=0))
        for k, note in enumerate(voices):
            track.append(mido.Message("note_off", note=int(note), velocity=0, time=ticks if k == 0 else 0))
        step = rng.integers(-1, 2, size=4)
        degrees = [(scale.index(int(n) % 12) if int(n) % 12 in scale else 0) for n in voices]
        voices = np.array([12 * (int(n) // 12) + scale[(d + s) % 7] + 12 * ((d + s) // 7)
                           for n, d, s in zip(voices, degrees, step)])
    midi = mido.MidiFile(ticks_per_beat=ticks)
    midi.tracks.append(track)
    midi.save(path)
    return n_chords * CHORD_S


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(tree: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1")


def serve_ready_s(tree: Path, model: str, settle_s: float = 0.0) -> float:
    """Seconds from launching `serve --audio null` in `tree` to its "ready" line; it then runs
    `settle_s` more (a warm-up run lets the worker compile and cache what it renders ahead)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "rt_engine.cli", "serve", "--audio", "null", "--midi", "none",
                                "--model", model, "--osc-port", str(_free_port())],
                               cwd=tree, env=_env(tree), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seconds = float("nan")
    for line in process.stdout:
        if line.strip() == "ready":
            seconds = time.perf_counter() - started
            break
    time.sleep(settle_s)
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return seconds


def render_s(tree: Path, model: str, midi: Path, out: Path) -> float:
    """Wall seconds of `latentsynth render --midi` in `tree`, start-up included."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rt_engine.cli", "render", "--midi", str(midi), "--out", str(out),
                    "--model", model], cwd=tree, env=_env(tree), check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, default=None, help="an older checkout measured alongside")
    parser.add_argument("--model", default=str(REPO / "models" / "pretrained" / "default"))
    args = parser.parse_args()
    trees = {"this": REPO, **({"before": args.before.resolve()} if args.before else {})}
    work = Path(tempfile.mkdtemp(prefix="latentsynth-startup-"))
    midi = work / "chorale.mid"
    duration_s = write_chorale(midi)
    for tree in trees.values():  # warm the Numba and bank caches
        serve_ready_s(tree, args.model, settle_s=20.0)
        render_s(tree, args.model, midi, work / "warm.wav")
    ready = {name: [] for name in trees}
    render = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            ready[name].append(serve_ready_s(tree, args.model))
            render[name].append(render_s(tree, args.model, midi, work / f"{name}.wav"))
    report = {"cpu": platform.processor() or platform.machine(), "load_average": os.getloadavg()[0],
              "chorale_s": duration_s, "targets": TARGETS}
    for name in trees:
        wall = float(np.median(render[name]))
        report[name] = {"serve_ready_s": round(float(np.median(ready[name])), 2),
                        "serve_ready_all_s": [round(s, 2) for s in ready[name]],
                        "render_wall_s": round(wall, 2), "render_all_s": [round(s, 2) for s in render[name]],
                        "render_realtime_factor": round((duration_s + 2.0) / wall, 1)}  # + render's 2 s tail
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

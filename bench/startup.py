"""Start-up and offline render speed: `serve` launch -> "ready", and `latentsynth render` of a 24 s
four-voice piano chorale (128 notes), wall clock with start-up included, with the bank cache warm and
cold (an empty cache folder). Prints JSON, with the chroma agreement of the render with FluidSynth's
render of the same MIDI file (FluidR3; `chroma_agreement`) and FluidSynth's wall time.

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
import shutil
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
TARGETS = {"serve_ready_s": 2.0, "render_realtime_factor": 20.0, "render_cold_realtime_factor": 8.0,
           "chroma_vs_fluidsynth": 0.95}
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def write_chorale(path: Path, n_chords: int = 32) -> float:
    """A four-voice chorale-like MIDI file at `path`; returns its length (s)."""
    rng = np.random.default_rng(66)
    scale = [0, 2, 4, 5, 7, 9, 11]
    voices = np.array([48, 55, 64, 72])  # bass, tenor, alto, soprano
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=750_000, time=0))  # 80 bpm: a chord per beat
    track.append(mido.Message("program_change", program=0, time=0))  # a piano in both renderers
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


def _env(tree: Path, **extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(tree), PYTHONUNBUFFERED="1", **extra)


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


def render_s(tree: Path, model: str, midi: Path, out: Path, cold: bool = False) -> float:
    """Wall seconds of `latentsynth render --midi` in `tree`, start-up included; `cold`: with an
    empty bank cache."""
    with tempfile.TemporaryDirectory(prefix="latentsynth-cold-cache-") as empty:
        env = _env(tree, **({"LATENTSYNTH_CACHE": empty} if cold else {}))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rt_engine.cli", "render", "--midi", str(midi), "--out", str(out),
                        "--model", model], cwd=tree, env=env, check=True, capture_output=True)
        return time.perf_counter() - started


def fluidsynth_render_s(midi: Path, out: Path) -> float:
    """Wall seconds of FluidSynth rendering `midi` with FluidR3 at 48 kHz (NaN without it)."""
    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
        return float("nan")
    started = time.perf_counter()
    subprocess.run(["fluidsynth", "-ni", "-q", "-r", "48000", "-F", str(out), str(SOUNDFONT), str(midi)],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def chroma_agreement(ours: Path, reference: Path) -> float:
    """Mean cosine similarity of chroma frames (librosa's CENS chroma, robust to timbre and
    loudness, at 22.05 kHz with a 2048-sample hop) over the frames where both renders sound
    (within 30 dB of their peaks). Two soundfonts' renders of one file agree to about 0.98; the
    same file a semitone up, to about 0.35."""
    import librosa
    import soundfile

    def chroma_and_level(path: Path):
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
        mono = librosa.resample(audio.mean(axis=1), orig_sr=rate, target_sr=22_050)
        return (librosa.feature.chroma_cens(y=mono, sr=22_050, hop_length=2048),
                librosa.feature.rms(y=mono, frame_length=4096, hop_length=2048)[0])

    (a, level_a), (b, level_b) = chroma_and_level(ours), chroma_and_level(reference)
    n = min(a.shape[1], b.shape[1])
    a, b, level_a, level_b = a[:, :n], b[:, :n], level_a[:n], level_b[:n]
    sounding = (level_a > level_a.max() * 10 ** (-30 / 20)) & (level_b > level_b.max() * 10 ** (-30 / 20))
    cosine = (a * b).sum(0) / np.maximum(np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0), 1e-12)
    return float(cosine[sounding].mean())


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
    cold = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            ready[name].append(serve_ready_s(tree, args.model))
            render[name].append(render_s(tree, args.model, midi, work / f"{name}.wav"))
            cold[name].append(render_s(tree, args.model, midi, work / f"{name}-cold.wav", cold=True))
    fluidsynth_s = fluidsynth_render_s(midi, work / "fluidsynth.wav")
    report = {"cpu": platform.processor() or platform.machine(), "load_average": os.getloadavg()[0],
              "chorale_s": duration_s, "targets": TARGETS, "fluidsynth_wall_s": round(fluidsynth_s, 2)}
    rendered_s = duration_s + 2.0  # render's default 2 s tail
    for name in trees:
        wall, cold_wall = float(np.median(render[name])), float(np.median(cold[name]))
        report[name] = {"serve_ready_s": round(float(np.median(ready[name])), 2),
                        "serve_ready_all_s": [round(s, 2) for s in ready[name]],
                        "render_wall_s": round(wall, 2), "render_all_s": [round(s, 2) for s in render[name]],
                        "render_realtime_factor": round(rendered_s / wall, 1),
                        "render_cold_wall_s": round(cold_wall, 2),
                        "render_cold_realtime_factor": round(rendered_s / cold_wall, 1)}
        if np.isfinite(fluidsynth_s):
            report[name]["chroma_vs_fluidsynth"] = round(chroma_agreement(work / f"{name}.wav",
                                                                          work / "fluidsynth.wav"), 3)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

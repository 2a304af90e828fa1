"""CPU per voice of the engine's block kernel at 48 kHz in 128-frame blocks, beside FluidSynth
fast-rendering the same held notes (same rate and buffer size, reverb and chorus off), timed in
the same run. Prints JSON; writes bench/out/polyphony.png.

Engine: `Engine.process` over sustained notes (static procedural banks, timbre at rest, so one
bank slot per voice). Load = render time / audio time (1.0 = one core fully busy); cost per voice
= slope of load against the number of voices (least squares). FluidSynth: `fluidsynth -F` on a MIDI file holding the same
N notes on an organ (program 19, sustained), minus a run with no notes (start-up, SoundFont load).
FluidR3's organ may use more than one FluidSynth voice per note: both costs are per *note*.

Usage: python bench/polyphony.py [--seconds 4] [--fluid-seconds 20] [--voices 1 16 64 128] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RATE, BLOCK = 48_000, 128
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"


def engine_seconds(n_voices: int, seconds: float) -> float:
    """Wall time (s) to render `seconds` of audio with `n_voices` held notes."""
    from models.bank_source import TimbreRequest
    from models.procedural_source import ProceduralBankSource
    from tests.support.static_banks import StaticBanks
    from rt_engine.core.engine import Engine

    pitches = list(range(36, 100))
    rows = ProceduralBankSource(16_000).render_bank(TimbreRequest("xy", 0.6, 0.3), pitches)
    engine = Engine(StaticBanks(rows, pitches, 16_000, RATE), RATE, max_block=BLOCK,
                    n_voices=max(n_voices, 1))
    for k in range(n_voices):
        engine.note_on(36 + (k * 7) % 64 + 0.1 * (k % 3), 100)
    for _ in range(20):
        engine.process(BLOCK)
    n_blocks = int(seconds * RATE / BLOCK)
    start = time.perf_counter()
    for _ in range(n_blocks):
        engine.process(BLOCK)
    elapsed = time.perf_counter() - start
    assert engine.status()["voices"] == n_voices, engine.status()
    return elapsed


def fluidsynth_seconds(n_notes: int, seconds: float, folder: Path) -> float:
    """Wall time (s) of `fluidsynth -F` rendering `n_notes` held organ notes for `seconds`."""
    import mido

    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000))
    track.append(mido.Message("program_change", program=19, time=0))
    notes = [36 + (k * 7) % 64 for k in range(n_notes)]
    channels = [k // 64 for k in range(n_notes)]  # distinct (note, channel) pairs, no drums
    for channel in sorted(set(channels)):
        track.append(mido.Message("program_change", channel=channel, program=19, time=0))
    for note, channel in zip(notes, channels):
        track.append(mido.Message("note_on", channel=channel, note=note, velocity=100, time=0))
    ticks = int(seconds / 0.5 * 480)
    track.append(mido.MetaMessage("marker", text="end", time=ticks))
    for note, channel in zip(notes, channels):
        track.append(mido.Message("note_off", channel=channel, note=note, velocity=0, time=0))
    path = folder / f"notes{n_notes}.mid"
    midi.save(path)
    command = ["fluidsynth", "-ni", "-q", "-r", str(RATE), "-z", str(BLOCK), "-o", "synth.cpu-cores=1",
               "-o", "synth.reverb.active=0", "-o", "synth.chorus.active=0",
               "-o", "synth.polyphony=1024", "-F", str(folder / "out.wav"), SOUNDFONT, str(path)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="audio rendered per measurement (s)")
    parser.add_argument("--fluid-seconds", type=float, default=20.0,
                        help="audio FluidSynth renders per measurement (s): longer beats its start-up noise")
    parser.add_argument("--voices", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per point")
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

    voices = np.array(args.voices, dtype=float)
    base = min(engine_seconds(0, args.seconds) for _ in range(args.repeats))
    engine = {n: min(engine_seconds(n, args.seconds) for _ in range(args.repeats)) for n in args.voices}
    engine_load = np.array([engine[n] for n in args.voices]) / args.seconds
    result = {
        "sample_rate": RATE, "block": BLOCK, "audio_seconds": args.seconds,
        "engine_idle_load": base / args.seconds,
        "engine_load": {str(n): float(load) for n, load in zip(args.voices, engine_load)},
        # slope of load against voices: the cost of one more voice
        "engine_load_per_voice": float(np.polyfit(voices, engine_load, 1)[0]),
    }
    if shutil.which("fluidsynth") and Path(SOUNDFONT).is_file():
        with tempfile.TemporaryDirectory() as folder:
            fs_base = min(fluidsynth_seconds(0, args.fluid_seconds, Path(folder)) for _ in range(args.repeats))
            fluid = np.array([min(fluidsynth_seconds(n, args.fluid_seconds, Path(folder))
                                  for _ in range(args.repeats)) for n in args.voices])
        fluid_load = (fluid - fs_base) / args.fluid_seconds
        result["fluidsynth_audio_seconds"] = args.fluid_seconds
        result["fluidsynth_startup_s"] = fs_base
        result["fluidsynth_load"] = {str(n): float(load) for n, load in zip(args.voices, fluid_load)}
        result["fluidsynth_load_per_note"] = float(np.polyfit(voices, fluid_load, 1)[0])
        result["ratio_engine_to_fluidsynth_per_voice"] = (result["engine_load_per_voice"]
                                                          / max(result["fluidsynth_load_per_note"], 1e-12))
    else:
        result["fluidsynth"] = "not installed (apt-get install fluidsynth fluid-soundfont-gm)"
    top = str(max(args.voices))
    result["targets"] = {f"{top}_voices_under_50pct_core": result["engine_load"][top] < 0.5,
                         "per_voice_within_2x_fluidsynth":
                             result.get("ratio_engine_to_fluidsynth_per_voice", float("inf")) <= 2.0}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(__file__).resolve().parent / "out"
        out.mkdir(exist_ok=True)
        plt.figure(figsize=(5, 3.5))
        plt.plot(args.voices, [result["engine_load"][str(n)] * 100 for n in args.voices], "o-", label="latentsynth")
        if "fluidsynth_load" in result:
            plt.plot(args.voices, [result["fluidsynth_load"][str(n)] * 100 for n in args.voices],
                     "s--", label="FluidSynth (minus start-up)")
        plt.xlabel("voices")
        plt.ylabel("% of one core")
        plt.title(f"{RATE} Hz, {BLOCK}-frame blocks")
        plt.legend()
        plt.tight_layout()
        plt.savefig(out / "polyphony.png", dpi=100)
    except ImportError:
        pass
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Per-preset envelopes, measured from the soundfont the presets were trained on.

A bank row is a rendered note held for its whole length: it carries the instrument's own attack
and decay, but not what happens when the key is let go. So each preset's envelope is the engine's
quick declicking attack, no extra decay (sustain 1.0), and the instrument's release measured from
the font: each program is rendered at `PITCHES`, held `HOLD_S`, released, and the release time is
the T60 of the level after the note-off (a straight-line fit of the level in dB against time over
the first `FIT_DB` dB of the fall, extrapolated to 60 dB), median over the pitches, clipped to
[`MIN_RELEASE_S`, `MAX_RELEASE_S`]. The engine's release stage is an exponential to -60 dB in
release seconds, the same quantity.

    python3 -m training.preset_envelopes --model models/pretrained/default
        [--sf2 /usr/share/sounds/sf2/FluidR3_GM.sf2]

writes `"envelopes": {preset: [attack s, decay s, sustain, release s]}` into the model's
presets.json (the other keys are kept).

Public API:
    release_t60_s(audio [n_samples], release_at, sample_rate) -> float (s; inf when it does not fall)
    measure_program_release_s(synth, sfid, program, sample_rate) -> float (s)
    preset_envelopes(sf2_path, programs {name: GM program}) -> {name: [a, d, s, r]}
    main(argv) -> int
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.sf2_render import open_soundfont

TRAINING_SF2 = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
"""The font the shipped presets were trained on (Debian's fluid-soundfont-gm)."""

PITCHES = (48, 60, 72)
HOLD_S = 0.5
AFTER_S = 3.0
FRAME_S = 0.005
FIT_DB = 30.0
"""The release fit covers the fall from the note-off level to this many dB below it."""
MIN_RELEASE_S, MAX_RELEASE_S = 0.02, 4.0
ATTACK_S, DECAY_S, SUSTAIN = 0.003, 0.3, 1.0
"""The envelope's other stages: a declicking attack and no decay (the rows hold the note's own)."""
SAMPLE_RATE = 32_000


def _level_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS level per `FRAME_S` frame (dB re full scale), float64 [n_frames]."""
    frame = max(1, int(round(FRAME_S * sample_rate)))
    n = len(audio) // frame
    power = (np.asarray(audio[:n * frame], dtype=np.float64).reshape(n, frame) ** 2).mean(axis=1)
    return 10.0 * np.log10(power + 1e-20)


def release_t60_s(audio: np.ndarray, release_at: int, sample_rate: int) -> float:
    """T60 (s) of the level after the note-off at sample `release_at` of `audio` [n_samples]: a
    least-squares line through the level (dB) from the note-off until it has fallen `FIT_DB` dB
    (or the audio ends), extrapolated to -60 dB. inf when the level does not fall."""
    level = _level_db(audio, sample_rate)
    start = int(release_at / (FRAME_S * sample_rate))
    if start < 2 or start >= len(level) - 2:
        raise ValueError(f"note-off at sample {release_at} leaves no level before or after it")
    reference = np.median(level[max(0, start - 10):start])
    after = level[start:] - reference
    below = np.flatnonzero(after <= -FIT_DB)
    stop = int(below[0]) + 1 if below.size else len(after)
    if stop < 3:  # it fell FIT_DB within two frames: the fastest release we resolve
        return 2 * FRAME_S * 60.0 / FIT_DB
    times = np.arange(stop) * FRAME_S
    slope = np.polyfit(times, after[:stop], 1)[0]  # dB per second
    return float(-60.0 / slope) if slope < 0 else float("inf")


def measure_program_release_s(synth, sfid: int, program: int, sample_rate: int = SAMPLE_RATE) -> float:
    """Median release T60 (s) of GM `program` (bank 0) over `PITCHES`, clipped to the engine's range."""
    synth.program_select(0, sfid, 0, int(program))
    hold, after = int(HOLD_S * sample_rate), int(AFTER_S * sample_rate)
    releases = []
    for pitch in PITCHES:
        synth.noteon(0, pitch, 100)
        held = np.frombuffer(synth.generate(hold), dtype=np.float32).reshape(-1, 2).mean(axis=1)
        synth.noteoff(0, pitch)
        tail = np.frombuffer(synth.generate(after), dtype=np.float32).reshape(-1, 2).mean(axis=1)
        synth.sounds_off()
        synth.generate(512)
        releases.append(release_t60_s(np.concatenate([held, tail]), hold, sample_rate))
    return float(np.clip(np.median(releases), MIN_RELEASE_S, MAX_RELEASE_S))


def preset_envelopes(sf2_path, programs: dict, progress: bool = True) -> dict:
    """{preset name: [attack s, decay s, sustain, release s]} for presets {name: GM program}."""
    from tqdm import tqdm

    synth, sfid = open_soundfont(sf2_path, SAMPLE_RATE)
    return {name: [ATTACK_S, DECAY_S, SUSTAIN, round(measure_program_release_s(synth, sfid, program), 3)]
            for name, program in tqdm(programs.items(), desc="preset envelopes", disable=not progress)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m training.preset_envelopes", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder whose presets.json gets the envelopes")
    parser.add_argument("--sf2", default=TRAINING_SF2, help="the soundfont the presets come from")
    args = parser.parse_args(argv)
    path = Path(args.model) / "presets.json"
    record = json.loads(path.read_text())
    record["envelopes"] = preset_envelopes(args.sf2, record["programs"])
    path.write_text(json.dumps(record))
    releases = np.array([envelope[3] for envelope in record["envelopes"].values()])
    print(json.dumps({"presets": len(releases), "release_s": {"min": float(releases.min()),
                      "median": float(np.median(releases)), "max": float(releases.max())}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Parameter response of the streaming GRU (the Sound Model Factory's Fig. 3).

Plays a stepped arpeggio (MIDI 64-68-71-76) and then a one-octave glide (64 -> 76) through the
streaming kernel (`models.gru_stream`, int8, control rate 16 samples as in the engine layer), tracks
the output's period cycle by cycle (upward zero crossings of a zero-phase low-passed copy, with
sub-sample interpolation) and compares it with the pitch parameter:
- per step: the response time = start of the first cycle within 50 cents of the new pitch that the
  next 3 cycles confirm, minus the time of the change (target: within 1 ms; one cycle is the
  resolution of this measure, e.g. 3 ms at MIDI 64);
- per step, the edge: the first cycle whose centred 3-cycle median pitch is nearer the new pitch
  than the old one (robust to the sampled output's cycle-to-cycle jitter);
- during the glide: the cents error of every cycle against the parameter at the cycle's centre
  (target: within 10 cents throughout), and of the mean period over 4 consecutive cycles (the wave
  period as the paper reads it off its Fig. 3b, a few ms; cycle-to-cycle jitter is heard as
  roughness, not as pitch);
- the same trackers on the GAN's own steady notes at the same timbre point (`gan_reference`): the
  cycle jitter of the audio the GRU was trained on, the floor the GRU is measured against.
The cents errors from frame-wise YIN (librosa; robust to strong harmonics, 32 ms windows, too
coarse for step timing) are reported beside the zero-crossing ones.
Prints JSON, writes `bench/out/gru_response.png`; `--oracle` runs the same analysis on an ideal
oscillator that follows the parameter at once (the tracker's own floor). With no trained model (default
`models/pretrained/default/gru/`) there is nothing meaningful to measure: it says so and exits.

    python3 bench/gru_response.py [--model DIR] [--temperature 1.0] [--seed 0] [--oracle] [--no-gan-reference]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from models.pitch import hz_to_midi, midi_to_hz  # noqa: E402 (after the checkout joins sys.path)

ROOT = Path(__file__).resolve().parents[1]
ARPEGGIO = (64.0, 68.0, 71.0, 76.0)


def parameter_track(sample_rate: int, step_s: float = 0.3, glide_s: float = 1.0) -> tuple[np.ndarray, list[int]]:
    """Pitch per sample (MIDI) float64 [n] and the sample indices of the step changes: the arpeggio,
    a hold at 64, the glide 64 -> 76, a hold at 76."""
    step = int(step_s * sample_rate)
    parts = [np.full(step, pitch) for pitch in ARPEGGIO] + [np.full(step, 64.0)]
    parts += [np.linspace(64.0, 76.0, int(glide_s * sample_rate), endpoint=False), np.full(step, 76.0)]
    changes = [index * step for index in range(1, len(ARPEGGIO) + 1)]
    return np.concatenate(parts), changes


def cycles(audio: np.ndarray, sample_rate: int, lowpass_hz: float = 1300.0) -> tuple[np.ndarray, np.ndarray]:
    """Cycle start times (samples, fractional) float64 [m] and periods (samples) [m - 1] from upward
    zero crossings of the zero-phase low-passed, mean-removed signal."""
    from scipy.signal import butter, sosfiltfilt

    filtered = sosfiltfilt(butter(4, lowpass_hz, fs=sample_rate, output="sos"), audio - np.mean(audio))
    index = np.nonzero((filtered[:-1] < 0) & (filtered[1:] >= 0))[0]
    fraction = -filtered[index] / (filtered[index + 1] - filtered[index])
    starts = index + fraction
    return starts, np.diff(starts)


def yin_track(audio: np.ndarray, sample_rate: int, hop: int = 16, frame_length: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Frame-wise YIN f0 (librosa): frame centre times (samples) [m] and f0 (Hz) [m]; a second,
    harmonic-robust tracker (window frame_length samples)."""
    import librosa

    f0_hz = librosa.yin(audio.astype(np.float64), fmin=150.0, fmax=1200.0, sr=sample_rate,
                        frame_length=frame_length, hop_length=hop, center=True)
    return np.arange(f0_hz.shape[0]) * hop, f0_hz


def pitch_errors(times, f0_hz, pitch_track, sample_rate, glide) -> dict:
    """Cents errors of f0 estimates at `times` (samples) against the parameter: during the glide
    (samples glide[0]..glide[1]) and on the steady notes."""
    error = cents(f0_hz, midi_to_hz(np.interp(times, np.arange(pitch_track.shape[0]), pitch_track)))
    in_glide = (times >= glide[0]) & (times < glide[1])
    glide_error = np.abs(error[in_glide])
    steady = ~in_glide & (times > 0.05 * sample_rate)
    return {"glide_cents": {"max_abs": float(glide_error.max()), "median_abs": float(np.median(glide_error)),
                            "p90_abs": float(np.percentile(glide_error, 90)),
                            "fraction_within_10": float(np.mean(glide_error <= 10.0)),
                            "n_estimates": int(glide_error.shape[0])},
            "steady_median_abs_cents": float(np.median(np.abs(error[steady])))}


def step_responses_ms(starts, periods, pitch_track, changes, sample_rate, tolerance_cents=50.0, confirm=3) -> dict:
    """Per step: ms from the change to the start of the first cycle within `tolerance_cents` of the new
    pitch, confirmed by the next `confirm` cycles (None: never settles before the next change)."""
    measured_hz = sample_rate / periods
    names = [f"{a:g}->{b:g}" for a, b in zip(ARPEGGIO, ARPEGGIO[1:] + (64.0,))]
    bounds = list(changes) + [pitch_track.shape[0]]
    responses = {}
    for name, change, next_change in zip(names, changes, bounds[1:]):
        within = np.abs(cents(measured_hz, midi_to_hz(pitch_track[change]))) <= tolerance_cents
        candidates = np.nonzero((starts[:-1] >= change - periods.max()) & (starts[:-1] < next_change))[0]
        settled = [k for k in candidates if k + confirm < within.shape[0] and within[k:k + confirm + 1].all()]
        responses[name] = float((starts[settled[0]] - change) / sample_rate * 1e3) if settled else None
    return responses


def multi_cycle(starts: np.ndarray, n_cycles: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Mean period over `n_cycles` consecutive cycles: (centre times (samples) [m - n], periods
    (samples) [m - n]) from cycle starts [m]."""
    spans = starts[n_cycles:] - starts[:-n_cycles]
    return (starts[n_cycles:] + starts[:-n_cycles]) / 2, spans / n_cycles


def gan_reference(model_dir: Path, xy, pitches=(64.0, 76.0), seconds: float = 1.0, seed: int = 0) -> dict:
    """Cycle jitter of the GAN's own notes (raw renders, as in the GRU's training set) at timbre point
    xy: per steady pitch, the median |cents| of single-cycle and 4-cycle periods against the note's
    median period (detune removed: this is jitter, not tuning)."""
    from models.timbre_grid import load_grid
    from training.train_grid import load_conditioning_source

    source = load_conditioning_source(model_dir)
    h = load_grid(model_dir / "grid").conditioning_at(*xy)
    audio = source.render_conditioning(np.repeat(h[None], len(pitches), axis=0), np.array(pitches, dtype=int), seed=seed)
    sample_rate = int(source.sample_rate)
    report = {}
    for note, pitch in zip(np.asarray(audio, dtype=np.float64), pitches):
        body = note[int(0.1 * sample_rate): int(seconds * sample_rate * 0.8)]
        starts, periods = cycles(body, sample_rate, lowpass_hz=1.5 * float(midi_to_hz(pitch)))  # below the 2nd harmonic
        if periods.shape[0] < 10:
            report[f"{pitch:g}"] = None
            continue
        _, periods_4 = multi_cycle(starts)
        report[f"{pitch:g}"] = {
            "cycle_median_abs_cents": float(np.median(np.abs(cents(np.median(periods) / periods, 1.0)))),
            "cycles4_median_abs_cents": float(np.median(np.abs(cents(np.median(periods_4) / periods_4, 1.0)))),
            "detune_cents": float(cents(sample_rate / np.median(periods), midi_to_hz(pitch)))}
    return report


def cents(f_hz: np.ndarray, reference_hz: np.ndarray) -> np.ndarray:
    """1200 log2(f / reference)."""
    return 1200.0 * np.log2(f_hz / reference_hz)


def step_edges_ms(starts, periods, pitch_track, changes, sample_rate) -> dict:
    """Per step: ms from the change to the first cycle (start) whose centred 3-cycle median pitch is
    nearer the new pitch than the old one (the edge; robust to single-cycle jitter)."""
    from scipy.signal import medfilt

    pitch = medfilt(hz_to_midi(sample_rate / periods), 3)
    names = [f"{a:g}->{b:g}" for a, b in zip(ARPEGGIO, ARPEGGIO[1:] + (64.0,))]
    bounds = list(changes) + [pitch_track.shape[0]]
    edges = {}
    for name, change, next_change in zip(names, changes, bounds[1:]):
        old, new = pitch_track[change - 1], pitch_track[change]
        after = np.nonzero((starts[:-1] >= change - periods.max()) & (starts[:-1] < next_change)
                           & (np.abs(pitch - new) < np.abs(pitch - old)))[0]
        edges[name] = float((starts[after[0]] - change) / sample_rate * 1e3) if after.size else None
    return edges


def generate(model, pitch_track: np.ndarray, temperature: float, seed: int, x: float, y: float) -> np.ndarray:
    """Stream `model` (a GruSynth) over the pitch track (MIDI per sample); returns audio float32 [n]."""
    from models.gru_stream import stream_generate

    conditioning = np.stack([np.full_like(pitch_track, x), np.full_like(pitch_track, y), pitch_track], axis=-1)
    return stream_generate(model, conditioning, temperature, seed, "int8", 16)


def oracle(pitch_track: np.ndarray, sample_rate: int, seed: int) -> np.ndarray:
    """An ideal instrument that follows the parameter at once (phase-continuous, 3 harmonics, noise at
    -30 dB): validates the tracker; the GRU should approach it."""
    phase = 2 * np.pi * np.cumsum(midi_to_hz(pitch_track)) / sample_rate
    tone = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)
    return (0.5 * tone + 0.016 * np.random.default_rng(seed).standard_normal(phase.shape[0])).astype(np.float32)


def plot(path: Path, pitch_track, starts, periods, sample_rate) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = starts[:-1] + periods / 2
    measured = hz_to_midi(sample_rate / periods)
    parameter = np.interp(centres, np.arange(pitch_track.shape[0]), pitch_track)
    figure, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    axes[0].plot(np.arange(pitch_track.shape[0]) / sample_rate, pitch_track, label="parameter", lw=2)
    axes[0].plot(centres / sample_rate, measured, ".", ms=2, label="output (per cycle)")
    axes[0].set_ylabel("pitch (MIDI)")
    axes[0].set_ylim(min(ARPEGGIO) - 3, max(ARPEGGIO) + 3)
    axes[0].legend(loc="upper left")
    axes[1].plot(centres / sample_rate, np.clip(100 * (measured - parameter), -200, 200), ".", ms=2)
    axes[1].axhline(10, color="k", lw=0.5)
    axes[1].axhline(-10, color="k", lw=0.5)
    axes[1].set_ylabel("error (cents, clipped)")
    axes[1].set_xlabel("time (s)")
    figure.suptitle("GRU parameter response: arpeggio 64-68-71-76, glide 64 -> 76")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "pretrained" / "default" / "gru",
                        help="GRU checkpoint folder")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--xy", type=float, nargs=2, default=(0.5, 0.5), help="timbre point")
    parser.add_argument("--oracle", action="store_true",
                        help="measure an ideal oscillator instead of the GRU (validates the tracker)")
    parser.add_argument("--no-gan-reference", action="store_true",
                        help="skip measuring the GAN's own notes (needs the model folder holding the GRU)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gru_response.png")
    args = parser.parse_args(argv)
    if not args.oracle and not (args.model / "config.json").is_file():
        print(json.dumps({"benchmark": "gru_response", "status": "skipped",
                          "reason": f"no trained GRU at {args.model}; an untrained model measures nothing"}))
        return 0

    if args.oracle:
        sample_rate, steps, source = 16000, None, "oracle"
        pitch_track, changes = parameter_track(sample_rate)
        audio = oracle(pitch_track, sample_rate, args.seed)
    else:
        from models.gru import load_gru, load_gru_metadata

        model = load_gru(args.model)
        sample_rate, steps, source = model.config.sample_rate, load_gru_metadata(args.model).get("step"), str(args.model)
        pitch_track, changes = parameter_track(sample_rate)
        audio = generate(model, pitch_track, args.temperature, args.seed, *args.xy)
    starts, periods = cycles(audio, sample_rate)
    report = {"benchmark": "gru_response", "model": source, "temperature": args.temperature,
              "model_steps": steps, "n_cycles": int(periods.shape[0])}
    if periods.shape[0] < 10:
        report["status"] = "no periodic output to track"
        print(json.dumps(report, indent=2))
        return 0
    glide_start = (len(ARPEGGIO) + 1) * int(0.3 * sample_rate)
    glide = (glide_start, glide_start + sample_rate)
    report["cycle_resolution_ms_at_64"] = float(1e3 / midi_to_hz(64.0))
    report["zero_crossing"] = {"step_edge_ms": step_edges_ms(starts, periods, pitch_track, changes, sample_rate),
                               "step_response_ms": step_responses_ms(starts, periods, pitch_track, changes,
                                                                      sample_rate),
                               **pitch_errors(starts[:-1] + periods / 2, sample_rate / periods, pitch_track,
                                              sample_rate, glide)}
    centres_4, periods_4 = multi_cycle(starts)
    report["zero_crossing_4_cycles"] = pitch_errors(centres_4, sample_rate / periods_4, pitch_track, sample_rate, glide)
    yin_times, yin_f0_hz = yin_track(audio, sample_rate)
    report["yin"] = {"window_ms": 512 / sample_rate * 1e3,
                     **pitch_errors(yin_times, yin_f0_hz, pitch_track, sample_rate, glide)}
    model_dir = args.model.resolve().parent
    if not args.oracle and not args.no_gan_reference and (model_dir / "grid" / "config.json").is_file():
        report["gan_reference"] = gan_reference(model_dir, args.xy, seed=args.seed)
    plot(args.out, pitch_track, starts, periods, sample_rate)
    report["plot"] = str(args.out)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Note-on -> onset latency of `latentsynth serve --audio jack` beside a bare baseline synth on the
same private dummy JACK server, in the same run. Prints JSON; writes bench/out/latency.png.

The baseline (`tests.support.baseline_synth`: a Python JACK client whose UDP thread sets a flag)
is the floor on this machine under its current load: block quantisation, the UDP hop and a
Python callback's exposure to the scheduler. Each trial sends the same note-on to the engine and
to the baseline (OSC over UDP, in alternating order; JACK MIDI from one port connected to both),
and a capture client in the graph finds both onsets. OSC latency runs from the send (wall
clock) to the cycle that rendered the onset plus the frame's offset in it; MIDI latency from the
event's frame to the onset frame (JACK frame time). An onset not heard within 250 ms is missing.
Each OSC note is sent at a moment drawn uniformly over a JACK cycle (a sleeping sender would wake
at the same point of every cycle, where the clients' callbacks meet it at one phase);
`send_phase_quartiles` says where the sends fell (0.25 / 0.5 / 0.75 of a period when uniform);
`engine_slowest` lists the engine's three slowest OSC trials with the baseline's latency in the same
trial, the send phase, the xruns during the trial and the seconds since the last timbre move.

Phases: the baseline alone, then for each engine configuration (GRU voice off, or on and audible:
`/mix/gru` GRU_GAIN, so it computes every note; native or Python audio callback) the timbre still
and a new random `/timbre/xy` every 1.5 s. Trials wait for every output to fall quiet. Every engine
figure is also given as a difference from the baseline's in the same phase. xruns are the graph's
(JACK tells every client), per minute, counted from the first trial on (not while clients join the
graph), with jackd's account of each (`xrun_blame`: the clients that had not finished a cycle by its deadline,
and the driver's own late wake-ups). The capture client's callback is machine code (no GIL) writing
into a buffer whose pages are all mapped before it joins the graph (no page fault in the callback),
so the recorder is not what makes the graph miss a cycle.

xruns under the same load: a client of a real-time graph on a loaded machine can miss a cycle for
reasons of the machine alone (scheduling of its threads). So each engine phase's xruns are compared
with a "baseline under engine load" phase: the same engine configuration runs with `--audio null`
(out of the graph, the same GRU voice, the same notes and timbre moves, so the same CPU load) while
the baseline synth, the capture and a native stand-in client (`tests.support.native_stand_in`) are
in the graph. The stand-in takes the engine's place: MIDI in from the same sender, its output into
the capture and the system playback, a machine-code callback writing silence; so the graph keeps
the engine's shape, without the engine's code (`--stand-in none` leaves it out).
`xruns_vs_loaded_baseline` is the difference in xruns per minute (target: <= 0).
With `--segments N` each run's engine phase and loaded-baseline phase are cut into N segments
played alternately (engine, loaded, loaded, engine, ...: a drift of the host cancels), each segment a
fresh `serve`; a run's figures are over all its segments (`segment_xruns` lists each one's). Each
phase also reports the time the hypervisor says it took from this VM's CPUs meanwhile (`steal_ms`,
/proc/stat, in 10 ms ticks).

Usage: python bench/latency.py [--trials 12] [--runs 1] [--gru off,on] [--callbacks native]
       [--period 128] [--no-midi] [--segments 1] (default: under 2 minutes)
       python bench/latency.py --full        (3 runs x 40 notes, native and Python callbacks)
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rt_engine.io.audio_backends import connect_ports  # noqa: E402
from rt_engine.osc.osc_codec import encode_message  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402
from tests.support.jack_harness import DummyJackServer, JackCapture, JackMidiSender  # noqa: E402
from tests.support.native_stand_in import NAME as STAND_IN  # noqa: E402

BASELINE = "latentsynth-baseline"
WINDOW_S = 0.25       # an onset later than this is missing
TIMBRE_EVERY_S = 1.5
ONSET_THRESHOLD = 1e-5
SPIN_S = 0.001        # the last stretch before a trial's send time is spun, not slept
QUIET_S, QUIET_TIMEOUT_S = 0.02, 1.0
"""A trial starts once every output has been below the onset threshold for QUIET_S (at most
QUIET_TIMEOUT_S of waiting)."""
GRU_GAIN = 0.7
"""`/mix/gru` of the "GRU on" configurations: the voice starts muted, and a muted voice is not computed."""


def _steal_ms() -> float:
    """Time the hypervisor has run other work on this VM's CPUs, summed over them (ms; /proc/stat's
    steal column, 0 where the kernel does not account it)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _OscTrial(NamedTuple):
    """One OSC trial of one target."""
    ms: float            # latency (inf: missing)
    phase: float         # where in its JACK cycle the note was sent (0..1)
    xruns: int           # the graph's xruns during the trial
    since_move_s: float  # since the last timbre move (NaN: none yet; negative: the next came after the send)


class _Target:
    """One synth under test: its OSC port, captured output port and capture channel."""

    def __init__(self, name: str, osc_port: int, output: str):
        self.name, self.osc_port, self.output = name, osc_port, output
        self.osc, self.midi = [], []   # latencies (ms)
        self.osc_missing = self.midi_missing = 0
        self.osc_trials: list[_OscTrial] = []


def _mover(port: int, stop: threading.Event, rng, moved: list) -> None:
    """Send a new random timbre point every TIMBRE_EVERY_S until `stop`; `moved[0]` is the
    perf_counter time of the last one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while not stop.wait(TIMBRE_EVERY_S):
            x, y = rng.uniform(0.0, 1.0, 2)
            sock.sendto(encode_message("/timbre/xy", (float(x), float(y))), ("127.0.0.1", port))
            moved[0] = time.perf_counter()


def _wait_quiet(capture, n_targets: int, timeout_s: float = QUIET_TIMEOUT_S) -> None:
    """Until the last QUIET_S of every target's output are below the onset threshold (an audible GRU
    voice's release outlasts the pause after /panic, and its tail would be taken for the next onset),
    or `timeout_s`."""
    quiet = int(QUIET_S * capture.sample_rate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        end = capture.now() - capture.first_frame
        if end >= quiet and not np.any(np.abs(capture.buffer[:n_targets, end - quiet:end]) > ONSET_THRESHOLD):
            return
        time.sleep(0.01)


def _at_random_phase(capture, rng, period_s: float) -> None:
    """Return at a moment drawn uniformly over a JACK cycle, a cycle or two from now. A sleeping
    sender on a loaded machine wakes when the real-time clients have left a core free, which is the
    same point of every cycle; trials sent then would all meet the clients' callbacks at one phase
    (and a client whose callback starts late in the cycle would catch notes the others miss)."""
    now = time.perf_counter()
    newest = capture.cycle_before(now)
    cycles_ahead = np.floor((now - newest) / period_s) + 1 if np.isfinite(newest) else 0
    target = (newest if np.isfinite(newest) else now) + period_s * (cycles_ahead + rng.uniform(0.0, 1.0))
    time.sleep(max(target - time.perf_counter() - SPIN_S, 0.0))
    while time.perf_counter() < target:
        pass


def _send_phase(capture, sent_s: float, period_s: float) -> float:
    """Where in its JACK cycle a send fell: 0..1 of a period after the newest cycle before it."""
    return float(((sent_s - capture.cycle_before(sent_s)) / period_s) % 1.0)


def _onsets(capture, targets, since_frame: int, period: int):
    """Onset frame per target (-1 = none) after `since_frame`."""
    within = int(2 * WINDOW_S * capture.sample_rate)  # bounded: a long scan holds the GIL the capture needs
    return [capture.onset_after(since_frame - period, threshold=ONSET_THRESHOLD, channel=k, within=within)
            for k in range(len(targets))]


def _phase(server, targets, midi, trials: int, move_port: int | None, args, rng,
           load_port: int | None = None, also_captured: Sequence[str] = ()) -> dict:
    """Run `trials` OSC (and MIDI) trials on every target at once; statistics per target.
    `load_port`: an engine outside the graph (`--audio null`) that receives the same notes (OSC at
    each OSC and MIDI trial) and, with `move_port`, the timbre moves: the load without the client.
    `also_captured`: output ports the capture takes in too (the stand-in's: the engine's edge)."""
    capture = JackCapture(server.name, [t.output for t in targets] + list(also_captured),
                          seconds=trials * 1.0 + 10)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stop = threading.Event()
    mover, moved = None, [np.nan]
    if move_port is not None:
        mover = threading.Thread(target=_mover, args=(move_port, stop, rng, moved), daemon=True)
        mover.start()
    note_on, panic = encode_message("/note/on", (69.0, 100.0)), encode_message("/panic")
    loaded = [("127.0.0.1", load_port)] if load_port is not None else []
    try:
        time.sleep(0.3)
        started, xruns_before, log_from = time.monotonic(), capture.xruns, server.log_size()
        steal_before = _steal_ms()
        for trial in range(trials):
            # who is sent the note first alternates, the engine outside the graph included: the
            # first one's OSC thread can hold a core while the second's wakes
            order = [(t.name, ("127.0.0.1", t.osc_port)) for t in targets] + [(None, a) for a in loaded]
            _wait_quiet(capture, len(targets))
            _at_random_phase(capture, rng, args.period / args.rate)
            since, sent, xruns_at_send = capture.now(), {}, capture.xruns
            for name, address in order if trial % 2 == 0 else order[::-1]:
                if name is not None:
                    sent[name] = time.perf_counter()
                sock.sendto(note_on, address)
            time.sleep(WINDOW_S + 0.02)
            for target, onset in zip(targets, _onsets(capture, targets, since, args.period)):
                latency = (capture.wall_time_of(onset) - sent[target.name]) * 1000 if onset >= 0 else np.inf
                target.osc_trials.append(_OscTrial(latency, _send_phase(capture, sent[target.name], args.period / args.rate),
                                                   capture.xruns - xruns_at_send, sent[target.name] - moved[0]))
                if latency > WINDOW_S * 1000:
                    target.osc_missing += 1
                else:
                    target.osc.append(latency)
            for address in [("127.0.0.1", target.osc_port) for target in targets] + loaded:
                sock.sendto(panic, address)
            time.sleep(0.1 + rng.uniform(0, args.period / args.rate))
            if midi is None:
                continue
            _wait_quiet(capture, len(targets))
            written = midi.send(bytes([0x90, 69, 100]), int(rng.integers(0, args.period)))
            for address in loaded:
                sock.sendto(note_on, address)
            time.sleep(WINDOW_S + 0.02)
            for target, onset in zip(targets, _onsets(capture, targets, written, args.period)):
                latency = (onset - written) / args.rate * 1000 if onset >= 0 else np.inf
                if latency > WINDOW_S * 1000:
                    target.midi_missing += 1
                else:
                    target.midi.append(latency)
            midi.send(bytes([0xB0, 120, 0]))
            for address in loaded:
                sock.sendto(panic, address)
            time.sleep(0.1)
        seconds, xruns = time.monotonic() - started, capture.xruns - xruns_before
        steal_ms = _steal_ms() - steal_before
    finally:
        stop.set()
        if mover is not None:
            mover.join(TIMBRE_EVERY_S + 1)
        sock.close()
        capture.close()
    return {"seconds": seconds, "xruns": xruns, "segment_xruns": [xruns], "steal_ms": steal_ms,
            "xrun_blame": server.xrun_blame(log_from)}


def _add_segment(total: dict | None, segment: dict) -> dict:
    """`segment` (a `_phase` result) added to `total` (None: the first): seconds, xruns, steal,
    blame summed."""
    if total is None:
        return dict(segment, xrun_blame=dict(segment["xrun_blame"],
                                             late_clients=dict(segment["xrun_blame"]["late_clients"])))
    total["seconds"] += segment["seconds"]
    total["xruns"] += segment["xruns"]
    total["segment_xruns"] = total["segment_xruns"] + segment["segment_xruns"]
    total["steal_ms"] += segment["steal_ms"]
    blame = total["xrun_blame"]
    blame["driver_late"] += segment["xrun_blame"]["driver_late"]
    for name, count in segment["xrun_blame"]["late_clients"].items():
        blame["late_clients"][name] = blame["late_clients"].get(name, 0) + count
    return total


def _finished(phase: dict) -> dict:
    """A phase's totals rounded, with xruns per minute."""
    return dict(phase, seconds=round(phase["seconds"], 1), steal_ms=round(phase["steal_ms"], 1),
                xruns_per_min=round(phase["xruns"] * 60 / max(phase["seconds"], 1e-9), 2))


def _stats(latencies: list[float], missing: int) -> dict:
    ms = np.asarray(latencies, dtype=float)
    if not ms.size:
        return {"n": 0, "missing": missing}
    return {"n": int(ms.size), "missing": missing, "median": round(float(np.median(ms)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3), "max": round(float(ms.max()), 3)}


def _slowest(engine: _Target, baseline: _Target, count: int = 3) -> list[dict]:
    """The engine's slowest OSC trials (`_OscTrial`'s fields) with the baseline's latency in the
    same trial."""
    order = sorted(range(len(engine.osc_trials)), key=lambda k: -engine.osc_trials[k].ms)[:count]
    return [dict({key: round(value, 3) for key, value in engine.osc_trials[k]._asdict().items()},
                 baseline_ms=round(baseline.osc_trials[k].ms, 3)) for k in order]


def _compare(engine: dict, baseline: dict, period_ms: float) -> dict:
    """Engine minus baseline, and the issue's targets: median <= +0.7 ms, max <= + one period,
    nothing missing."""
    if not engine.get("n") or not baseline.get("n"):
        return {"targets_met": False}
    diff = {key: round(engine[key] - baseline[key], 3) for key in ("median", "p99", "max")}
    diff["targets_met"] = bool(diff["median"] <= 0.7 and diff["max"] <= period_ms
                               and engine["missing"] == 0)
    return diff


def _report(targets, phase: dict, period_ms: float, midi: bool) -> dict:
    engine, baseline = (targets[0], targets[1]) if len(targets) == 2 else (None, targets[0])
    for kind in ("osc", "midi") if midi else ("osc",):
        base = _stats(getattr(baseline, kind), getattr(baseline, f"{kind}_missing"))
        phase[kind] = {"baseline": base}
        if kind == "osc":  # uniform over the cycle: 0.25, 0.5, 0.75
            phase[kind]["send_phase_quartiles"] = [round(float(q), 2) for q in
                                                   np.percentile([trial.phase for trial in baseline.osc_trials], [25, 50, 75])]
        if engine is not None:
            eng = _stats(getattr(engine, kind), getattr(engine, f"{kind}_missing"))
            phase[kind].update(engine=eng, difference=_compare(eng, base, period_ms))
            if kind == "osc":
                phase[kind]["engine_slowest"] = _slowest(engine, baseline)
    return phase


def _start_serve(server, port: int, gru: str, callback: str, checkout: Path,
                 audio: str = "jack") -> tuple[ServeProcess, str]:
    """`serve` from `checkout` (the repository, or `--before DIR`: no --audio-callback there); with
    `audio="null"` outside the graph (the load of the engine without its client)."""
    env = dict(server.env, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(checkout))
    midi = ["--midi", "auto", "--midi-api", "jack"] if audio == "jack" else ["--midi", "none"]
    command = [sys.executable, "-m", "rt_engine.cli", "serve", "--audio", audio, *midi,
               "--osc-port", str(port), "--osc-host", "127.0.0.1", "--gru", "auto" if gru == "on" else "none"]
    if callback != "before" and audio == "jack":
        command += ["--audio-callback", callback]
    serve = ServeProcess(command, port, env, 600.0, cwd=checkout)
    if gru == "on":
        serve.send("/mix/gru", GRU_GAIN)
    audio = " / ".join(line.strip() for line in serve.output
                       if line.startswith(("audio:", "GRU voice:", "MIDI input:")))
    return serve, audio


def _loaded_segment(server, baseline_port: int, midi, gru: str, callback: str, checkout: Path,
                    trials: int, totals: dict, args, rng) -> str | None:
    """One segment of the baseline alone in the graph while the engine configuration runs outside
    it (`--audio null`) with the same notes and moves: `trials` notes per move, added to `totals`
    ({move: (targets, phase totals)}). Returns an error, or None."""
    port = _free_port()
    try:
        serve, _ = _start_serve(server, port, gru, callback, checkout, audio="null")
    except RuntimeError as error:
        return str(error)[-400:]
    stand_in, captured = None, []
    if args.stand_in == "native":  # a machine-code client in the engine's place: the graph keeps its shape
        command = [sys.executable, "-m", "tests.support.native_stand_in", "--server", server.name]
        stand_in = subprocess.Popen(command + (["--midi-from", midi.port.name] if midi is not None else []),
                                    cwd=REPO, env=server.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
        if stand_in.stdout.readline().strip() != "ready":
            serve.stop()
            return "the native stand-in client did not start"
        captured = [f"{STAND_IN}:out_1"]
    try:
        for move in args.moves.split(","):
            targets, total = totals.get(move, ([_Target("baseline", baseline_port, f"{BASELINE}:out")], None))
            phase = _phase(server, targets, midi, trials, port if move == "moving" else None, args, rng,
                           load_port=port, also_captured=captured)
            totals[move] = (targets, _add_segment(total, phase))
    finally:
        serve.stop()
        if stand_in is not None:
            stand_in.stdin.close()
            stand_in.wait(10)
    return None


def _engine_segment(server, baseline_port: int, midi, gru: str, callback: str, checkout: Path,
                    trials: int, totals: dict, args, rng) -> tuple[str | None, str]:
    """One segment of the engine in the graph beside the baseline: `trials` notes per move, added to
    `totals` ({move: (targets, phase totals)}). Returns (an error or None, the engine's audio line)."""
    port = _free_port()
    try:
        serve, audio = _start_serve(server, port, gru, callback, checkout)
    except RuntimeError as error:
        return str(error)[-400:], ""
    try:
        if midi is not None:
            midi.connect_to("latentsynth")
        for move in args.moves.split(","):
            targets, total = totals.get(move, ([_Target("engine", port, "latentsynth:out_1"),
                                                 _Target("baseline", baseline_port, f"{BASELINE}:out")], None))
            targets[0].osc_port = port  # a fresh serve each segment
            phase = _phase(server, targets, midi, trials, port if move == "moving" else None, args, rng)
            totals[move] = (targets, _add_segment(total, phase))
    finally:
        serve.stop()
    return None, audio


def _configuration(server, baseline_port: int, midi, gru: str, callback: str, checkout: Path, run: int,
                   args, rng, period_ms: float) -> list[dict]:
    """One engine configuration in one run: its phases (still, moving) beside the loaded
    baseline's, in `args.segments` alternating segments; each engine phase gains
    `xruns_vs_loaded_baseline` (xruns per minute, engine minus loaded baseline)."""
    engine, loaded, audio = {}, {}, ""
    name = f"GRU {gru}, {callback} callback"
    for segment in range(args.segments):
        trials = args.trials // args.segments + (segment < args.trials % args.segments)
        order = ("engine", "loaded") if segment % 4 in (0, 3) else ("loaded", "engine")
        for which in order:
            if which == "engine":
                error, line = _engine_segment(server, baseline_port, midi, gru, callback, checkout, trials,
                                              engine, args, rng)
                audio = audio or line
            else:
                error = _loaded_segment(server, baseline_port, midi, gru, callback, checkout, trials,
                                        loaded, args, rng)
            if error is not None:  # one configuration failed: keep the rest
                return [{"run": run, "config": name if which == "engine" else f"baseline under GRU {gru} engine load",
                         "error": error}]
    stand_in = ", a native stand-in client in the graph" if args.stand_in == "native" else ""
    phases = []
    for move in args.moves.split(","):
        targets, total = engine[move]
        engine_phase = _report(targets, dict(_finished(total), run=run, config=f"{name}, timbre {move}",
                                             audio=audio, segments=args.segments), period_ms, midi is not None)
        targets, total = loaded[move]
        loaded_phase = _report(targets, dict(_finished(total), run=run, segments=args.segments,
                                             config=f"baseline under GRU {gru} engine load (null audio{stand_in}), "
                                                    f"timbre {move}"), period_ms, midi is not None)
        engine_phase["xruns_vs_loaded_baseline"] = round(
            engine_phase["xruns_per_min"] - loaded_phase["xruns_per_min"], 2)
        phases += [engine_phase, loaded_phase]
    return phases


def _plot(results: list[dict]) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, medians, maxima = [], [], []
    for phase in results:
        for who in ("baseline", "engine") if "osc" in phase else ():
            stats = phase["osc"].get(who)
            if stats and stats.get("n"):
                labels.append(f"{phase['config']}\n{who}")
                medians.append(stats["median"])
                maxima.append(stats["max"])
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(labels)), 3.5))
    ax.bar(range(len(labels)), maxima, color="0.8", label="max")
    ax.bar(range(len(labels)), medians, color="C0", label="median")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_ylabel("OSC note-on -> onset (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="notes per phase")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--gru", default="off,on", help="GRU voice configurations: off,on")
    parser.add_argument("--callbacks", default="native", help="audio callbacks: native,python")
    parser.add_argument("--moves", default="still,moving", help="timbre: still,moving")
    parser.add_argument("--period", type=int, default=128, help="JACK period (frames)")
    parser.add_argument("--rate", type=int, default=48_000, help="JACK rate (Hz)")
    parser.add_argument("--no-midi", action="store_true", help="OSC trials only")
    parser.add_argument("--stand-in", choices=("native", "none"), default="native",
                        help="the loaded baseline's graph: a native JACK client in the engine's place "
                             "(tests.support.native_stand_in), or nothing")
    parser.add_argument("--before", type=Path, default=None, metavar="DIR",
                        help="also run `serve` from this checkout (e.g. `git archive` of an older "
                             "commit), labelled 'before callback'")
    parser.add_argument("--segments", type=int, default=1,
                        help="cut each run's engine and loaded-baseline phases into this many alternating segments")
    parser.add_argument("--full", action="store_true",
                        help="3 runs x 40 notes, GRU off and on, native and Python callbacks")
    args = parser.parse_args()
    if len(set(args.moves.split(","))) != len(args.moves.split(",")):
        parser.error(f"--moves lists each of still, moving at most once, got {args.moves}")
    if not 1 <= args.segments <= args.trials:
        parser.error(f"--segments must be within 1..--trials ({args.trials}), got {args.segments}")
    if args.full:
        args.trials, args.runs, args.callbacks = 40, 3, "native,python"
    period_ms = args.period / args.rate * 1000
    rng = np.random.default_rng(0)
    results = []
    with DummyJackServer(f"latentsynth-bench-{os.getpid()}", args.rate, args.period) as server:
        baseline_port = _free_port()
        baseline = subprocess.Popen([sys.executable, "-m", "tests.support.baseline_synth",
                                     "--osc-port", str(baseline_port), "--name", BASELINE],
                                    cwd=REPO, env=server.env, stdout=subprocess.PIPE, text=True)
        midi = None
        try:
            if baseline.stdout.readline().strip() != "ready":
                raise RuntimeError("the baseline synth did not start")
            if not args.no_midi:
                midi = JackMidiSender(server.name, client_name="latentsynth-bench-midi")
                connect_ports(midi.client, midi.port, f"{BASELINE}:midi_in")
            for run in range(args.runs):
                base = _Target("baseline", baseline_port, f"{BASELINE}:out")
                phase = _finished(_phase(server, [base], midi, args.trials, None, args, rng))
                results.append(_report([base], dict(phase, run=run, config="baseline alone"),
                                       period_ms, midi is not None))
                callbacks = args.callbacks.split(",") + (["before"] if args.before else [])
                for gru in args.gru.split(","):
                    for callback in callbacks:
                        checkout = args.before if callback == "before" else REPO
                        results += _configuration(server, baseline_port, midi, gru, callback, checkout, run,
                                                  args, rng, period_ms)
        finally:
            if midi is not None:
                midi.close()
            baseline.terminate()
            baseline.wait(10)
    _plot(results)
    print(json.dumps({"rate": args.rate, "period": args.period, "period_ms": round(period_ms, 3),
                      "trials": args.trials, "segments": args.segments, "jack_realtime": server.realtime,
                      "load_average": os.getloadavg()[0], "xruns_total": _xrun_totals(results),
                      "phases": results}, indent=1))


def _xrun_totals(results: list[dict]) -> dict:
    """Per configuration over all runs: seconds measured, xruns, xruns per minute, and the clients
    jackd found late (summed `xrun_blame`)."""
    totals: dict = {}
    for phase in results:
        if "xruns" in phase:
            total = totals.setdefault(phase["config"], {"seconds": 0.0, "xruns": 0, "steal_ms": 0.0,
                                                        "late_clients": {}, "driver_late": 0})
            total["seconds"] = round(total["seconds"] + phase["seconds"], 1)
            total["xruns"] += phase["xruns"]
            total["steal_ms"] = round(total["steal_ms"] + phase["steal_ms"], 1)
            for name, count in phase["xrun_blame"]["late_clients"].items():
                total["late_clients"][name] = total["late_clients"].get(name, 0) + count
            total["driver_late"] += phase["xrun_blame"]["driver_late"]
    for total in totals.values():
        total["xruns_per_min"] = round(total["xruns"] * 60 / max(total["seconds"], 1e-9), 2)
    return totals


if __name__ == "__main__":
    main()

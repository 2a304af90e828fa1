"""`latentsynth render`: play a MIDI file and/or an OSC score through the engine, offline.

The same engine, bank manager and control code as `serve`, driven by a loop instead of an audio
device: every event is dispatched at its exact output frame (MIDI through
`rt_engine.io.midi_map.MidiMapper`, score lines through `rt_engine.osc.osc_registry.dispatch`), and the
loop waits for the banks a timbre change needs before rendering on. The bank manager runs offline
(`BankManager.settle`): which bank loads into which slot, and when, follows the score and the
engine's frames, never the wall clock, so the same input renders the same samples.
A score is JSON lines: `{"t": seconds, "address": "/timbre/xy", "args": [0.2, 0.8]}`.

Untrusted input: event times must be finite and within `--max-duration`; a MIDI file with
division 0, an absurd tempo or delta, or garbage is one clear error line. Offline nothing is
dropped: when more commands fall in one block than the engine's queue takes, the block is cut
and the rest apply a frame later. The WAV is written to disk block by block; SIGINT/SIGTERM stop
the render cleanly (bank worker and shared memory released, the partial WAV removed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from models.timbre_sources import default_model_dir
from rt_engine.banks.bank_worker import PendingWorker, spawn_worker

TIMBRE_REST_S = 0.15
"""A timbre point held at least this long (score time) gets its exact bank before rendering on;
shorter stops (sweeps) play from the grid neighbours."""
STILL_BLOCK = 2048
"""Block (frames) while the timbre is still. Notes, bends and gains are applied at their own
frames, so the block size changes nothing there and long blocks only cut the loop's per-block cost
(a 24 s chorale: 0.60 s of rendering in 256-frame blocks, 0.34 s in 2048-frame ones, the same
samples). Crossfades and glides of the timbre run at the block rate, so from each timbre change
until they settle the render plays `--block` frames at a time, as a device period would."""
SETTLE_BLOCKS = 2
"""`--block`-frame blocks after a timbre change's crossfade (the exact bank's selection)."""
MAX_DURATION_S = 3600.0
"""Default longest render (s of output): `--max-duration`."""
COMMANDS_PER_CUT_FRACTION = 8
"""At most the engine's queue capacity / this many events are dispatched before the render loop
lets the engine drain its queue (each event pushes a few commands at most)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--midi", help="standard MIDI file to play")
    parser.add_argument("--score", help="OSC score: JSON lines {t, address, args}")
    parser.add_argument("--out", required=True, help="output WAV file")
    parser.add_argument("--sample-rate", type=int, default=48_000, help="output rate (Hz)")
    parser.add_argument("--block", type=int, default=256,
                        help="block size (frames) while the timbre moves, as a device period; longer while it is still")
    parser.add_argument("--model", default=None,
                        help="model folder (default: models/pretrained/default if it holds a "
                             "model, else the procedural source)")
    parser.add_argument("--polyphony", type=int, default=64, help="voices")
    parser.add_argument("--tail", type=float, default=2.0, help="seconds rendered after the last event")
    parser.add_argument("--max-duration", type=float, default=MAX_DURATION_S, metavar="S",
                        help="refuse inputs whose events reach beyond S seconds")
    parser.add_argument("--gru", default="auto", choices=("auto", "none"),
                        help="auto: the model's GRU voice when the model folder has one. It starts muted: "
                             "it runs when the input raises its gain (/mix/gru, or a CC mapped to mix_gru)")
    from rt_engine.subcommands.gru_voice import add_gru_temperature_argument  # run-time import: subcommand modules load fast (rt_engine.cli)

    add_gru_temperature_argument(parser)


def _checked_time(t, max_duration_s: float) -> float:
    """A finite event time in [0, max_duration_s] (s), else ValueError saying which bound."""
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise ValueError(f"t must be a number, got {type(t).__name__}")
    t = float(t)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"t must be finite and >= 0, got {t}")
    if t > max_duration_s:
        raise ValueError(f"t {t:g} s is beyond --max-duration {max_duration_s:g} s")
    return t


def read_score(path: str | Path, max_duration_s: float = MAX_DURATION_S) -> list[tuple[float, str, list]]:
    """Score events (t seconds, address, args) from a JSON-lines file; a bad line is a
    ValueError naming the file and line."""
    events = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("a line must be a JSON object")
            address, args = entry["address"], entry.get("args", [])
            if not (isinstance(address, str) and address.startswith("/") and isinstance(args, list)):
                raise ValueError("needs an address starting with '/' and args a list")
            t = _checked_time(entry["t"], max_duration_s)
        except (ValueError, KeyError, TypeError, RecursionError) as error:
            raise ValueError(f"{path}:{number}: bad score line ({error}): {line.strip()[:80]}") from None
        events.append((t, address, args))
    return events


def read_midi(path: str | Path, max_duration_s: float = MAX_DURATION_S) -> list[tuple[float, bytes]]:
    """Channel messages of a MIDI file as (t seconds, raw bytes), tempo map applied. Anything
    mido cannot read, a division of 0 or times beyond `max_duration_s` are a ValueError naming
    the file."""
    import mido  # loaded only when a MIDI file is read

    try:
        midi = mido.MidiFile(str(path))
        if midi.type == 2:
            raise ValueError("type 2 (asynchronous tracks) is not supported")
        if midi.ticks_per_beat <= 0:
            raise ValueError(f"division {midi.ticks_per_beat} (ticks per beat) must be positive")
        events, t = [], 0.0
        for message in midi:
            t += message.time
            if not math.isfinite(t) or t > max_duration_s:
                raise ValueError(f"events reach {t:g} s, beyond --max-duration {max_duration_s:g} s "
                                 "(an absurd tempo or delta)")
            if not message.is_meta and message.type != "sysex":
                events.append((t, bytes(message.bytes())))
    except Exception as error:  # mido raises many types for broken files
        raise ValueError(f"cannot read MIDI file {path}: {error}") from None
    return events


def _timbre_kind(payload) -> str:
    """'' for events that leave the timbre alone, 'point' for grid moves (CC 1/2/74,
    /timbre/xy), 'bank' for presets and sounds (program change, /timbre/preset|audio)."""
    if isinstance(payload, bytes):
        status = payload[0] & 0xF0
        if status == 0xC0:
            return "bank"
        return "point" if status == 0xB0 and len(payload) > 1 and payload[1] in (1, 2, 74) else ""
    if payload[0] == "/timbre/xy":
        return "point"
    return "bank" if payload[0].startswith("/timbre") else ""


def _is_note_on(kind: str, payload) -> bool:
    """A MIDI note-on with a velocity, or an OSC /note/on."""
    if kind == "midi":
        return payload[0] & 0xF0 == 0x90 and len(payload) > 2 and payload[2] > 0
    return payload[0] == "/note/on"


def played_pitches(events) -> list[int]:
    """The keyboard pitches the events play (MIDI note-ons, /note/on), rounded; only those rows
    are rendered offline (a voice plays the nearest row). [60] when there are none."""
    pitches = set()
    for _, kind, payload in events:
        if not _is_note_on(kind, payload):
            continue
        if kind == "midi":
            pitches.add(int(payload[1]))
        elif payload[1]:
            try:
                pitches.add(int(round(float(payload[1][0]))))
            except (TypeError, ValueError):
                continue  # dispatch answers the bad message with /fail
    return sorted(pitches) or [60]


def opens_with_a_timbre(events) -> bool:
    """True when a timbre event (grid point, preset, sound) comes before the first note."""
    for _, kind, payload in sorted(events, key=lambda e: e[0]):
        if _timbre_kind(payload):
            return True
        if _is_note_on(kind, payload):
            return False
    return False


def unmutes_gru(events, cc_actions) -> bool:
    """True when an event can raise the GRU layer's gain above 0, where it starts (`/mix/gru`, or a
    MIDI CC that `cc_actions` ((controller, action) pairs) maps to "mix_gru"); else the layer is
    silent throughout and need not run."""
    gain_ccs = {cc for cc, action in cc_actions if action == "mix_gru"}
    for _, kind, payload in events:
        if kind == "midi":
            if payload[0] & 0xF0 == 0xB0 and len(payload) > 2 and payload[1] in gain_ccs and payload[2] > 0:
                return True
        elif payload[0] == "/mix/gru":
            args = payload[1]
            if not (args and isinstance(args[0], (int, float)) and args[0] <= 0):
                return True  # a gain above 0, or arguments only dispatch can judge: the layer is kept
    return False


def _cores() -> int:
    """Cores this process may run on: offline, the bank worker computes on all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def spawn_render_worker(model_dir: str | None) -> PendingWorker:
    """The bank worker of a render, spawned before anything else loads: the model loads while the
    engine starts, and with no audio thread to leave a core to it computes on every core."""
    return spawn_worker(model_dir, compute_threads=_cores())


def render(events, out_path: str, sample_rate: int, block: int, model_dir: str | None,
           polyphony: int, tail_s: float, progress: bool = True, gru: str = "auto",
           gru_temperature: float | None = None, worker: PendingWorker | None = None) -> dict:
    """Render events [(t s, kind, payload)] (kind "midi" with bytes or "osc" with
    (address, args)) to `out_path`; returns a summary dict. `gru_temperature` overrides the GRU
    checkpoint's start sampling temperature (`gru_voice.gru_temperature`). `worker`: the bank
    worker the caller spawned for `model_dir` (`spawn_render_worker`), else one is spawned here."""
    import gc  # run-time imports: subcommand modules load fast (rt_engine.cli)
    import time

    started = time.perf_counter()
    pending_worker = worker or spawn_render_worker(model_dir)
    try:
        import numpy as np  # run-time imports, while the worker starts (rt_engine.cli loads fast)
        import soundfile
        from tqdm import tqdm

        from rt_engine.banks.bank_manager import BankManager
        from rt_engine.core.commands import DEFAULT_QUEUE_CAPACITY
        from rt_engine.core.engine import Engine, load_kernels
        from rt_engine.io.midi_map import MidiMapper, load_midi_map
        from rt_engine.osc.osc_registry import dispatch
        from rt_engine.subcommands.gru_voice import has_gru_voice, load_stream_layer
        from rt_engine.subcommands.serve_command import uninterruptible

        midi_map = load_midi_map()
        audible = unmutes_gru(events, midi_map.cc_actions)  # else the layer is skipped: the same samples
        layer = load_stream_layer(model_dir, gru if audible else "none", threaded=False,
                                  temperature=gru_temperature)
        gru_muted = not audible and has_gru_voice(model_dir, gru)
        load_kernels(sample_rate)  # while the worker loads the model
    except BaseException:
        pending_worker.kill()
        raise
    initial_grid = not opens_with_a_timbre(events)  # else that grid would be rendered and never played
    banks = BankManager(model_dir, sample_rate, pitches=played_pitches(events), offline=True,
                        worker=pending_worker, compute_threads=_cores(),
                        request_initial_point=initial_grid, store_points=True)
    engine = Engine(banks, sample_rate, max_block=max(block, STILL_BLOCK), n_voices=polyphony, stream_layer=layer)
    failures = []

    def reply(address, args):
        if address == "/fail":
            failures.append(" ".join(str(a) for a in args))
            print(f"render: /fail {' '.join(str(a) for a in args)}", file=sys.stderr)

    try:
        mapper = MidiMapper(engine, midi_map)
        events = sorted(events, key=lambda e: e[0])
        frames = [int(round(t * sample_rate)) for t, _, _ in events]
        kinds = [_timbre_kind(payload) for _, _, payload in events]
        total = (frames[-1] if frames else 0) + int(tail_s * sample_rate)
        next_event, max_commands = 0, DEFAULT_QUEUE_CAPACITY // COMMANDS_PER_CUT_FRACTION
        settled_at = 0  # frame from which the timbre is still (long blocks)
        banks.settle()
        gc.freeze()  # the start-up's objects (Numba's above all) leave the collector: no collections
        # of them while rendering, none at exit either (0.1 s of every render's wall time)
        with tqdm(total=total, unit="frame", unit_scale=True, disable=not progress,
                  desc="render") as bar, soundfile.SoundFile(out_path, "w", samplerate=sample_rate, channels=2,
                                                             subtype="PCM_24") as wav:
            while engine.frame < total:
                still = engine.frame >= settled_at and not engine.timbre_gliding()
                n = min(STILL_BLOCK if still else block, total - engine.frame)
                changed, n_dispatched = set(), 0
                while next_event < len(events) and frames[next_event] < engine.frame + n:
                    if n_dispatched >= max_commands:  # cut the block: the queue drains first
                        n = max(1, frames[next_event] - engine.frame)
                        break
                    if kinds[next_event]:  # a timbre change starts a block, and `--block`-frame ones
                        if frames[next_event] > engine.frame:  # follow until its crossfade settles
                            n = frames[next_event] - engine.frame
                            break
                        settled_at = engine.frame + engine.crossfade_frames + SETTLE_BLOCKS * block
                        n = min(block, total - engine.frame)
                    n_dispatched += 1
                    t, kind, payload = events[next_event]
                    at_frame = max(frames[next_event], engine.frame)
                    if not (initial_grid or banks.timbre_requested) and _is_note_on(kind, payload):
                        banks.request_initial_point()  # nothing asked for a timbre before this note: the
                        # opening event was one the MIDI map ignores
                        initial_grid = True
                        changed.add("point")
                    if kind == "midi":
                        mapper.handle(payload, at_frame)
                    else:
                        dispatch(engine, payload[0], payload[1], at_frame, reply)
                    changed.add(kinds[next_event])
                    next_event += 1
                    if kinds[next_event - 1] == "bank":  # playable before the block's later notes start
                        banks.settle()
                if "point" in changed:
                    later = [events[k][0] for k in range(next_event, len(events)) if kinds[k]]
                    if not later or later[0] - engine.frame / sample_rate >= TIMBRE_REST_S:
                        banks.want_exact_point()  # the score rests here
                if layer is not None:
                    layer.render_available(max_blocks=64, min_frames=n)  # offline: the layer renders in step
                banks.settle()  # and the slots the last block let go take the loads waiting for one
                wav.write(np.ascontiguousarray(engine.process(n).T))
                bar.update(n)
        seconds = time.perf_counter() - started
        return {"out": out_path, "duration_s": round(total / sample_rate, 3),
                "render_s": round(seconds, 3),
                "realtime_factor": round(total / sample_rate / max(seconds, 1e-9), 2),
                "events": len(events), "failures": len(failures),
                "gru_layer": "run" if layer is not None else ("silent throughout: not run" if gru_muted else "none"),
                **{k: engine.status()[k] for k in ("late", "dropped", "steals", "gru_underruns")}}
    finally:
        with uninterruptible():  # the clean-up must finish (bank worker, shared memory)
            engine.close()


def main(args: argparse.Namespace) -> int:
    if not args.midi and not args.score:
        print("latentsynth render: give --midi FILE.mid and/or --score FILE.jsonl", file=sys.stderr)
        return 2
    events = []
    try:
        if not (math.isfinite(args.max_duration) and args.max_duration > 0):
            raise ValueError(f"--max-duration must be a positive number of seconds, got {args.max_duration}")
        if not (math.isfinite(args.tail) and 0 <= args.tail <= args.max_duration):
            raise ValueError(f"--tail must be within 0..{args.max_duration:g} s, got {args.tail}")
        if args.midi:
            if not Path(args.midi).is_file():
                raise ValueError(f"MIDI file not found: {args.midi}")
            events += [(t, "midi", data) for t, data in read_midi(args.midi, args.max_duration)]
        if args.score:
            if not Path(args.score).is_file():
                raise ValueError(f"score file not found: {args.score}")
            events += [(t, "osc", (address, a)) for t, address, a in read_score(args.score, args.max_duration)]
    except (ValueError, OSError) as error:
        print(f"latentsynth render: {error}", file=sys.stderr)
        return 2
    model_dir = args.model or default_model_dir()
    worker = spawn_render_worker(model_dir)
    from rt_engine.subcommands.serve_command import interruptible  # run-time import, once the worker starts

    print(f"render: bank source {'model ' + model_dir if model_dir else 'procedural'}", flush=True)
    try:
        with interruptible():
            summary = render(events, args.out, args.sample_rate, args.block, model_dir, args.polyphony,
                             args.tail, gru=args.gru, gru_temperature=args.gru_temperature, worker=worker)
    except ValueError as error:
        print(f"latentsynth render: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.path.exists(args.out):
            os.remove(args.out)
        print("latentsynth render: interrupted; partial output removed", file=sys.stderr)
        return 130
    print(json.dumps(summary))
    return 0

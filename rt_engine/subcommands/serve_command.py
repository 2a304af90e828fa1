"""`latentsynth serve`: open the audio device, start the engine, listen for OSC and MIDI.

Prints the bank source, the device, block size and the latency the engine adds, the OSC ports
and the MIDI ports, then a line `ready` once OSC is accepted (stdout flushed). SIGINT (Ctrl-C) or
SIGTERM shuts everything down cleanly (OSC, MIDI, audio, stream layer, bank worker and its shared
memory), also when the shell started `serve` with SIGINT ignored (a background job of a script).

OSC binds 127.0.0.1 unless `--bind ADDR` opens other interfaces (then a WARNING line says who can
reach it); `--allow CIDR ...`, `--password` and `--sounds DIR` narrow what the network may do.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import signal
import sys
import threading
import time

from models.timbre_sources import default_model_dir
from typing import Iterator

from rt_engine.osc.osc_guard import GuardConfig, is_loopback
from rt_engine.subcommands.gru_voice import add_gru_temperature_argument, load_stream_layer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audio", default="auto",
                        help="auto | DEVICE (name or index, see `latentsynth devices`) | jack | null")
    parser.add_argument("--osc-port", type=int, default=57130, help="OSC port, UDP and TCP (0: any free)")
    parser.add_argument("--bind", "--osc-host", dest="bind", default="127.0.0.1", metavar="ADDR",
                        help="address OSC binds to (default 127.0.0.1: this machine only; 0.0.0.0: "
                             "every interface, see README Security)")
    parser.add_argument("--allow", nargs="+", default=[], metavar="CIDR",
                        help="accept OSC from other hosts only inside these networks (e.g. "
                             "192.168.1.0/24); this machine is always accepted")
    parser.add_argument("--password", default=None,
                        help="TCP clients must first send /password PASSWORD; UDP is then accepted "
                             "from this machine only")
    parser.add_argument("--sounds", action="append", default=None, metavar="DIR",
                        help="folder /timbre/audio may read from (repeatable; default "
                             "~/.local/share/latentsynth/sounds)")
    parser.add_argument("--reply-port", type=int, default=None,
                        help="send OSC replies to this port of the sender's host")
    parser.add_argument("--tcp-idle-s", type=float, default=GuardConfig.tcp_idle_s,
                        help="close a TCP connection silent for this long (s)")
    parser.add_argument("--tcp-partial-s", type=float, default=GuardConfig.tcp_partial_s,
                        help="close a TCP connection whose packet is not whole this long after "
                             "its first byte (s)")
    parser.add_argument("--midi", default="auto", help="auto | none | PORT (name substrings, comma-separated)")
    parser.add_argument("--midi-api", default="auto", choices=("auto", "alsa", "jack"))
    parser.add_argument("--midi-map", default=None, help="MIDI map JSON file (default: the shipped map)")
    parser.add_argument("--block", type=int, default=256, help="block size (frames); JACK sets its own")
    parser.add_argument("--audio-callback", default="native", choices=("native", "python"),
                        help="native: the block kernel runs from a C callback, no GIL (falls back "
                             "to python where it cannot load); python: a Python callback")
    parser.add_argument("--sample-rate", type=int, default=None,
                        help="device rate (Hz) for PortAudio/null; JACK sets its own")
    parser.add_argument("--model", default=None,
                        help="model folder (default: models/pretrained/default if it holds a "
                             "model, else the procedural source)")
    parser.add_argument("--record", default=None, help="also write the output to this WAV file")
    add_own_sample_blend_argument(parser)
    add_one_shot_refinement_argument(parser)
    parser.add_argument("--polyphony", type=int, default=64, help="sampler voices (settable live)")
    parser.add_argument("--gru", default="auto", choices=("auto", "none"),
                        help="auto: play the model's GRU voice when the model folder has one")
    add_gru_temperature_argument(parser)


def add_own_sample_blend_argument(parser: argparse.ArgumentParser) -> None:
    """`--own-sample-blend on|off|A[,B]`, shared by serve, generate and eval."""
    parser.add_argument("--own-sample-blend", default=None, metavar="on|off|A[,B]",
                        help="one-shot banks (/timbre/audio, --timbre FILE) play the input itself within A "
                             "semitones of its pitch and crossfade to generated notes over B more "
                             "(default and on: 9,2; off: generated notes only)")


def add_one_shot_refinement_argument(parser: argparse.ArgumentParser) -> None:
    """`--one-shot-refinement on|off|STEPS`, shared by serve, generate and eval."""
    parser.add_argument("--one-shot-refinement", default=None, metavar="on|off|STEPS",
                        help="one-shot banks (/timbre/audio, --timbre FILE) refine the input's timbre "
                             "vector by STEPS gradient steps at its own pitch (default and on: 20; live, "
                             "the unrefined bank plays until the refined one lands)")


def own_sample_cache_dir(blend):
    """The bank cache of a server whose own-sample blend is `blend`: "auto" (the shared cache) for
    the shipped setting, else a sibling folder per setting, so cached one-shot banks never mix settings."""
    from models.own_sample_blend import DEFAULT_BLEND, blend_text  # run-time imports: subcommand modules load fast
    from rt_engine.banks.bank_cache import default_cache_dir

    if blend == DEFAULT_BLEND:
        return "auto"
    base = default_cache_dir()
    return base.with_name(f"{base.name}-own-sample-{blend_text(blend).replace(',', '-')}")


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """`os.environ[name] = value` inside the block, restored after."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _say(text: str) -> None:
    print(text, flush=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals(action) -> Iterator[None]:
    """SIGINT and SIGTERM handled by `action` inside the block, the previous handlers restored
    after it (no change outside the main thread, where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, action)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interruptible():
    """Inside: SIGINT and SIGTERM raise KeyboardInterrupt, also when the process was started
    with SIGINT ignored (Python keeps an inherited SIG_IGN), so `finally` blocks clean up."""
    return _stop_signals(_interrupt)


def uninterruptible():
    """Inside: SIGINT and SIGTERM are ignored (a clean-up in progress finishes)."""
    return _stop_signals(signal.SIG_IGN)


def network_warning(bind: str, port: int, allow, password: str | None) -> str | None:
    """The loud start-up line when OSC listens beyond this machine, else None."""
    if is_loopback(bind):
        return None
    who = f"hosts in {', '.join(allow)}" if allow else "ANY host that can reach this machine"
    udp = "UDP from this machine only, TCP with the password" if password else \
        "no password (see --password)"
    return (f"WARNING: OSC is open to the network on {bind} port {port}: {who} can play, change "
            f"the timbre and read status; {udp}")


def main(args: argparse.Namespace) -> int:
    with interruptible():
        return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from rt_engine.io.audio_backends import Recorder, open_backend  # run-time import: subcommand modules load fast (rt_engine.cli)
    from rt_engine.banks.bank_manager import BankManager
    from rt_engine.banks.bank_worker import spawn_worker
    from rt_engine.core.engine import Engine, load_kernels
    from rt_engine.io.midi_input import MidiInput
    from rt_engine.osc.osc_server import OscServer
    from rt_engine.osc.sound_access import SoundAccess, default_sound_dirs
    from models.one_shot_refinement import REFINEMENT_ENVIRONMENT, REFINEMENT_STEPS, parse_refinement
    from models.own_sample_blend import BLEND_ENVIRONMENT, DEFAULT_BLEND, blend_text, parse_blend

    try:
        blend = DEFAULT_BLEND if args.own_sample_blend is None else parse_blend(args.own_sample_blend)
    except ValueError as error:
        print(f"latentsynth serve: --own-sample-blend: {error}", file=sys.stderr)
        return 2
    try:
        steps = REFINEMENT_STEPS if args.one_shot_refinement is None else parse_refinement(args.one_shot_refinement)
    except ValueError as error:
        print(f"latentsynth serve: --one-shot-refinement: {error}", file=sys.stderr)
        return 2
    model_dir = args.model or default_model_dir()
    # the bank worker loads the model while the audio device and the GRU voice start; it reads the
    # blend and the refinement from the environment it is spawned with
    with _environment(BLEND_ENVIRONMENT, blend_text(blend)), _environment(REFINEMENT_ENVIRONMENT, str(steps)):
        pending_worker = spawn_worker(model_dir, own_sample_cache_dir(blend))
    # The audio callback is Python: it needs the GIL back quickly from the control threads.
    sys.setswitchinterval(0.0005)
    try:
        backend = open_backend(args.audio, args.block, args.sample_rate,
                               native=args.audio_callback == "native")
    except (ValueError, RuntimeError) as error:
        pending_worker.kill()
        print(f"latentsynth serve: {error}", file=sys.stderr)
        return 2
    _say(f"bank source: {'model ' + model_dir if model_dir else 'procedural (no model in models/pretrained/default)'}")
    banks = engine = osc = midi = None
    started = False
    try:
        layer = load_stream_layer(model_dir, args.gru, temperature=args.gru_temperature)
        load_kernels(backend.sample_rate)  # while the worker loads the model
        banks = BankManager(model_dir, backend.sample_rate, cache_dir=own_sample_cache_dir(blend),
                            worker=pending_worker)
        engine = Engine(banks, backend.sample_rate, max_block=max(backend.block, 1024),
                        n_voices=args.polyphony, stream_layer=layer)
        recorder = Recorder(args.record, backend.sample_rate) if args.record else None
        if not banks.wait_ready(120.0, include_exact=False):
            print("latentsynth serve: warning: the first bank is still rendering", file=sys.stderr)
        # MIDI opens before the audio callback runs: python-rtmidi holds the GIL through its JACK
        # server calls, which starves (and with JACK MIDI can deadlock) a running Python callback
        midi = MidiInput(engine, ports=args.midi, map_file=args.midi_map, api=args.midi_api)
        native_midi = midi.wants_native_jack() and backend.reads_midi(midi.native, recorder)
        midi_ports = midi.start() if args.midi != "none" and not native_midi else []
        backend.start(engine, recorder)
        started = True
        if native_midi:  # the JACK callback reads the MIDI port (falls back to rtmidi if it cannot)
            midi_ports = midi.start_native(backend)
        engine.midi_input = midi.path
        note = f" ({backend.callback_note})" if backend.callback_note else ""
        _say(f"audio: {backend.name}, {backend.sample_rate} Hz, block {backend.block} frames, "
             f"{backend.callback} callback{note}; "
             f"latency added {engine.latency_s * 1000:.2f} ms (one block of scheduling "
             f"{backend.block / backend.sample_rate * 1000:.2f} ms + output "
             f"{backend.output_latency_s * 1000:.2f} ms)")
        _say(f"GRU voice: on, render-ahead {layer.latency_frames / backend.sample_rate * 1000:.1f} ms, "
             f"temperature {layer.temperature:g}" if layer else "GRU voice: off")
        _say(f"MIDI ports: {', '.join(midi_ports) if midi_ports else 'none'}")
        _say(f"MIDI input: {midi.path}")
        sounds = SoundAccess(args.sounds or default_sound_dirs())
        config = GuardConfig(tcp_idle_s=args.tcp_idle_s, tcp_partial_s=args.tcp_partial_s)
        osc = OscServer(engine, port=args.osc_port, host=args.bind, reply_port=args.reply_port,
                        config=config, allow=args.allow, password=args.password, check_sound=sounds.check,
                        native_lane=engine.native_block is not None)
        osc.start()
        _say(f"OSC: udp {osc.udp_port}, tcp {osc.tcp_port} on {args.bind}; note lane "
             f"{osc.server_status()['osc_note_lane']}; sound files from {', '.join(sounds.dirs)}")
        warning = network_warning(args.bind, osc.udp_port, args.allow, args.password)
        if warning:
            _say(warning)
            print(warning, file=sys.stderr, flush=True)
        gc.collect()
        gc.freeze()  # start-up objects leave the collector's view: no long collections in callbacks
        _say("ready")
        while True:  # until SIGINT/SIGTERM raise KeyboardInterrupt. Short sleeps: a signal the
            time.sleep(0.1)  # kernel hands to another thread does not interrupt a long wait here
    except KeyboardInterrupt:
        pass
    except (ValueError, RuntimeError, OSError) as error:
        print(f"latentsynth serve: {error}", file=sys.stderr)
        return 2
    finally:
        with uninterruptible():  # a second Ctrl-C must not cut the clean-up short
            if osc is not None:
                osc.stop()
            if started:
                backend.stop()
            if midi is not None:  # after the audio callback stopped (see above)
                midi.stop()
            if engine is not None:
                engine.close()
            elif banks is not None:
                banks.close()
            else:
                pending_worker.kill()
            _say("stopped")
    return 0

"""Xruns of `latentsynth serve --audio jack` (private dummy JACK server, 256-frame periods) over
N seconds while banks re-render continuously and a 1 kHz OSC stream plays. Prints JSON.

The OSC stream alternates note-ons and note-offs (random pitches, up to ~30 voices held) at
1 kHz; every 0.3 s the timbre jumps to a fresh random point, so the bank worker always has grid
nodes and an exact bank to render. At the end `/status` is read back: xruns (JACK's count),
callback load, commands, drops and late commands. Baselines in the same run, `--idle` seconds
each: the dummy server with a trivial Python client writing silence (what the machine costs),
then the idle server before the stream starts.

Usage: python bench/stability.py [--seconds 300] [--idle 5] [--rate-hz 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rt_engine.osc.osc_codec import decode_packet, encode_message  # noqa: E402


def _status(sock: socket.socket, port: int) -> dict:
    """Ask /status and parse /status.reply's key/value pairs."""
    sock.sendto(encode_message("/status"), ("127.0.0.1", port))
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            message = decode_packet(sock.recv(65536))
        except socket.timeout:
            continue
        if message.address == "/status.reply":
            values = list(message.args)
            return dict(zip(values[0::2], values[1::2]))
    raise RuntimeError("no /status.reply")


def _minimal_client_xruns(server_name: str, seconds: float) -> int:
    """Xruns of the dummy server with only a trivial Python client writing silence: what the
    machine itself costs (baseline)."""
    import jack

    client = jack.Client("latentsynth-baseline", no_start_server=True, servername=server_name)
    port = client.outports.register("out_1")
    xruns = []
    client.set_process_callback(lambda frames: port.get_array().fill(0.0))
    client.set_xrun_callback(lambda delay: xruns.append(delay))
    client.activate()
    time.sleep(seconds)
    client.deactivate()
    client.close()
    return len(xruns)


def main() -> None:
    from tests.support.jack_harness import DummyJackServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the loaded run (s)")
    parser.add_argument("--idle", type=float, default=5.0, help="idle baseline before it (s)")
    parser.add_argument("--rate-hz", type=float, default=1000.0, help="OSC messages per second")
    args = parser.parse_args()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rng = np.random.default_rng(0)
    with DummyJackServer(f"latentsynth-stability-{os.getpid()}", 48_000, 256) as server:
        jack_realtime = server.realtime
        minimal_xruns = _minimal_client_xruns(server.name, args.idle)
        serve = subprocess.Popen(
            [sys.executable, "-m", "rt_engine.cli", "serve", "--audio", "jack", "--midi", "none",
             "--osc-port", str(port), "--osc-host", "127.0.0.1"],
            env=server.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for line in serve.stdout:
            if "ready" in line:
                break
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        try:
            idle_start = _status(sock, port)
            time.sleep(args.idle)
            idle_end = _status(sock, port)
            sent, held, next_jump = 0, [], 0.0
            period = 1.0 / args.rate_hz
            start = time.perf_counter()
            deadline = start
            while (now := time.perf_counter()) - start < args.seconds:
                if now - start >= next_jump:
                    message = encode_message("/timbre/xy", (float(rng.uniform()), float(rng.uniform()), 0.05))
                    next_jump += 0.3
                elif len(held) > 30 or (held and rng.uniform() < 0.5):
                    message = encode_message("/note/off", (float(held.pop(int(rng.integers(len(held))))),))
                else:
                    held.append(float(rng.integers(36, 96)))
                    message = encode_message("/note/on", (held[-1], float(rng.integers(40, 127))))
                sock.sendto(message, ("127.0.0.1", port))
                sent += 1
                deadline += period
                pause = deadline - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            elapsed = time.perf_counter() - start
            time.sleep(0.5)
            end = _status(sock, port)
        finally:
            sock.close()
            serve.terminate()
            serve.wait(30)
    result = {
        "seconds": round(elapsed, 2), "period": 256, "rate": 48_000,
        "jack_realtime": jack_realtime,
        "osc_messages_sent": sent, "osc_rate_hz": round(sent / elapsed, 1),
        "baseline_minimal_client": {"seconds": args.idle, "xruns": minimal_xruns},
        "serve_idle": {"seconds": args.idle, "xruns": int(idle_end["xruns"] - idle_start["xruns"])},
        "xruns": int(end["xruns"] - idle_end["xruns"]),
        "cpu_load_end": end.get("cpu"), "cpu_peak": end.get("cpu_peak"),
        "commands": end.get("commands"), "dropped": end.get("dropped"), "late": end.get("late"),
        "bank_state_end": end.get("bank_state"), "voices_end": end.get("voices"),
    }
    result["target_zero_xruns"] = result["xruns"] == 0
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

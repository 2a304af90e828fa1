"""OSC -> audio onset latency of `latentsynth serve --audio jack` through a private dummy JACK
server. Prints JSON; writes bench/out/latency.png.

A capture client in the same JACK graph records the server's output and the wall-clock time of
each cycle. Each trial sends `/note/on 69 100` over UDP, finds the first non-zero frame, and
measures from the send to the cycle that rendered it (plus the frame's offset in the block);
then it `/panic`s and waits for silence. The measured latency is inside the graph, so it
excludes the device's playback buffer: the target is at most one block + 1 ms on top of it
(an undated command waits for the next block start). The baseline in the same run is the block
period itself.

Usage: python bench/latency.py [--trials 60] [--period 256] [--rate 48000]
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


def _osc(address: str, *args) -> bytes:
    from pythonosc.osc_message_builder import OscMessageBuilder

    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


def main() -> None:
    from rt_engine.audio_backends import DummyJackServer, JackCapture

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--period", type=int, default=256, help="JACK period (frames)")
    parser.add_argument("--rate", type=int, default=48_000, help="JACK rate (Hz)")
    args = parser.parse_args()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with DummyJackServer(f"latentsynth-bench-{os.getpid()}", args.rate, args.period) as server:
        jack_realtime = server.realtime
        serve = subprocess.Popen(
            [sys.executable, "-m", "rt_engine.cli", "serve", "--audio", "jack", "--midi", "none",
             "--osc-port", str(port), "--osc-host", "127.0.0.1"],
            env=server.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        declared = ""
        for line in serve.stdout:
            if line.startswith("audio:"):
                declared = line.strip()
            if "ready" in line:
                break
        capture = JackCapture(server.name, ["latentsynth:out_1"], seconds=args.trials * 0.3 + 10)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        note_on, panic = _osc("/note/on", 69.0, 100.0), _osc("/panic")
        latencies = []
        try:
            time.sleep(0.5)
            for _ in range(args.trials):
                sent_at = capture.now()
                sent_s = time.perf_counter()
                sender.sendto(note_on, ("127.0.0.1", port))
                time.sleep(0.08)
                onset = capture.onset_after(sent_at - 2 * args.period, threshold=1e-5)
                if onset >= 0:
                    latencies.append((capture.wall_time_of(onset) - sent_s) * args.rate)
                sender.sendto(panic, ("127.0.0.1", port))
                time.sleep(0.12 + np.random.uniform(0, args.period / args.rate))
        finally:
            sender.close()
            capture.close()
            serve.terminate()
            serve.wait(30)
    frames = np.array(latencies, dtype=float)
    block_ms = args.period / args.rate * 1000
    ms = frames / args.rate * 1000
    result = {
        "rate": args.rate, "period": args.period, "trials": args.trials, "onsets_found": int(frames.size),
        "jack_realtime": jack_realtime,
        "declared": declared,
        "baseline_block_ms": block_ms,
        "latency_ms": {"median": float(np.median(ms)), "p99": float(np.percentile(ms, 99)),
                       "min": float(ms.min()), "max": float(ms.max())} if frames.size else None,
        "latency_blocks": {"median": float(np.median(frames) / args.period),
                           "p99": float(np.percentile(frames, 99) / args.period)} if frames.size else None,
    }
    if frames.size:
        result["target_one_block_plus_1ms"] = bool(np.percentile(ms, 99) <= block_ms + 1.0)
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            out = Path(__file__).resolve().parent / "out"
            out.mkdir(exist_ok=True)
            plt.figure(figsize=(5, 3.5))
            plt.hist(ms, bins=30)
            plt.axvline(block_ms + 1.0, color="r", linestyle="--", label="one block + 1 ms")
            plt.xlabel("OSC -> onset in the JACK graph (ms)")
            plt.ylabel("trials")
            plt.legend()
            plt.tight_layout()
            plt.savefig(out / "latency.png", dpi=100)
        except ImportError:
            pass
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

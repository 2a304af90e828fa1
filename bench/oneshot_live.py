"""Benchmark: `/timbre/audio` -> `/done` on a live `latentsynth serve`, with a note held.

Starts a real `serve` (null audio device, no MIDI, no GRU voice unless `--gru auto`) on the given
model, holds MIDI 60,
then sends `/timbre/audio` for `--repeats` distinct one-shot WAVs (plucked tones of different
brightness; the server gets an empty bank cache of its own, so every bank is rendered, and
`ready_s` includes rendering the first grid banks) over UDP OSC from one socket, and times each
`/done` reply; after each it polls `/status` every 150 ms until `bank_state` is `ready` (the whole
88-key bank rendered: with test-time refinement, the refined bank) and takes the server's own
`bank_seconds` (request to last row) as full_bank_s. Baseline, measured in the same run on the same
server: `/sync` -> `/synced`, the OSC round trip alone.

Prints JSON: done_ms (each and median), full_bank_s (each and median), osc_round_trip_ms (median),
ready_s (serve start to `ready`). Targets: done median <= 50 ms; the whole bank <= 1 s unrefined
(`--one-shot-refinement off`), <= 1.5 s refined (the default).

    python3 bench/oneshot_live.py [--model DIR] [--repeats 5] [--one-shot-refinement on|off|STEPS] [--gru auto]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.timbre_sources import DEFAULT_MODEL_DIR  # noqa: E402 (after the checkout joins sys.path)
from rt_engine.osc.osc_codec import decode_packet, encode_message  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402

HELD_PITCH = 60
STATUS_POLL_S = 0.15
"""Polling period of `/status` while a bank renders (s): the resolution of full_bank_s, kept
within the server's reply budget per source."""


def pluck(path: Path, f0_hz: float, brightness: float, rate: int = 44_100, seconds: float = 1.0) -> None:
    """A decaying harmonic tone (float32 WAV): `brightness` in (0, 1] sets the harmonic roll-off."""
    t = np.arange(int(rate * seconds)) / rate
    harmonics = np.arange(1, int(rate / 2 // f0_hz))
    amplitude = brightness ** (harmonics - 1) / harmonics
    tone = (amplitude[:, None] * np.sin(2 * np.pi * f0_hz * np.outer(harmonics, t))).sum(0)
    soundfile.write(path, (0.5 * tone / np.abs(tone).max() * np.exp(-3.0 * t)).astype(np.float32), rate)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    """One UDP socket: replies come back to it."""

    def __init__(self, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = port

    def send(self, address: str, *args) -> None:
        self.sock.sendto(encode_message(address, args), ("127.0.0.1", self.port))

    def wait(self, addresses: tuple[str, ...], timeout_s: float = 30.0):
        """The next reply whose address is one of `addresses` (others are skipped)."""
        self.sock.settimeout(timeout_s)
        while True:
            message = decode_packet(self.sock.recv(65536))
            if message.address in addresses:
                return message

    def status(self) -> dict | None:
        """The `/status` reply as a dict; None when none came within 1 s (the reply budget)."""
        self.send("/status")
        try:
            reply = self.wait(("/status.reply",), timeout_s=1.0)
        except socket.timeout:
            return None
        return dict(zip(reply.args[0::2], reply.args[1::2]))

    def bank_state(self) -> str | None:
        """`/status`'s bank_state; None when no reply came within 1 s."""
        status = self.status()
        return None if status is None else status["bank_state"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one-shot-refinement", default="on", metavar="on|off|STEPS",
                        help="the server's test-time refinement of one-shots (default on)")
    parser.add_argument("--gru", default="none", choices=("none", "auto"),
                        help="auto: the model's GRU voice plays the held note too (its load beside the bank worker)")
    args = parser.parse_args()
    refined = args.one_shot_refinement != "off" and args.one_shot_refinement != "0"
    with tempfile.TemporaryDirectory() as folder:
        sounds = Path(folder)
        port = _free_port()
        command = [sys.executable, "-m", "rt_engine.cli", "serve", "--audio", "null", "--midi", "none",
                   "--gru", args.gru, "--model", args.model, "--osc-port", str(port), "--sounds", str(sounds),
                   "--one-shot-refinement", args.one_shot_refinement]
        started = time.perf_counter()
        environment = {**os.environ, "LATENTSYNTH_CACHE": str(sounds / "bank_cache")}  # nothing cached
        server = ServeProcess(command, port, environment)
        ready_s = time.perf_counter() - started
        try:
            client = Client(port)
            deadline = time.monotonic() + 120.0
            while client.bank_state() != "ready" and time.monotonic() < deadline:
                time.sleep(STATUS_POLL_S)  # the initial grid banks
            round_trips = []
            for k in range(10):
                sent = time.perf_counter()
                client.send("/sync", k)
                client.wait(("/synced",))
                round_trips.append(1000.0 * (time.perf_counter() - sent))
            client.send("/note/on", float(HELD_PITCH), 100.0)
            done_ms, full_bank_s = [], []
            for k in range(args.repeats):
                path = sounds / f"pluck{k}.wav"
                pluck(path, 196.0 * 2 ** (k / 12), 0.3 + 0.6 * k / max(args.repeats - 1, 1))
                time.sleep(0.3)
                sent = time.perf_counter()
                client.send("/timbre/audio", str(path))
                reply = client.wait(("/done", "/fail"))
                if reply.address == "/fail":
                    raise RuntimeError(f"/timbre/audio failed: {reply.args}")
                done_ms.append(1000.0 * (time.perf_counter() - sent))
                status = client.status()
                while (status is None or status["bank_state"] != "ready") and time.perf_counter() - sent < 30.0:
                    time.sleep(STATUS_POLL_S)
                    status = client.status()
                full_bank_s.append(float(status["bank_seconds"]))
            client.send("/note/off", float(HELD_PITCH))
        finally:
            server.stop()
    print(json.dumps({
        "model": args.model,
        "held_pitch": HELD_PITCH,
        "done_ms": [round(v, 1) for v in done_ms],
        "done_ms_median": round(float(np.median(done_ms)), 1),
        "full_bank_s": [round(v, 3) for v in full_bank_s],
        "full_bank_s_median": round(float(np.median(full_bank_s)), 3),
        "osc_round_trip_ms_median": round(float(np.median(round_trips)), 2),
        "ready_s": round(ready_s, 2),
        "one_shot_refinement": args.one_shot_refinement, "gru": args.gru,
        "targets": {"done_ms_median": 50.0, "full_bank_s": 1.5 if refined else 1.0},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

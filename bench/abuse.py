"""A hostile client on the same machine against `latentsynth serve` (127.0.0.1; null audio clock,
or with `--audio jack` a private JACK dummy server at 48 kHz / 128 frames, where the native OSC
note lane runs): one JSON line per attack. Prints JSON.

Per attack: bytes sent and received back (and their ratio), what the server counted, RSS of the
server before and after, xruns added. The flood attacks also measure a bystander's `/sync` round
trip (p50/p99) during the attack against a baseline measured in the same run with no flood.

Attacks: a 64 kB bundle of /status; a 60 kB unknown address; 31 /notify registrations then one
bundle of /status; 4,800 far-future dated /note/off from 10 clients then an immediate note and
/panic; a UDP flood of /note/pitch; a UDP flood of lone /note/on + /note/off (the note lane's
messages: its per-source bucket, the voices and the bystander); 10,000 notes held by distinct ids, then released by id (voices
stay within the polyphony; none left after; with a model that has a GRU voice, e.g. `--model
models/pretrained/default`, its underruns and the voices it shed to keep up); 100 idle TCP connections then a fresh client; a TCP client
that never reads its replies; /timbre/audio of a file outside the allowed folders.

Usage: python bench/abuse.py [--model DIR] [--flood-s 3] [--audio null|jack]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rt_engine.osc.osc_codec import IMMEDIATE, decode_packet, encode_bundle, encode_message, unix_to_timetag  # noqa: E402
from tests.support.jack_harness import DummyJackServer  # noqa: E402
from tests.support.osc_udp import Udp, procedural_model, rss_kb, tcp_sync  # noqa: E402


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sync_percentiles_ms(client: Udp, seconds: float, flood=None) -> dict:
    """Bystander /sync round trips for `seconds`, calling `flood()` between them."""
    trips, lost, t_end = [], 0, time.monotonic() + seconds
    while time.monotonic() < t_end:
        if flood is not None:
            flood()
        try:
            trips.append(client.sync_s(len(trips) + lost))
        except socket.timeout:
            lost += 1
    ms = np.array(trips) * 1000.0
    return {"sync_p50_ms": round(float(np.percentile(ms, 50)), 3) if trips else None,
            "sync_p99_ms": round(float(np.percentile(ms, 99)), 3) if trips else None,
            "syncs": len(trips), "syncs_lost": lost}


class Attack:
    """Bookkeeping of one attack: status and RSS before, a JSON line after."""

    def __init__(self, name: str, pid: int, observer: Udp):
        self.name, self.pid, self.observer = name, pid, observer
        self.before, self.rss_before = observer.status(), rss_kb(pid)

    def report(self, sent: int, received: int, **extra) -> None:
        after = self.observer.status()
        counters = {k: after[k] - self.before.get(k, 0) for k in after
                    if k.startswith("osc_") and isinstance(after[k], int) and after[k] != self.before.get(k, 0)}
        print(json.dumps({
            "attack": self.name, "request_bytes": sent, "reply_bytes": received,
            "reply_ratio": round(received / sent, 3) if sent else None,
            "xruns_added": after["xruns"] - self.before["xruns"],
            "dropped_added": after["dropped"] - self.before["dropped"],
            "rss_before_kb": self.rss_before, "rss_after_kb": rss_kb(self.pid), **extra,
            "counters": counters}), flush=True)


def _received(*clients: Udp) -> int:
    return sum(sum(map(len, c.drain(0.3))) for c in clients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the procedural source)")
    parser.add_argument("--flood-s", type=float, default=3.0, help="length of each flood (s)")
    parser.add_argument("--audio", choices=("null", "jack"), default="null",
                        help="the server's audio: the null clock, or a private JACK dummy server "
                             "(48 kHz / 128 frames; the native audio callback and OSC note lane)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="latentsynth-abuse-"))
    model = args.model or str(procedural_model(work / "model"))
    (work / "sounds").mkdir()
    if args.audio == "jack":
        with DummyJackServer(f"latentsynth-abuse-{os.getpid()}", 48_000, 128) as server:
            _serve_and_attack(model, work, args, ["--audio", "jack"], server.env)
    else:
        _serve_and_attack(model, work, args, ["--audio", "null"], None)


def _serve_and_attack(model: str, work: Path, args, audio: list[str], env: dict | None) -> None:
    port = _free_port()
    serve = subprocess.Popen([sys.executable, "-m", "rt_engine.cli", "serve", *audio, "--midi", "none",
                              "--model", model, "--osc-port", str(port), "--sounds", str(work / "sounds")],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    started = []
    for line in serve.stdout:
        if line.strip() == "ready":
            break
        started.append(line.strip())
    observer = Udp(port, timeout_s=2.0)
    try:
        status = observer.status()
        print(json.dumps({"audio": args.audio, "audio_callback": status.get("audio_callback"),
                          "osc_note_lane": status.get("osc_note_lane"),
                          "start_up": [line for line in started if line.startswith(("audio:", "OSC"))]}),
              flush=True)
        _run_attacks(serve.pid, port, observer, args.flood_s)
    finally:
        observer.close()
        serve.terminate()
        serve.wait(30)


def _run_attacks(pid: int, port: int, observer: Udp, flood_s: float) -> None:
    status = encode_message("/status")

    attack, client = Attack("status_bundle_64kB", pid, observer), Udp(port)
    client.send(encode_bundle(IMMEDIATE, [status] * 4000))
    attack.report(client.sent, _received(client))

    attack, client = Attack("unknown_address_60kB", pid, observer), Udp(port)
    client.message("/" + "x" * 60_000)
    attack.report(client.sent, _received(client))

    attack, client = Attack("unknown_preset", pid, observer), Udp(port)
    client.message("/timbre/preset", "no-such-preset")
    attack.report(client.sent, _received(client))

    attack = Attack("notify_31_then_status_bundle", pid, observer)
    watchers = [Udp(port) for _ in range(31)]
    for watcher in watchers:
        watcher.message("/notify", 1)
    accepted = sum(decode_packet(p).address == "/done" for w in watchers for p in w.drain(0.1)[:1])
    registration_bytes = sum(w.sent for w in watchers)
    client = Udp(port)
    client.send(encode_bundle(IMMEDIATE, [status] * 1000))
    attack.report(client.sent, _received(client, *watchers), notify_accepted=accepted,
                  registration_bytes=registration_bytes)
    for watcher in watchers:
        watcher.message("/notify", 0)
        watcher.close()

    attack = Attack("dated_4800_far_future_then_note_and_panic", pid, observer)
    far = unix_to_timetag(time.time() + 50.0)
    flooders = [Udp(port) for _ in range(10)]
    for flooder in flooders:
        for _ in range(10):
            flooder.send(encode_bundle(far, [encode_message("/note/off", [60.0])] * 48))
    sent = sum(f.sent for f in flooders)
    received = _received(*flooders)
    observer.message("/note/on", 64.0, 100.0, 7)
    time.sleep(0.2)
    voices = observer.status()["voices"]
    observer.message("/panic")
    time.sleep(0.2)
    after = observer.status()
    attack.report(sent, received, immediate_note_voices=voices, pending_after_panic=after["pending"],
                  voices_after_panic=after["voices"])

    attack = Attack("udp_flood_note_pitch", pid, observer)
    baseline = _sync_percentiles_ms(observer, flood_s)
    flooder = Udp(port)
    flooder.sock.setblocking(False)
    during = _sync_percentiles_ms(observer, flood_s, _flood(flooder, port, [encode_message("/note/pitch", [1, 61.0])]))
    flooder.sock.setblocking(True)
    attack.report(flooder.sent, _received(flooder), baseline=baseline, during_flood=during)

    attack = Attack("udp_flood_lone_note_on_off", pid, observer)
    baseline = _sync_percentiles_ms(observer, flood_s)
    flooder = Udp(port)
    flooder.sock.setblocking(False)
    pair = [encode_message("/note/on", [60.0, 90.0]), encode_message("/note/off", [60.0])]
    during = _sync_percentiles_ms(observer, flood_s, _flood(flooder, port, pair))
    flooder.sock.setblocking(True)
    flooder.message("/note/off", 60.0)
    time.sleep(0.3)
    attack.report(flooder.sent, _received(flooder), baseline=baseline, during_flood=during,
                  voices_after=observer.status()["voices"])

    attack = Attack("held_ids_10000_then_release", pid, observer)
    player = Udp(port)
    ids = range(1000, 11_000)

    def paced(messages) -> float:
        """Send in bundles of 15 every 10 ms (1,500 messages/s, inside the per-source rate); seconds taken."""
        started, messages = time.monotonic(), list(messages)
        for first in range(0, len(messages), 15):
            player.send(encode_bundle(IMMEDIATE, messages[first:first + 15]))
            time.sleep(0.01)
        return round(time.monotonic() - started, 2)

    player.send(encode_message("/mix/gru", [1.0]))  # a GRU voice, when the model has one, is computed
    time.sleep(0.1)
    before = observer.status()
    on_s = paced(encode_message("/note/on", [float(48 + i % 36), 90.0, i]) for i in ids)
    time.sleep(0.3)
    held = observer.status()
    off_s = paced(encode_message("/note/off", [i]) for i in ids)
    time.sleep(0.5)
    after = observer.status()
    attack.report(player.sent, _received(player), note_on_s=on_s, note_off_s=off_s,
                  voices_while_held=held["voices"], voices_after_release=after["voices"],
                  gru=after["gru_kernel"], gru_underruns_added=after["gru_underruns"] - before["gru_underruns"],
                  gru_shed_voices=after["gru_shed_voices"] - before["gru_shed_voices"],
                  sync_after=_sync_percentiles_ms(observer, 1.0))

    player.send(encode_message("/mix/gru", [0.0]))
    attack = Attack("tcp_100_idle_then_fresh_client", pid, observer)
    idle = []
    for _ in range(100):
        try:
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=2.0))
        except OSError:
            break
    time.sleep(6.0)  # longer than the partial-packet timeout: idle connections may be evicted
    fresh_ok = _tcp_sync(port)
    attack.report(0, 0, connections_opened=len(idle), fresh_client_served=fresh_ok)
    for sock in idle:
        sock.close()

    attack = Attack("tcp_slow_reader", pid, observer)
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    slow.settimeout(1.0)
    bundle = encode_bundle(IMMEDIATE, [status] * 400)
    frame, sent = struct.pack(">i", len(bundle)) + bundle, 0

    def feed() -> None:
        nonlocal sent
        try:
            slow.sendall(frame)
            sent += len(frame)
        except OSError:
            pass

    during = _sync_percentiles_ms(observer, flood_s, feed)
    slow.close()
    attack.report(sent, 0, during_flood=during)

    attack, client = Attack("timbre_audio_outside_folders", pid, observer), Udp(port)
    client.message("/timbre/audio", "/etc/passwd")
    reply = client.receive()
    attack.report(client.sent, _received(client) + len(encode_message(reply.address, reply.args)),
                  reply=[reply.address, *reply.args])


def _flood(flooder: Udp, port: int, packets: list[bytes]):
    """A callable that sends up to 200 datagrams, cycling through `packets`, from the non-blocking
    `flooder` (stopping early when its socket buffer is full)."""
    def flood() -> None:
        for k in range(200):
            packet = packets[k % len(packets)]
            try:
                flooder.sock.sendto(packet, ("127.0.0.1", port))
                flooder.sent += len(packet)
            except BlockingIOError:
                return
    return flood


def _tcp_sync(port: int) -> bool:
    """Whether a fresh TCP client gets its /sync answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            return tcp_sync(sock, 5)
    except OSError:
        return False


if __name__ == "__main__":
    main()

"""The client patches against a real server: sclang and pd run headless and play through OSC; the
server's /status counters confirm what arrived. The Max patch is checked structurally.

The server is `latentsynth serve --audio null --midi none --osc-port PORT` when the serve command
exists (set LATENTSYNTH_TEST_SERVER=fake to force the fallback), else this module run as a script:
an OscServer over the recording fake engine, which prints `ready` the same way.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rt_engine.osc.osc_registry import REGISTRY, ServerHooks, dispatch
from rt_engine.osc.osc_server import OscServer
from tests.serve_process import ServeProcess
from tests.test_osc_registry import RecordingEngine, Replies

REPO = Path(__file__).resolve().parents[1]
PATCHES = REPO / "patches"
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A port number free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def serve_fake(port: int) -> None:
    """Run an OscServer over RecordingEngine until SIGTERM (the fallback server)."""
    engine = RecordingEngine(presets=("organ", "flute", "brass"))
    server = OscServer(engine, port=port, host="127.0.0.1")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"OSC udp {server.udp_port} tcp {server.tcp_port} (recording fake engine)", flush=True)
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


class ServerProcess(ServeProcess):
    """The real `latentsynth serve --audio null`, or with LATENTSYNTH_TEST_SERVER=fake the
    recording fake engine behind a real OscServer."""

    def __init__(self, port: int):
        self.fake = os.environ.get("LATENTSYNTH_TEST_SERVER") == "fake"
        cmd = ([sys.executable, "-m", "tests.test_patches", str(port)] if self.fake else
               [sys.executable, "-m", "rt_engine.cli", "serve", "--audio", "null", "--midi", "none",
                "--osc-port", str(port)])
        env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        super().__init__(cmd, port, env, READY_TIMEOUT_S)


@pytest.fixture(scope="module")
def server():
    process = ServerProcess(free_port())
    yield process
    process.stop()


def delta(before: dict, after: dict, key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def wait_settled(server: ServerProcess, seconds: float = 0.5) -> dict:
    """Status once timed commands have had time to play."""
    time.sleep(seconds)
    return server.status()


# ----------------------------------------------------------------------------- SuperCollider

SC_NOTE_ONS = 2 + 8 + 2  # direct, the Pbind phrase, two playNote
SC_TIMED = 8 * 3 + 2 * 2  # the phrase: on, off, xy per event; playNote: on, off


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("sclang") is None, reason="sclang is not installed")
def test_supercollider_client_plays_notes_and_a_timetagged_morph(server):
    before = server.status()
    env = dict(os.environ, LATENTSYNTH_PORT=str(server.port), QT_QPA_PLATFORM="offscreen",
               QTWEBENGINE_DISABLE_SANDBOX="1")
    result = subprocess.run(["sclang", str(PATCHES / "supercollider" / "test_client.scd")], env=env,
                            capture_output=True, text=True, timeout=120, cwd=PATCHES / "supercollider")
    lines = [line.strip() for line in result.stdout.splitlines() if line.startswith("LS:")]
    assert "LS:end" in lines, result.stdout[-3000:] + result.stderr[-2000:]
    assert lines.count("LS:synced true") == 2 and "LS:gui ok" in lines
    fails = [line for line in lines if line.startswith("LS:fail")]
    assert any(f.startswith("LS:fail /note/on") and "velocity" in f for f in fails), fails
    assert "LS:fail /no/such/address Command not found" in fails
    assert any(line.startswith("LS:status") and "voices=" in line for line in lines)
    after = wait_settled(server)
    assert delta(before, after, "osc_failed") == 2
    assert delta(before, after, "commands") >= 2 * SC_NOTE_ONS
    assert delta(before, after, "late") == 0  # timetagged bundles arrived ahead of their time
    if server.fake:
        assert delta(before, after, "calls_note_on") == SC_NOTE_ONS
        assert delta(before, after, "calls_note_off") == SC_NOTE_ONS
        assert delta(before, after, "timed") == SC_TIMED


# ----------------------------------------------------------------------------- Pure Data

PD_NOTE_ONS, PD_NOTE_OFFS = 3, 3


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("pd") is None, reason="pd is not installed")
def test_pd_abstractions_send_float_only_messages_the_server_accepts(server):
    before = server.status()
    result = subprocess.run(["pd", "-nogui", "-noaudio", "-stderr", "-open", "latentsynth-test.pd",
                             "-send", f"ls-test-start {server.port}"], capture_output=True, text=True,
                            timeout=60, cwd=PATCHES / "pd")
    output = result.stdout + result.stderr
    lines = [line.strip() for line in output.splitlines() if line.startswith("LS")]
    assert "LS: synced 1" in lines and "LS: synced 2" in lines, output
    assert not any("timeout" in line for line in lines), output
    fails = [line for line in lines if line.startswith("LS: fail")]
    assert len(fails) == 2 and fails[0].startswith("LS: fail /timbre/xy") and "integer" in fails[1], fails
    assert any(line.startswith("LS: status voices") for line in lines)
    assert "error" not in output.lower().replace("errors", ""), output
    after = wait_settled(server)
    assert delta(before, after, "osc_failed") == 2
    assert delta(before, after, "commands") >= PD_NOTE_ONS + PD_NOTE_OFFS
    if server.fake:
        assert delta(before, after, "calls_note_on") == PD_NOTE_ONS
        assert delta(before, after, "calls_note_off") == PD_NOTE_OFFS
        assert delta(before, after, "calls_note_pitch") == 1


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("pd") is None, reason="pd is not installed")
def test_pd_instrument_panel_loads_without_errors():
    result = subprocess.run(["pd", "-nogui", "-noaudio", "-stderr", "-open", "latentsynth.pd", "-send",
                             "pd quit"], capture_output=True, text=True, timeout=30, cwd=PATCHES / "pd")
    assert result.returncode == 0 and "error" not in (result.stdout + result.stderr).lower()


def test_pd_patches_send_only_registered_addresses():
    addresses = set()
    for path in (PATCHES / "pd").glob("*.pd"):
        addresses |= set(re.findall(r"^#X obj -?\d+ -?\d+ ls-send (\S+?);", path.read_text(), re.M))
    assert addresses and addresses <= set(REGISTRY), addresses - set(REGISTRY)
    assert {"/note/on", "/note/off", "/timbre/xy", "/gru/glide", "/mix/sampler", "/mix/gru", "/master/gain",
            "/status"} <= addresses


# ----------------------------------------------------------------------------- Max

def _max_patcher() -> dict:
    return json.loads((PATCHES / "max" / "latentsynth.maxpat").read_text())["patcher"]


def _form_accepts(address: str, args: list[str]) -> bool:
    for form in REGISTRY[address].forms:
        rest = args
        if form.keyword is not None:
            if not args or args[0] != form.keyword:
                continue
            rest = args[1:]
        n_required = sum(not spec.optional for spec in form.args)
        if n_required <= len(rest) <= len(form.args):
            return True
    return False


def _max_value(token: str):
    try:
        return int(token)
    except ValueError:
        try:
            return float(token)
        except ValueError:
            return token


def test_max_patch_sends_only_registered_addresses_with_the_right_argument_count():
    patcher = _max_patcher()
    boxes = {b["box"]["id"]: b["box"] for b in patcher["boxes"]}
    (udpsend,) = [i for i, b in boxes.items() if b.get("text", "").startswith("udpsend")]
    feeds_udpsend = {line["patchline"]["source"][0] for line in patcher["lines"]
                     if line["patchline"]["destination"][0] == udpsend}
    osc_boxes = [b for b in boxes.values() if b["maxclass"] == "message" and b.get("text", "").startswith("/")]
    addresses = set()
    for box in osc_boxes:
        address, *args = box["text"].split()
        addresses.add(address)
        assert address in REGISTRY, box["text"]
        assert _form_accepts(address, args), box["text"]
        assert box["id"] in feeds_udpsend, f"{box['text']} is not connected to udpsend"
        if not any("$" in a for a in args):  # literal messages must pass the registry as they are
            replies = Replies()
            hooks = ServerHooks(set_notify=lambda on, port: None)
            ok = dispatch(RecordingEngine(presets=("organ",)), address, [_max_value(a) for a in args], None,
                          replies, hooks)
            assert ok, (box["text"], replies.sent)
    assert {"/note/on", "/timbre/xy", "/gru/glide", "/mix/sampler", "/mix/gru", "/master/gain"} <= addresses
    assert {"kslider", "pictslider"} <= {b["maxclass"] for b in boxes.values()}


def test_max_patch_lines_connect_existing_outlets_and_replies_are_shown():
    patcher = _max_patcher()
    boxes = {b["box"]["id"]: b["box"] for b in patcher["boxes"]}
    for line in patcher["lines"]:
        (src, outlet), (dst, inlet) = line["patchline"]["source"], line["patchline"]["destination"]
        assert outlet < boxes[src]["numoutlets"] and inlet < boxes[dst]["numinlets"], line
    texts = [b.get("text", "") for b in boxes.values()]
    (receive,) = [t for t in texts if t.startswith("udpreceive")]
    port = receive.split()[1]
    assert f"/notify 1 {port}" in texts  # replies are asked for on the port udpreceive listens to
    route = next(t for t in texts if t.startswith("route"))
    assert {"/done", "/fail", "/status.reply"} <= set(route.split()[1:])


if __name__ == "__main__":
    serve_fake(int(sys.argv[1]))

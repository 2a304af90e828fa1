"""The native block path (`rt_engine.io.native_audio`): the same audio, clock and staging as
`Engine.process`, callable as C callbacks; the kernel state table matches the kernel."""
import ctypes
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from numba.core.runtime import _nrt_python, rtsys

from rt_engine.io import native_audio as na
from rt_engine.core import voice_kernel as vk
from rt_engine.io.audio_backends import JackBackend
from rt_engine.core.engine import Engine
from tests.support.static_banks import StaticBanks

RATE = 48_000
PITCHES = [57, 60, 69, 72]


def _engine(n_voices=8):
    t = np.arange(8000) / 16_000
    rows = np.stack([0.9 * np.sin(2 * np.pi * 440.0 * 2 ** ((p - 69) / 12) * t) for p in PITCHES])
    banks = StaticBanks(rows.astype(np.float32), PITCHES, 16_000, RATE)
    return Engine(banks, RATE, max_block=512, n_voices=n_voices)


def _play(engine, render, blocks=40, block=256, resize_at=-1):
    """Notes, bends and a timbre move at fixed frames; returns float32 [2, blocks * block]."""
    engine.note_on(60, 100, note_id=1, at_frame=300)
    engine.note_on(69, 80, at_frame=1000)
    engine.pitch_bend(-1, 1.0, at_frame=2000)
    engine.timbre_xy(0.2, 0.8, 0.05, at_frame=3000)
    engine.note_off(note_id=1, at_frame=6000)
    out = []
    for k in range(blocks):
        if k == resize_at:
            engine.set_polyphony(3)
        out.append(render(block).copy())
    return np.concatenate(out, axis=1)


def test_kernel_state_table_covers_every_render_block_argument():
    names = list(inspect.signature(vk.render_block.py_func).parameters)
    assert len(names) == 2 + len(na.KERNEL_STATE_SPEC)
    engine = _engine()
    assert [(a.dtype, a.ndim) for a in engine.kernel_state()] == [
        (np.dtype(d), n) for d, n in na.KERNEL_STATE_SPEC]


def test_native_block_renders_exactly_what_the_python_path_renders():
    python, native_engine = _engine(), _engine()
    native = na.NativeBlock(native_engine)
    native_engine.native_block = native
    expected = _play(python, python.process, resize_at=10)
    got = _play(native_engine, native.process, resize_at=10)
    assert np.abs(expected).max() > 0.05
    np.testing.assert_array_equal(got, expected)
    assert native.blocks == 40 and native_engine.polyphony == 3
    assert native_engine.status()["voices"] == python.status()["voices"]


def test_native_block_tracks_the_wall_clock_and_measures_its_load():
    engine = _engine()
    native = na.NativeBlock(engine)
    native.process(256)
    epoch = engine._clock[0]
    assert abs(epoch - time.time()) < 0.5
    assert engine._cpu[1] > 0.0
    assert engine.frame == 256


def _fake_jack(native):
    """The compiled JACK callback as a ctypes function, with two fake port buffers and a fake
    jack_port_get_buffer (the "port" is the buffer's address)."""
    buffers = [np.zeros(256, dtype=np.float32) for _ in range(2)]
    get_buffer_type = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32)
    fake_get_buffer = get_buffer_type(lambda port, n: port)
    native.control[na.K_PORT_L], native.control[na.K_PORT_R] = (b.ctypes.data for b in buffers)
    native.control[na.K_PORT_GET_BUFFER] = ctypes.cast(fake_get_buffer, ctypes.c_void_p).value
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)(na.jack_process.address)
    return callback, buffers, fake_get_buffer


def test_jack_callback_is_a_c_function_rendering_into_its_port_buffers():
    python, engine = _engine(), _engine()
    native = na.NativeBlock(engine)
    callback, buffers, _keep = _fake_jack(native)
    for eng in (python, engine):
        eng.note_on(69, 100, at_frame=100)
    assert callback(256, native.address) == 0
    expected = python.process(256)
    np.testing.assert_array_equal(buffers[0], expected[0])
    np.testing.assert_array_equal(buffers[1], expected[1])
    assert callback(4096, native.address) == 1  # more than max_block: refused, nothing rendered


def test_jack_callback_allocates_nothing_in_steady_state():
    engine = _engine()
    native = na.NativeBlock(engine)
    callback, buffers, _keep = _fake_jack(native)
    engine.note_on(60, 100)
    engine.timbre_xy(0.3, 0.7, 0.05)
    callback(256, native.address)
    _nrt_python.memsys_enable_stats()
    before = rtsys.get_allocation_stats()
    for k in range(50):
        if k == 20:
            engine.note_on(64, 90)
        assert callback(256, native.address) == 0
    after = rtsys.get_allocation_stats()
    assert after.alloc == before.alloc and after.mi_alloc == before.mi_alloc
    assert np.abs(buffers[0]).max() > 0.01


def test_portaudio_callback_interleaves_and_counts_underflows_as_xruns():
    python, engine = _engine(), _engine()
    native = na.NativeBlock(engine)
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong,
                                ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p)(
        na.portaudio_callback.address)
    for eng in (python, engine):
        eng.note_on(69, 100, at_frame=0)
    output = np.zeros((700, 2), dtype=np.float32)   # more than max_block: rendered in two blocks
    assert callback(None, output.ctypes.data, 700, None, na.PA_OUTPUT_UNDERFLOW, native.address) == 0
    expected = np.concatenate([python.process(512).copy(), python.process(188).copy()], axis=1)
    np.testing.assert_array_equal(output.T, expected)
    assert engine.xruns == 1 and native.blocks == 2


@pytest.fixture()
def jack_server(monkeypatch):
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (apt-get install jackd2)")
    from tests.support.jack_harness import DummyJackServer

    with DummyJackServer(f"latentsynth-native-{os.getpid()}", RATE, 128) as server:
        monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
        yield server


def test_jack_backend_runs_the_native_callback_and_a_note_sounds(jack_server):
    from tests.support.jack_harness import JackCapture

    engine = _engine()
    backend = JackBackend(connect=False)
    backend.start(engine)
    capture = JackCapture(jack_server.name, ["latentsynth:out_1"], seconds=5.0)
    try:
        time.sleep(0.2)
        sent_at = capture.now()
        engine.note_on(69, 100)
        time.sleep(0.3)
        onset = capture.onset_after(sent_at)
        status = engine.status()
    finally:
        capture.close()
        backend.stop()
    assert backend.callback == "native" and status["audio_callback"] == "native"
    assert engine.native_block.blocks > 0
    assert 0 <= onset - sent_at < 3 * 128 + RATE // 100


def test_jack_backend_falls_back_to_the_python_callback_on_request(jack_server):
    engine = _engine()
    backend = JackBackend(connect=False, native=False)
    backend.start(engine)
    time.sleep(0.2)
    backend.stop()
    assert backend.callback == "python" and engine.status()["audio_callback"] == "python"
    assert engine.native_block is None and engine.frame > 0


PORTAUDIO_SCRIPT = """
import atexit, json, os, sys, time
sys.path.insert(0, {root!r})
from tests.support.jack_harness import DummyJackServer, JackCapture
server = DummyJackServer({name!r}, 48000, 128)
atexit.register(server.close)  # after PortAudio's own exit handler (registered later)
os.environ.update(server.env)
from rt_engine.io import native_audio
from rt_engine.io.audio_backends import SoundDeviceBackend
from tests.test_native_audio import _engine
backend = SoundDeviceBackend("system", 128, 48000)
engine = _engine()
backend.start(engine)
capture = JackCapture(server.name, ["PortAudio:" + p.shortname for p in
                      __import__("jack").Client("probe", no_start_server=True).get_ports(
                      "PortAudio:", is_output=True)][:1], seconds=5.0)
time.sleep(0.2)
sent_at = capture.now()
engine.note_on(69, 100)
time.sleep(0.3)
print(json.dumps({{"callback": backend.callback,
                  "pointer_is_native": backend._native_stream.callback_address
                  == native_audio.portaudio_callback.address,
                  "onset": capture.onset_after(sent_at) - sent_at,
                  "blocks": engine.native_block.blocks}}))
capture.close()
backend.stop()
"""


def test_portaudio_backend_runs_the_native_callback_through_jack():
    """PortAudio's JACK host API (a dummy server; CI has no sound card) calls the native
    callback, and a note sounds from it."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (apt-get install jackd2)")
    script = PORTAUDIO_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]),
                                     name=f"latentsynth-pa-{os.getpid()}")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["callback"] == "native" and result["pointer_is_native"]
    assert result["blocks"] > 10 and 0 <= result["onset"] < RATE // 10


def test_a_second_staged_pool_waits_until_the_callback_adopted_the_first():
    engine = _engine()
    native = na.NativeBlock(engine)
    engine.native_block = native
    engine.set_polyphony(4)
    with pytest.raises(RuntimeError, match="did not adopt"):
        native.stage_voices(engine._allocate_voices(5), timeout_s=0.05)
    native.process(256)
    engine.set_polyphony(5)
    native.process(256)
    assert engine.polyphony == 5
    assert native.table[na.R_VOICES, 1] == 5 + vk.N_TAIL_VOICES

"""Banks: resampling and sustain loops, grid geometry, and the worker process delivering banks
through shared memory."""
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from models.bank_source import TimbreRequest
from models.procedural_source import PROCEDURAL_ENVELOPES, ProceduralBankSource
from rt_engine.core import voice_kernel as vk
from rt_engine.banks import bank_manager as bank_manager_module
from rt_engine.banks.bank_manager import DEFAULT_GRID_N, SUPERSEDED, BankManager, grid_nodes_around
from rt_engine.banks.bank_render import prepare_rows
from rt_engine.banks.bank_layout import BankLayout


def _peak_hz(signal, rate):
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return np.argmax(spectrum) * rate / signal.size


@pytest.mark.parametrize("device_rate", [44_100, 48_000])
def test_prepared_rows_keep_their_pitch_at_the_device_rate(device_rate):
    t = np.arange(8000) / 16_000
    rows = np.stack([np.sin(2 * np.pi * 440.0 * t), np.sin(2 * np.pi * 1000.0 * t)]).astype(np.float32)
    layout = BankLayout.create(16_000, device_rate, 8000)
    prepared = prepare_rows(rows, layout)
    assert prepared.shape == (2, layout.bank_frames) and prepared.dtype == np.float32
    assert np.all(prepared[:, :vk.HEAD_PAD] == 0.0)
    audio = prepared[:, vk.HEAD_PAD:layout.loop_start]
    assert abs(_peak_hz(audio[0], device_rate) - 440.0) < 2.0
    assert abs(_peak_hz(audio[1], device_rate) - 1000.0) < 2.0


def test_the_sustain_loop_wraps_without_a_jump():
    t = np.arange(8000) / 16_000
    decaying = (np.sin(2 * np.pi * 330.0 * t) * np.exp(-t / 0.3)).astype(np.float32)[None]
    layout = BankLayout.create(16_000, 48_000, 8000)
    row = prepare_rows(decaying, layout)[0]
    # play through the wrap: ... loop_end - 1, then loop_start, ...; and the tail repeats it
    wrapped = np.concatenate([row[layout.loop_end - 200:layout.loop_end],
                              row[layout.loop_start:layout.loop_start + 200]])
    normal_step = np.abs(np.diff(row[layout.loop_start - 400:layout.loop_start])).max()
    assert np.abs(np.diff(wrapped)).max() <= 1.5 * normal_step
    np.testing.assert_array_equal(row[layout.loop_end:], row[layout.loop_start:layout.loop_start + vk.HEAD_PAD])


def test_grid_nodes_around_a_point_carry_bilinear_weights():
    nodes = grid_nodes_around(0.3, 0.6, 5)
    assert {(x, y) for x, y, _ in nodes} == {(0.25, 0.5), (0.5, 0.5), (0.25, 0.75), (0.5, 0.75)}
    weights = {(x, y): w for x, y, w in nodes}
    assert weights[(0.25, 0.5)] == pytest.approx(0.8 * 0.6)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert [(x, y) for x, y, _ in grid_nodes_around(0.5, 0.25, 5)] == [(0.5, 0.25)]


@pytest.fixture(scope="module")
def manager():
    bank_manager = BankManager(None, 48_000, n_slots=6, pitches=[57, 69], render_ahead=False,
                               exact_delay_s=0.0)
    yield bank_manager
    bank_manager.close()


def test_worker_delivers_the_initial_bank_through_shared_memory(manager):
    assert manager.wait_ready(60.0)
    slot = int(np.nonzero(manager.slots[:, vk.S_KIND] == vk.SLOT_GRID)[0][0])
    assert tuple(manager.slots[slot, [vk.S_X, vk.S_Y]]) == (0.5, 0.5)
    assert manager.row_ready[slot].tolist() == [1, 1]
    source = ProceduralBankSource()
    expected = prepare_rows(source.render_bank(TimbreRequest("xy", 0.5, 0.5), [57, 69]), manager.layout)
    np.testing.assert_allclose(manager.banks[slot], expected, atol=1e-6)
    assert manager.state() == "ready"


def test_a_point_gets_its_grid_neighbours_then_its_exact_bank_selected_by_slot_id(manager):
    selected = []
    manager.bind(lambda slot, generation: selected.append((slot, generation)))
    manager.request_xy(0.3, 0.6, 7)
    assert manager.wait_ready(60.0)
    published = {(float(x), float(y), float(kind)) for kind, x, y, *_ in manager.slots if kind != vk.SLOT_EMPTY}
    for x, y, _ in grid_nodes_around(0.3, 0.6, 5):
        assert (x, y, vk.SLOT_GRID) in published
    assert (0.3, 0.6, vk.SLOT_EXACT) in published
    exact = [s for s in range(len(manager.slots)) if manager.slots[s, vk.S_KIND] == vk.SLOT_EXACT]
    assert selected == [(exact[0], 7)]


def _let_blocks_pass(manager, done, timeout_s=60.0):
    """Stand in for the kernel: blocks go by and nothing plays the retired slots."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        manager.slots[:, vk.S_USAGE] = 0.0
        manager.slots[:, vk.S_SEEN] += 1e6
        time.sleep(0.02)


def test_a_preset_bank_is_selected_with_its_envelope_and_audio_reports_back(manager, tmp_path):
    selected, done, failed = [], [], []
    manager.bind(lambda slot, generation: selected.append((slot, generation)))
    manager.note_requested(69, [69])
    manager.request_preset("organ", 11, (0.01, 0.1, 1.0, 0.08))
    _let_blocks_pass(manager, lambda: selected)
    [(slot, generation)] = selected
    assert generation == 11 and manager.slots[slot, vk.S_KIND] == vk.SLOT_EXACT
    assert manager.row_ready[slot, 1]  # the held pitch's row was playable when it was selected
    np.testing.assert_allclose(manager.slots[slot, [vk.S_ATTACK_S, vk.S_DECAY_S, vk.S_SUSTAIN, vk.S_RELEASE_S]],
                               (0.01, 0.1, 1.0, 0.08))
    with pytest.raises(KeyError, match="organ"):
        manager.request_preset("kazoo", 12)
    manager.request_audio(str(tmp_path / "missing.wav"), 13, lambda: done.append(1), failed.append)
    assert failed and "missing.wav" in failed[0] and not done
    path = tmp_path / "tone.wav"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16000).astype(np.float32), 16000)
    manager.request_audio(str(path), 14, lambda: done.append(1), failed.append)
    _let_blocks_pass(manager, lambda: done)
    assert done == [1] and selected[-1][1] == 14
    manager.note_requested(69, [])


def test_a_bad_model_folder_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"bank_source": "nothing"}))
    with pytest.raises(RuntimeError, match=str(tmp_path.name)):
        BankManager(str(tmp_path), 48_000, n_slots=5, pitches=[60])


def test_a_model_whose_weights_cannot_load_is_named_when_the_worker_warms(tmp_path):
    """Configs and presets load at start; the weights load when the idle worker warms: broken
    weights then set `warm_error` naming the file (and every render fails with it)."""
    from tests.test_gan_bank import make_tiny_model

    folder = make_tiny_model(tmp_path / "m")
    (folder / "gan" / "model.safetensors").write_bytes(b"not a safetensors file")
    banks = BankManager(str(folder), 48_000, n_slots=5, pitches=[60], cache_dir=None)
    try:
        deadline = time.monotonic() + 60.0
        while banks.warm_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert banks.warm_error is not None and "model.safetensors" in banks.warm_error
    finally:
        banks.close()


def test_a_worker_whose_server_is_killed_exits_by_itself():
    """A server killed with SIGKILL cannot stop its worker; the worker notices and exits."""
    import subprocess
    import sys

    from tests.support.processes import wait_gone

    code = ("import os; from rt_engine.banks.bank_worker import start_worker; "
            "worker = start_worker(None, None, 60.0); print(worker.process.pid, flush=True); os._exit(0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    worker_pid = int(result.stdout.split()[0])
    assert wait_gone({worker_pid}, 10.0) == set()


def test_a_timbre_request_overtaken_by_a_newer_one_hears_superseded(manager):
    outcomes = {"first": [], "second": [], "again": []}
    manager.bind(lambda slot, generation: None)
    with manager._lock:  # both requests land before the worker can answer the first
        manager.request_preset("organ", 21)
        manager.request_audio(__file__, 22, lambda: outcomes["first"].append("done"), outcomes["first"].append)
        manager.request_preset("brass", 23)
    _let_blocks_pass(manager, lambda: not manager.busy())
    assert outcomes["first"] == [SUPERSEDED]


def test_two_requests_for_one_bank_both_hear_it_land(manager, tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 330 * np.arange(8000) / 16000).astype(np.float32), 16000)
    heard = []
    manager.bind(lambda slot, generation: None)
    with manager._lock:
        manager.request_audio(str(path), 31, lambda: heard.append("a"), heard.append)
        manager.request_audio(str(path), 32, lambda: heard.append("b"), heard.append)
    _let_blocks_pass(manager, lambda: len(heard) == 2)
    assert sorted(heard) == ["a", "b"]


def _wait(condition, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_offline_a_point_gets_its_exact_bank_only_when_the_caller_asks_and_loads_wait_for_settle():
    banks = BankManager(None, 48_000, n_slots=5, pitches=[57, 69], offline=True, request_initial_point=False)
    try:
        kinds = lambda: sorted(banks.slots[:, vk.S_KIND].tolist())
        banks.request_xy(0.3, 0.6, 1)  # four grid nodes
        banks.settle(60.0)
        assert kinds() == [vk.SLOT_EMPTY] + [vk.SLOT_GRID] * 4  # passed on the way: no exact bank
        banks.want_exact_point()
        banks.settle(60.0)
        assert kinds() == [vk.SLOT_GRID] * 4 + [vk.SLOT_EXACT]
        banks.request_xy(0.8, 0.1, 2)  # four other nodes: slots must be retired and refilled
        banks.settle(60.0)
        time.sleep(0.3)  # listener ticks go by: offline they decide nothing
        before = kinds()
        assert before.count(vk.SLOT_GRID) < 4
        banks.slots[:, vk.S_USAGE] = 0.0  # a block in which nothing plays the retired slots
        banks.slots[:, vk.S_SEEN] += 1e6
        for _ in range(4):  # one slot is retired per settle
            banks.settle(60.0)
            banks.slots[:, vk.S_USAGE] = 0.0
            banks.slots[:, vk.S_SEEN] += 1e6
        published = {(float(x), float(y)) for kind, x, y, *_ in banks.slots if kind == vk.SLOT_GRID}
        assert {(x, y) for x, y, _ in grid_nodes_around(0.8, 0.1, 5)} <= published
    finally:
        banks.close()


def test_a_killed_worker_is_restarted_and_the_request_it_held_fails_with_the_reason():
    banks = BankManager(None, 48_000, n_slots=6, pitches=[57, 69], render_ahead=False, exact_delay_s=0.0)
    try:
        assert banks.wait_ready(60.0)
        first_pid, failed = banks.worker_pid, []
        with banks._lock:  # the listener sees the death only after the request is in flight
            os.kill(first_pid, signal.SIGKILL)
            banks.request_audio(__file__, 5, lambda: failed.append("done"), failed.append)
        assert _wait(lambda: failed and banks.worker_pid != first_pid)
        assert "exited with code -9" in failed[0] and "restarted" in failed[0]
        assert len(banks.worker_restarts) == 1 and not banks.failed
        banks.request_xy(0.3, 0.6, 6)  # the new worker renders
        assert banks.wait_ready(60.0)
        published = {(float(x), float(y)) for kind, x, y, *_ in banks.slots if kind == vk.SLOT_GRID}
        assert {(x, y) for x, y, _ in grid_nodes_around(0.3, 0.6, 5)} <= published
    finally:
        banks.close()


def test_a_worker_over_its_memory_limit_is_restarted_then_given_up(monkeypatch):
    monkeypatch.setattr(bank_manager_module, "MAX_RESTARTS", 1)
    banks = BankManager(None, 48_000, n_slots=6, pitches=[57, 69], render_ahead=False, exact_delay_s=0.0)
    try:
        assert banks.wait_ready(60.0)
        banks.worker_memory_limit_bytes = 1  # every worker is over it
        assert _wait(lambda: banks.failed)
        assert "over its limit" in banks.failed and "2 restarts" in banks.failed
        assert banks.state() == "failed"
    finally:
        banks.close()


def test_a_preset_without_an_explicit_envelope_brings_its_own(manager):
    selected = []
    manager.bind(lambda slot, generation: selected.append(slot))
    manager.request_preset("brass", 41)
    _let_blocks_pass(manager, lambda: selected)
    np.testing.assert_allclose(manager.slots[selected[-1], [vk.S_ATTACK_S, vk.S_DECAY_S, vk.S_SUSTAIN, vk.S_RELEASE_S]],
                               PROCEDURAL_ENVELOPES["brass"])


@pytest.mark.parametrize("store_points", [False, True])
def test_the_disk_cache_keeps_grid_nodes_and_pad_points_only_when_asked(tmp_path, store_points):
    """Live, every pad move would write a bank to disk; the grid nodes (a finite set) are always
    kept, the exact banks of pad points only with `store_points` (render)."""
    folder = tmp_path / "procedural"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"bank_source": "procedural"}))
    banks = BankManager(str(folder), 48_000, n_slots=6, pitches=[57, 69], render_ahead=False, exact_delay_s=0.0,
                        cache_dir=tmp_path / "cache", store_points=store_points)
    try:
        banks.request_xy(0.3, 0.6, 7)
        assert banks.wait_ready(60.0)
    finally:
        banks.close()
    timbres = [timbre for model in (tmp_path / "cache").iterdir() for timbre in model.iterdir()]
    nodes = {(x, y) for x, y, _ in grid_nodes_around(0.3, 0.6, DEFAULT_GRID_N)} | {(0.5, 0.5)}
    assert len(timbres) == len(nodes) + store_points
    assert all(len(list(timbre.glob("*.npy"))) == 4 for timbre in timbres)  # 2 pitches, as rendered and prepared


def test_the_worker_is_asked_to_warm_only_after_the_first_bank():
    """A worker idle between the attach and the first request must not load the model's networks
    first: the starting point's banks would wait for torch (1.2 s)."""
    from rt_engine.banks.bank_worker import spawn_worker

    pending = spawn_worker(None, cache_dir=None)
    sent, put = [], pending.requests.put
    pending.requests.put = lambda message: (sent.append(message[0]), put(message))
    banks = BankManager(None, 48_000, n_slots=8, pitches=[60, 64], worker=pending, render_ahead=True)
    try:
        assert banks.wait_ready(60.0, include_exact=False)
        deadline = time.monotonic() + 10.0
        while "warm" not in sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sent[0] == "attach" and "warm" in sent
        assert "render" in sent[:sent.index("warm")]
    finally:
        banks.close()


def test_the_worker_keeps_its_freed_memory_mapped(monkeypatch):
    """The worker's malloc keeps freed blocks (no munmap or brk per bank on a core the audio
    threads share); without glibc nothing changes and nothing fails."""
    import ctypes

    from rt_engine.banks import bank_worker

    assert bank_worker.MALLOC_SETTINGS[bank_worker.M_MMAP_THRESHOLD] >= 32 << 20
    assert bank_worker._keep_memory()

    def no_libc(name):
        raise OSError(f"{name}: not here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert bank_worker._keep_memory() is False

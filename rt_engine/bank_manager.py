"""Sample banks for the engine: a worker process renders them into shared-memory slots.

The worker process owns the `BankSource` (`models.timbre_sources.load_bank_source(model_dir)`: the
GAN, or the procedural stand-in); torch, inversion and file I/O never run in the audio process.
Each rendered row is resampled once to the device rate and given its crossfaded sustain loop
(`prepare_rows`) in the worker, then written into a slot of one `multiprocessing.shared_memory`
block, float32 [n_slots, n_rows, bank_frames], which the engine's kernel reads directly.

In the audio process, `BankManager` keeps the slot table the kernel reads (`slots`: kind, x, y,
usage, envelope; `row_ready`: which rows of which slot are playable) and decides what to render.
A bank load is staged (SuperCollider's Stage 1-4): the worker renders it (1), its rows are
published into a slot by integer id (2), an exact bank is selected in the callback by a
`SELECT_BANK` record carrying that id once the held pitches' rows are playable, with the envelope
stored in its slot (3), and the request's `on_done` is answered from this side (4). Each timbre
request carries a generation number, so a load that lands after a newer request is not played.
- a timbre point needs the grid nodes around it (bilinear blend: instant response) and then the
  exact bank at the point (selected, and crossfaded to, when it lands);
- held and requested pitches render first (`note_requested` moves them to the front); the first
  chunk of a load is the held pitches' rows alone, so they are playable soonest;
- loaded slots form an LRU cache keyed by `TimbreRequest.key()`; a slot is reused only after the
  kernel reports it unused (`S_USAGE` 0) once it was retired;
- when idle, the grid nodes around the current cell are rendered ahead into free slots.
Its one thread blocks on the worker's result queue (20 Hz tick) and stays light.
Rendered rows of a model are kept on disk (`rt_engine.bank_cache`; `cache_dir` "auto" is
`default_cache_dir()`, None turns it off), so a
restarted server or another render reads them instead of running the model again.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Callable, Sequence

import numba
import numpy as np
from scipy.signal import resample_poly

from rt_engine import voice_kernel as vk
from rt_engine.bank_cache import BankCache, default_cache_dir
from models.bank_source import KEYBOARD_PITCHES, TimbreRequest
from models.timbre_sources import load_bank_source
from rt_engine.bank_tuning import measure_detune_cents, retune
from rt_engine.commands import DEFAULT_ADSR

DEFAULT_GRID_N = 5
DEFAULT_N_SLOTS = 12
CHUNK_ROWS = 8
ENVELOPE_FIELDS = [vk.S_ATTACK_S, vk.S_DECAY_S, vk.S_SUSTAIN, vk.S_RELEASE_S]


@dataclass(frozen=True)
class BankLayout:
    """Geometry of one prepared bank row at the device rate (all lengths in frames)."""

    source_rate: int      # (Hz) rate of the rendered notes
    device_rate: int      # (Hz)
    n_source_samples: int
    n_device_frames: int
    loop_start: int
    loop_end: int
    xfade_frames: int
    bank_frames: int

    @staticmethod
    def create(source_rate: int, device_rate: int, n_source_samples: int) -> "BankLayout":
        """Layout `[HEAD_PAD zeros | audio | HEAD_PAD loop tail]` with a loop over the last
        40% of the audio, crossfaded over half the loop."""
        n_device = math.ceil(n_source_samples * device_rate / source_rate)
        if n_device < 64:
            raise ValueError(f"bank notes too short: {n_source_samples} samples at {source_rate} Hz")
        loop_end = vk.HEAD_PAD + n_device
        loop_length = max(n_device * 2 // 5, 32)
        return BankLayout(source_rate, device_rate, n_source_samples, n_device,
                          loop_end - loop_length, loop_end, loop_length // 2,
                          loop_end + vk.HEAD_PAD)


def prepare_rows(rows: np.ndarray, layout: BankLayout) -> np.ndarray:
    """Resample notes float32 [n, n_source_samples] at `layout.source_rate` to the device rate
    and bake the sustain loop: float32 [n, layout.bank_frames]. Reading past `loop_end` and
    continuing at `loop_start` is seamless (the end of the loop is crossfaded into the audio
    that precedes `loop_start`, and the tail repeats the loop's start)."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != layout.n_source_samples:
        raise ValueError(f"bank rows must be [n, {layout.n_source_samples}], got {rows.shape}")
    gcd = math.gcd(layout.device_rate, layout.source_rate)
    resampled = resample_poly(rows, layout.device_rate // gcd, layout.source_rate // gcd, axis=1)
    out = np.zeros((rows.shape[0], layout.bank_frames), dtype=np.float32)
    n = min(resampled.shape[1], layout.n_device_frames)
    out[:, vk.HEAD_PAD:vk.HEAD_PAD + n] = resampled[:, :n]
    start, end, xfade = layout.loop_start, layout.loop_end, layout.xfade_frames
    ramp = (np.arange(xfade, dtype=np.float32) + 1) / xfade
    out[:, end - xfade:end] = (1 - ramp) * out[:, end - xfade:end] + ramp * out[:, start - xfade:start]
    out[:, end:end + vk.HEAD_PAD] = out[:, start:start + vk.HEAD_PAD]
    return out


def grid_nodes_around(x: float, y: float, grid_n: int) -> list[tuple[float, float, float]]:
    """Grid nodes (x, y, bilinear weight > 0) of the cell holding point (x, y) in [0, 1]^2,
    matching the kernel's blend."""
    last = grid_n - 1
    gx, gy = x * last, y * last
    ix, iy = min(max(int(math.floor(gx)), 0), last - 1), min(max(int(math.floor(gy)), 0), last - 1)
    fx, fy = gx - ix, gy - iy
    nodes = []
    for cx, cy, weight in ((ix, iy, (1 - fx) * (1 - fy)), (ix + 1, iy, fx * (1 - fy)),
                           (ix, iy + 1, (1 - fx) * fy), (ix + 1, iy + 1, fx * fy)):
        if weight > 0:
            nodes.append((cx / last, cy / last, weight))
    return nodes


def ring_nodes(x: float, y: float, grid_n: int) -> list[tuple[float, float]]:
    """Grid nodes of the cells next to the one holding (x, y), nearest first (rendered ahead)."""
    last = grid_n - 1
    cx, cy = x * last, y * last
    nodes = [(i, j) for i in range(grid_n) for j in range(grid_n)
             if abs(i - cx) <= 2 and abs(j - cy) <= 2]
    nodes.sort(key=lambda node: (node[0] - cx) ** 2 + (node[1] - cy) ** 2)
    return [(i / last, j / last) for i, j in nodes]


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Attach to the manager's block without registering it with the resource tracker (the
    manager, which created it, unlinks it; Python < 3.13 has no `track=False`)."""
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


def _worker_main(model_dir: str | None, cache_dir: str | None, requests, results) -> None:
    """The worker process: owns the bank source, renders jobs chunk by chunk, most urgent job
    first, into the shared-memory slots. Messages in: attach, render, boost, cancel, stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctrl-C goes to the server, which stops us
    os.nice(10)  # background work: the audio threads must win every contest for a core
    try:  # ... and a batch thread: it never preempts a waking audio or control thread
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        pass
    # One compute thread: a second torch/OpenMP thread fights the audio process for the other
    # core (measured on 2 shared cores: one G call 3.9 ms with 1 thread, 248 ms with 2).
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    try:
        numba.set_num_threads(1)
        if model_dir is not None:
            import torch  # heavy: the worker sets torch's threads before its source loads it

            torch.set_num_threads(1)
        source = load_bank_source(model_dir)
        cache = None
        if model_dir is not None and cache_dir is not None:  # a procedural bank is cheaper than a read
            cache = BankCache(cache_dir, model_dir, source.n_samples)
            cache.prune()
        results.put(("hello", source.preset_names(), int(source.sample_rate), int(source.n_samples)))
    except Exception as error:  # any load failure is reported to the manager, which raises
        results.put(("fail", -1, f"cannot load bank source from {model_dir or 'procedural'}: {error}"))
        return
    _, shm_name, shape, layout, row_pitch = requests.get()
    shm = _attach_untracked(shm_name)
    banks = np.ndarray(shape, dtype=np.float32, buffer=shm.buf)
    jobs: dict[int, dict] = {}
    try:
        while True:
            messages = [requests.get()] if not jobs else []
            while True:
                try:
                    messages.append(requests.get_nowait())
                except queue.Empty:
                    break
            for message in messages:
                if message[0] == "stop":
                    return
                if message[0] == "render":
                    _, job_id, slot, request, rows, n_first, priority = message
                    jobs[job_id] = {"slot": slot, "request": request, "rows": list(rows),
                                    "n_next": n_first, "priority": priority, "conditioning": None}
                elif message[0] == "cancel":
                    jobs.pop(message[1], None)
                    results.put(("cancelled", message[1]))
                elif message[0] == "boost":
                    for job in jobs.values():
                        front = [r for r in message[1] if r in job["rows"]]
                        job["rows"] = front + [r for r in job["rows"] if r not in front]
            if not jobs:
                continue
            job_id = min(jobs, key=lambda j: (jobs[j]["priority"], j))
            job = jobs[job_id]
            n_chunk, job["n_next"] = job["n_next"], CHUNK_ROWS
            chunk, job["rows"] = job["rows"][:n_chunk], job["rows"][n_chunk:]
            try:
                pitches = [int(round(row_pitch[r])) for r in chunk]
                if job["conditioning"] is None:  # once per request: file reads and f run here
                    job["conditioning"] = source.conditioning_for(job["request"])
                notes = (source.render_pitches(job["conditioning"], pitches) if cache is None
                         else cache.rows(source, job["conditioning"], pitches))
                notes = retune(notes, measure_detune_cents(notes, pitches, layout.source_rate))
                banks[job["slot"], chunk] = prepare_rows(notes, layout)
            except Exception as error:  # a bad timbre (file, preset) fails its job only
                results.put(("fail", job_id, str(error)))
                del jobs[job_id]
                continue
            results.put(("rows", job_id, chunk))
            if not job["rows"]:
                results.put(("done", job_id))
                del jobs[job_id]
    finally:
        del banks
        shm.close()


@dataclass
class _Job:
    """One staged bank load: Stage 1 renders it in the worker, Stage 2 publishes its rows into
    slot `slot` by id, Stage 3 (exact banks) selects the slot in the callback once the `needed`
    rows (the held pitches') are playable, and Stage 4 replies `on_done`."""

    job_id: int
    key: str
    request: TimbreRequest
    kind: float
    point: tuple[float, float]
    priority: int
    generation: int = 0
    envelope: tuple = DEFAULT_ADSR
    needed: frozenset = frozenset()
    on_done: Callable[[], None] | None = None
    on_fail: Callable[[str], None] | None = None
    slot: int = -1
    published: bool = False
    selected: bool = False
    boosted: set = field(default_factory=set)

    def update(self, priority: int, generation: int, envelope, on_done, on_fail) -> None:
        """A newer request for the same bank takes this load over."""
        self.priority = min(self.priority, priority)
        self.generation, self.envelope = max(self.generation, generation), envelope
        self.on_done, self.on_fail = on_done or self.on_done, on_fail or self.on_fail


class BankManager:
    """Bank provider backed by a worker process and shared-memory slots (see module docstring).
    Control threads call `request_*` and `note_requested`; the kernel reads `banks`, `slots`,
    `row_ready` and `row_pitch`."""

    initial_point = (0.5, 0.5)

    def __init__(self, model_dir: str | None, device_rate: int, n_slots: int = DEFAULT_N_SLOTS,
                 grid_n: int = DEFAULT_GRID_N, pitches: Sequence[int] = KEYBOARD_PITCHES,
                 render_ahead: bool = True, exact_delay_s: float = 0.15,
                 start_timeout_s: float = 120.0, cache_dir: str | Path | None = "auto"):
        if n_slots < 5:
            raise ValueError(f"need at least 5 bank slots (4 grid nodes + 1 exact), got {n_slots}")
        if grid_n < 2:
            raise ValueError(f"grid_n must be >= 2 nodes per side, got {grid_n}")
        self.grid_n = grid_n
        self.row_pitch = np.asarray(pitches, dtype=np.float64)
        self.render_ahead = render_ahead
        self.exact_delay_s = exact_delay_s
        if cache_dir == "auto":
            cache_dir = default_cache_dir()
        context = multiprocessing.get_context("spawn")
        self._requests, self._results = context.Queue(), context.Queue()
        self._process = context.Process(target=_worker_main, name="latentsynth-banks", daemon=True,
                                        args=(None if model_dir is None else str(model_dir),
                                              None if cache_dir is None else str(cache_dir),
                                              self._requests, self._results))
        self._process.start()
        hello, deadline = None, time.monotonic() + start_timeout_s
        while hello is None:
            try:
                hello = self._results.get(timeout=0.2)
            except queue.Empty:
                if not self._process.is_alive() or time.monotonic() > deadline:
                    self._process.kill()
                    raise RuntimeError(f"bank worker did not start (exit code "
                                       f"{self._process.exitcode}, {start_timeout_s} s allowed)") from None
        if hello[0] == "fail":
            self._process.join(5)
            raise RuntimeError(hello[2])
        _, presets, source_rate, n_samples = hello
        self._presets = list(presets)
        self.layout = BankLayout.create(source_rate, device_rate, n_samples)
        self.loop_start, self.loop_end = self.layout.loop_start, self.layout.loop_end
        shape = (n_slots, self.row_pitch.size, self.layout.bank_frames)
        self._shm = shared_memory.SharedMemory(create=True, size=int(np.prod(shape)) * 4)
        self.banks = np.ndarray(shape, dtype=np.float32, buffer=self._shm.buf)
        self.banks[:] = 0.0
        self.slots = np.zeros((n_slots, vk.N_SLOT_FIELDS))
        self.row_ready = np.zeros((n_slots, self.row_pitch.size), dtype=np.uint8)
        self._requests.put(("attach", self._shm.name, shape, self.layout, self.row_pitch))
        self._lock = threading.RLock()
        self._slot_state = ["free"] * n_slots        # free, loading, loaded, retiring, cancelling
        self._slot_key: list[str | None] = [None] * n_slots
        self._slot_job: list[_Job | None] = [None] * n_slots
        self._slot_used = [0.0] * n_slots            # LRU stamp
        self._retired_at = [0.0] * n_slots           # kernel frame (S_SEEN) at retirement
        self._waiting: list[_Job] = []
        self._jobs: dict[int, _Job] = {}
        self._next_job = 0
        self._held: list[float] = []
        self._point = self.initial_point
        self._point_time = time.monotonic()
        self._exact_wanted = False
        self._protected: set[str] = set()
        self._generation = 0
        self._select: Callable[[int, int], bool] | None = None
        self.failed = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="latentsynth-bank-manager",
                                        daemon=True)
        self._thread.start()
        self.request_xy(*self.initial_point, 0)

    # ---- requests (control threads) ------------------------------------------------------
    def preset_names(self) -> list[str]:
        return list(self._presets)

    def bind(self, select: Callable[[int, int], bool]) -> None:
        """Where Stage 3 goes: `select(slot, generation)` plays exact bank `slot` (the engine's
        `select_bank`)."""
        self._select = select

    def request_xy(self, x: float, y: float, generation: int) -> None:
        """The timbre moves to (x, y): grid nodes around it now, the exact bank once it rests."""
        with self._lock:
            self._point, self._point_time = (x, y), time.monotonic()
            self._generation = generation
            corners = grid_nodes_around(x, y, self.grid_n)
            on_node = len(corners) == 1
            self._protected = {TimbreRequest("xy", nx, ny).key() for nx, ny, _ in corners}
            self._drop_exact_jobs(keep=None)
            self._exact_wanted = not on_node
            for nx, ny, _ in corners:
                self._want(TimbreRequest("xy", nx, ny), vk.SLOT_GRID, (nx, ny), 0)
            if self._exact_wanted and self.exact_delay_s <= 0:
                self._want_exact()

    def request_preset(self, name: str, generation: int, envelope=DEFAULT_ADSR) -> None:
        """Load preset `name` as an exact bank with `envelope` (attack s, decay s, sustain,
        release s); it plays once the held pitches are playable."""
        if name not in self._presets:
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(self._presets)}")
        self._want_exact_bank(TimbreRequest("preset", name=name), generation, envelope)

    def request_audio(self, path: str, generation: int, on_done: Callable[[], None],
                      on_fail: Callable[[str], None]) -> None:
        """Derive a timbre from a sound file in the worker; `on_done()` once the held pitches
        are playable, `on_fail(reason)` for a missing or unreadable file."""
        if not Path(path).is_file():
            on_fail(f"file not found: {path}")
            return
        self._want_exact_bank(TimbreRequest("audio", path=path), generation, DEFAULT_ADSR, on_done, on_fail)

    def _want_exact_bank(self, request: TimbreRequest, generation: int, envelope, on_done=None,
                         on_fail=None) -> None:
        with self._lock:
            self._drop_exact_jobs(keep=request.key())
            self._exact_wanted = False
            self._protected = {request.key()}
            self._want(request, vk.SLOT_EXACT, self._point, 0, generation, envelope, on_done, on_fail)

    def note_requested(self, pitch: float, held: Sequence[float]) -> None:
        """A note starts: its row (and the held ones) move to the front of unfinished banks."""
        with self._lock:
            self._held = list(held)
            if not self._jobs:
                return
            row = int(np.argmin(np.abs(self.row_pitch - pitch)))
            lacking = [job for job in self._jobs.values()
                       if not self.row_ready[job.slot, row] and row not in job.boosted]
            if lacking:
                for job in lacking:
                    job.boosted.add(row)
                self._requests.put(("boost", [row]))

    def state(self) -> str:
        """'failed', 'rendering' (urgent banks outstanding) or 'ready'."""
        if self.failed:
            return "failed"
        with self._lock:
            busy = any(job.priority == 0 for job in list(self._jobs.values()) + self._waiting)
        return "rendering" if busy or self._exact_wanted else "ready"

    def busy(self, include_exact: bool = True) -> bool:
        """True while the worker renders an urgent bank (grid nodes; exact banks too when
        `include_exact`). Jobs waiting for a slot do not count: the kernel frees slots."""
        with self._lock:
            if include_exact and self._exact_wanted:
                return True
            return any(job.priority == 0 and (include_exact or job.kind == vk.SLOT_GRID)
                       for job in self._jobs.values())

    def wait_ready(self, timeout_s: float = 60.0, include_exact: bool = True) -> bool:
        """Block until `busy(include_exact)` is False (offline render); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.failed:
                raise RuntimeError(f"bank manager failed: {self.failed}")
            if not self.busy(include_exact):
                return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        """Stop the worker and the listener, release the shared memory."""
        self._stop.set()
        self._thread.join(2.0)
        try:
            self._requests.put(("stop",))
            self._process.join(5.0)
        finally:
            if self._process.is_alive():
                self._process.kill()
            for channel in (self._requests, self._results):
                channel.cancel_join_thread()  # unread messages must not hold up our exit
                channel.close()
            del self.banks
            self._shm.close()
            self._shm.unlink()

    # ---- bookkeeping (under the lock) ----------------------------------------------------
    def _want(self, request: TimbreRequest, kind: float, point, priority: int, generation: int = 0,
              envelope=DEFAULT_ADSR, on_done=None, on_fail=None) -> None:
        key = request.key()
        for slot, slot_key in enumerate(self._slot_key):
            if slot_key == key and self._slot_state[slot] in ("loading", "loaded"):
                self._slot_used[slot] = time.monotonic()
                job = self._slot_job[slot]
                if job is not None and not job.selected:
                    job.update(priority, generation, envelope, on_done, on_fail)
                elif kind == vk.SLOT_EXACT:  # already playable: select it again at once
                    self.slots[slot, ENVELOPE_FIELDS] = envelope
                    self._select_slot(slot, generation, on_done)
                return
        for job in self._waiting:
            if job.key == key:
                job.update(priority, generation, envelope, on_done, on_fail)
                return
        self._waiting.append(_Job(self._next_job, key, request, kind, point, priority, generation,
                                  envelope, frozenset(self._held_rows()), on_done, on_fail))
        self._next_job += 1
        self._assign()

    def _select_slot(self, slot: int, generation: int, on_done) -> None:
        """Stage 3 and 4: the callback plays exact bank `slot`; the request hears `on_done`."""
        if self._select is not None:
            self._select(slot, generation)
        if on_done is not None:
            on_done()

    def _held_rows(self) -> list[int]:
        """Rows nearest the held pitches."""
        return sorted({int(np.argmin(np.abs(self.row_pitch - pitch))) for pitch in self._held})

    def _want_exact(self) -> None:
        x, y = self._point
        request = TimbreRequest("xy", x, y)
        self._protected.add(request.key())
        self._want(request, vk.SLOT_EXACT, (x, y), 0, self._generation)
        self._exact_wanted = False

    def _drop_exact_jobs(self, keep: str | None) -> None:
        """Forget exact banks still outstanding for points the timbre has left."""
        self._waiting = [j for j in self._waiting if j.kind != vk.SLOT_EXACT or j.key == keep]
        for job in list(self._jobs.values()):
            if job.kind == vk.SLOT_EXACT and job.key != keep and not job.published:
                self._requests.put(("cancel", job.job_id))
                self._slot_state[job.slot] = "cancelling"
                del self._jobs[job.job_id]

    def _free_slot(self, may_evict: bool) -> int:
        for slot, state in enumerate(self._slot_state):
            if state == "free":
                return slot
            if (state == "retiring" and self.slots[slot, vk.S_USAGE] == 0.0
                    and self.slots[slot, vk.S_SEEN] > self._retired_at[slot]):
                self._slot_state[slot] = "free"
                return slot
        if may_evict and "retiring" not in self._slot_state:
            loaded = [s for s, state in enumerate(self._slot_state)
                      if state == "loaded" and self._slot_key[s] not in self._protected]
            if loaded:
                victim = min(loaded, key=lambda s: self._slot_used[s])
                self.slots[victim, vk.S_KIND] = vk.SLOT_EMPTY
                self._retired_at[victim] = self.slots[victim, vk.S_SEEN]
                self._slot_state[victim] = "retiring"
                self._slot_key[victim] = None
        return -1

    def _assign(self) -> None:
        self._waiting.sort(key=lambda job: (job.priority, job.job_id))
        while self._waiting:
            job = self._waiting[0]
            slot = self._free_slot(may_evict=job.priority == 0)
            if slot < 0:
                return
            self._waiting.pop(0)
            job.slot = slot
            self.slots[slot, vk.S_KIND] = vk.SLOT_EMPTY
            self.row_ready[slot] = 0
            self._slot_state[slot], self._slot_key[slot], self._slot_job[slot] = "loading", job.key, job
            self._slot_used[slot] = time.monotonic()
            self._jobs[job.job_id] = job
            self.slots[slot, [vk.S_X, vk.S_Y]] = job.point
            self.slots[slot, ENVELOPE_FIELDS] = job.envelope
            self._requests.put(("render", job.job_id, slot, job.request, self._row_order(),
                                len(job.needed) or CHUNK_ROWS, job.priority))

    def _row_order(self) -> list[int]:
        """Rows nearest the held pitches first, then outwards from them (or from middle C)."""
        centres = np.asarray(self._held or [60.0], dtype=np.float64)
        distance = np.abs(self.row_pitch[:, None] - centres[None, :]).min(axis=1)
        return [int(r) for r in np.argsort(distance, kind="stable")]

    # ---- listener thread -----------------------------------------------------------------
    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._results.get(timeout=0.05)
            except queue.Empty:
                message = None
            except (EOFError, OSError):
                self.failed = "bank worker connection lost"
                return
            with self._lock:
                if message is not None:
                    self._handle(message)
                if not self._process.is_alive() and not self._stop.is_set():
                    self.failed = f"bank worker exited with code {self._process.exitcode}"
                    return
                self._tick()

    def _handle(self, message) -> None:
        if message[0] == "cancelled":
            for slot, state in enumerate(self._slot_state):
                job = self._slot_job[slot]
                if state == "cancelling" and job is not None and job.job_id == message[1]:
                    self._slot_state[slot], self._slot_key[slot], self._slot_job[slot] = "free", None, None
            return
        job = self._jobs.get(message[1])
        if job is None:
            return
        if message[0] == "rows":
            self.row_ready[job.slot, message[2]] = 1
            if not job.published:
                self.slots[job.slot, vk.S_KIND] = job.kind
                job.published = True
            if (job.kind == vk.SLOT_EXACT and not job.selected
                    and all(self.row_ready[job.slot, row] for row in job.needed)):
                job.selected = True
                self._select_slot(job.slot, job.generation, job.on_done)
        elif message[0] == "done":
            self._slot_state[job.slot], self._slot_job[job.slot] = "loaded", None
            del self._jobs[job.job_id]
        elif message[0] == "fail":
            self.slots[job.slot, vk.S_KIND] = vk.SLOT_EMPTY
            self._retired_at[job.slot] = self.slots[job.slot, vk.S_SEEN]
            self._slot_state[job.slot] = "retiring" if job.published else "free"
            self._slot_key[job.slot], self._slot_job[job.slot] = None, None
            del self._jobs[job.job_id]
            if job.on_fail is not None:
                job.on_fail(message[2])

    def _tick(self) -> None:
        if self._exact_wanted and time.monotonic() - self._point_time >= self.exact_delay_s:
            self._want_exact()
        self._assign()
        if self.render_ahead and not self._jobs and not self._waiting:
            x, y = self._point
            if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0:
                cached = set(self._slot_key)
                for nx, ny in ring_nodes(x, y, self.grid_n):
                    request = TimbreRequest("xy", nx, ny)
                    if request.key() not in cached and "free" in self._slot_state:
                        self._want(request, vk.SLOT_GRID, (nx, ny), 1)
                        return

"""Sample banks for the engine: a worker process (`rt_engine.banks.bank_worker`) renders them into
shared-memory slots, float32 [n_slots, n_rows, bank_frames], which the engine's kernel reads directly.

In the audio process, `BankManager` keeps the slot table the kernel reads (`slots`: kind, x, y,
usage, envelope; `row_ready`: which rows of which slot are playable) and decides what to render.
A bank load is staged (SuperCollider's Stage 1-4): the worker renders it (1), its rows are
published into a slot by integer id (2), an exact bank is selected in the callback by a
`SELECT_BANK` record carrying that id once the held pitches' rows are playable, with the envelope
stored in its slot (3), and the request's `on_done` is answered from this side (4). Each timbre
request carries a generation number: a load that lands after a newer request is not played, and
its requester hears `on_fail("superseded by a newer timbre request")`.
- a timbre point needs the grid nodes around it (bilinear blend: instant response) and then the
  exact bank at the point (selected, and crossfaded to, when it lands);
- a one-shot sound whose source refines it at test time loads in two stages: the held pitches'
  rows of the unrefined bank (they answer `on_done`), then the refined bank into another slot,
  selected (crossfaded to) when its held rows land;
- held and requested pitches render first (`note_requested` moves them to the front); the first
  chunk of a load is the held pitches' rows alone, so they are playable soonest;
- loaded slots form an LRU cache keyed by `TimbreRequest.key()`; a slot is reused only after the
  kernel reports it unused (`S_USAGE` 0) once it was retired;
- when idle, the grid nodes around the current cell are rendered ahead into free slots.
Its one thread blocks on the worker's result queue (20 Hz tick) and stays light.
Offline (`offline=True`, `render`) no decision follows the wall clock: the caller asks for a
point's exact bank (`want_exact_point`, when the score rests there) and, between blocks, gives
waiting loads the slots the kernel has let go and waits for every load (`settle`); slots are
recycled least recently used by request order. The same input then makes the same decisions at
the same engine frames, so it renders the same samples however many timbres it visits.
The worker is watched: one that dies (a crash, the OOM killer) or grows past
`worker_memory_limit_bytes` is restarted on the same shared memory; the banks already loaded keep
playing meanwhile, the timbre requests it was rendering fail with the reason, the grid nodes are
rendered again. More than `MAX_RESTARTS` restarts within `RESTART_WINDOW_S` set `failed`.
Rendered rows of a model are kept on disk (`rt_engine.banks.bank_cache`; `cache_dir` "auto" is
`default_cache_dir()`, None turns it off), so a
restarted server or another render reads them instead of running the model again.
"""
from __future__ import annotations

import math
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rt_engine.core import voice_kernel as vk
from rt_engine.banks.bank_layout import BACKGROUND_CHUNK_ROWS, CHUNK_ROWS, BankLayout
from rt_engine.banks.bank_worker import PendingWorker, spawn_worker, start_worker, worker_arguments
from models.bank_source import KEYBOARD_PITCHES, TimbreRequest
from rt_engine.core.commands import DEFAULT_ADSR

DEFAULT_GRID_N = 5
DEFAULT_N_SLOTS = 12
WORKER_MEMORY_LIMIT_BYTES = 4 << 30
"""Resident memory past which the worker is restarted (bytes); the shipped model's worker holds
about 0.6 GB."""
WATCH_INTERVAL_S = 0.25
"""How often the listener checks the worker's health (alive, resident memory from /proc): not at
every message, which during a bank load came to 150 /proc reads a second in the audio process."""
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0
SUPERSEDED = "superseded by a newer timbre request"
ENVELOPE_FIELDS = [vk.S_ATTACK_S, vk.S_DECAY_S, vk.S_SUSTAIN, vk.S_RELEASE_S]


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
    first_stage_only: bool = False
    """Render the first chunk (the held pitches) only: the unrefined stage of a one-shot."""
    requested: float = field(default_factory=time.monotonic)
    """When the load was asked for (time.monotonic(), s)."""
    slot: int = -1
    published: bool = False
    selected: bool = False
    boosted: set = field(default_factory=set)

    def update(self, priority: int, generation: int, envelope, on_done, on_fail) -> None:
        """A newer request for the same bank joins this load: it takes the newer envelope and
        generation, and every requester hears the outcome."""
        self.priority = min(self.priority, priority)
        self.generation, self.envelope = max(self.generation, generation), envelope
        self.on_done = _both(self.on_done, on_done)
        self.on_fail = _both(self.on_fail, on_fail)


def _both(first: Callable | None, second: Callable | None) -> Callable | None:
    """One callback calling `first` then `second` (either may be None)."""
    if first is None or second is None or first is second:
        return first or second
    return lambda *args: (first(*args), second(*args))


class BankManager:
    """Bank provider backed by a worker process and shared-memory slots (see module docstring).
    Control threads call `request_*` and `note_requested`; the kernel reads `banks`, `slots`,
    `row_ready` and `row_pitch`."""

    initial_point = (0.5, 0.5)

    def __init__(self, model_dir: str | None, device_rate: int, n_slots: int = DEFAULT_N_SLOTS,
                 grid_n: int = DEFAULT_GRID_N, pitches: Sequence[int] = KEYBOARD_PITCHES,
                 render_ahead: bool = True, exact_delay_s: float = 0.15,
                 start_timeout_s: float = 120.0, cache_dir: str | Path | None = "auto",
                 worker: PendingWorker | None = None, compute_threads: int = 1,
                 request_initial_point: bool = True, store_points: bool = False, offline: bool = False):
        """`worker`: one spawned ahead by `bank_worker.spawn_worker(model_dir, cache_dir,
        compute_threads)` (the same arguments), so the model loads while the caller starts up;
        None spawns it here. `compute_threads`: the worker's (`bank_render.worker_main`).
        `request_initial_point`: render the grid around `initial_point` at once (False: when the
        caller knows a timbre request comes before any note, `request_initial_point()` later).
        `store_points`: write the exact banks of timbre-pad points to the disk cache too (`render`:
        the same score renders the same points again; live, every pad move would write one, some
        20 MB/s while the pad moves); grid nodes, presets and sounds are always written.
        `offline`: the caller drives every slot decision (module docstring; `exact_delay_s` and
        `render_ahead` do not apply)."""
        if n_slots < 5:
            raise ValueError(f"need at least 5 bank slots (4 grid nodes + 1 exact), got {n_slots}")
        if grid_n < 2:
            raise ValueError(f"grid_n must be >= 2 nodes per side, got {grid_n}")
        self.grid_n = grid_n
        self.row_pitch = np.asarray(pitches, dtype=np.float64)
        self.offline = offline
        self.render_ahead = render_ahead and not offline
        self.store_points = store_points
        self.exact_delay_s = exact_delay_s
        self._worker_args = (*worker_arguments(model_dir, cache_dir), start_timeout_s, compute_threads)
        self._worker = (worker or spawn_worker(model_dir, cache_dir, compute_threads)).wait(start_timeout_s)
        self.worker_memory_limit_bytes = WORKER_MEMORY_LIMIT_BYTES
        self.worker_restarts: list[float] = []  # monotonic times of restarts
        self._presets = self._worker.preset_names
        source_rate, n_samples = self._worker.source_rate, self._worker.n_samples
        self.layout = BankLayout.create(source_rate, device_rate, n_samples)
        self.loop_start, self.loop_end = self.layout.loop_start, self.layout.loop_end
        shape = (n_slots, self.row_pitch.size, self.layout.bank_frames)
        self._shm = shared_memory.SharedMemory(create=True, size=int(np.prod(shape)) * 4)
        self.banks = np.ndarray(shape, dtype=np.float32, buffer=self._shm.buf)
        self.banks[:] = 0.0
        self.slots = np.zeros((n_slots, vk.N_SLOT_FIELDS))
        self.row_ready = np.zeros((n_slots, self.row_pitch.size), dtype=np.uint8)
        self._attach(self._worker)
        self.warm_error: str | None = None
        """Why the worker could not load the model's networks (every render then fails), else None."""
        self._lock = threading.RLock()
        self._slot_state = ["free"] * n_slots        # free, loading, loaded, retiring, cancelling
        self._slot_key: list[str | None] = [None] * n_slots
        self._slot_job: list[_Job | None] = [None] * n_slots
        self._slot_used = [0] * n_slots              # LRU stamp: `_uses` when last wanted
        self._uses = 0
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
        self._latest_generation = 0  # of any timbre request: an older exact load is superseded
        self._restarting = False
        self._select: Callable[[int, int], bool] | None = None
        self.failed = ""
        self.last_bank_s = math.nan
        """Seconds from the request of the latest exact bank (a point, a preset, a one-shot's refined
        bank) to its last row (/status `bank_seconds`); nan until one completes."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="latentsynth-bank-manager",
                                        daemon=True)
        self._thread.start()
        if request_initial_point:
            self.request_initial_point()

    def request_initial_point(self) -> None:
        """The grid around `initial_point`, where the timbre starts."""
        self.request_xy(*self.initial_point, 0)

    @property
    def timbre_requested(self) -> bool:
        """True once a performer's timbre request (grid point, preset, sound) arrived."""
        return self._latest_generation > 0

    @property
    def worker_pid(self) -> int:
        """The bank worker's process id (it changes when the worker is restarted)."""
        return int(self._worker.process.pid)

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
            self._latest_generation = max(self._latest_generation, generation)
            corners = grid_nodes_around(x, y, self.grid_n)
            on_node = len(corners) == 1
            self._protected = {TimbreRequest("xy", nx, ny).key() for nx, ny, _ in corners}
            self._drop_exact_jobs(keep=set())
            self._exact_wanted = not on_node
            for nx, ny, _ in corners:
                self._want(TimbreRequest("xy", nx, ny), vk.SLOT_GRID, (nx, ny), 0)
            if self._exact_wanted and self.exact_delay_s <= 0 and not self.offline:
                self._want_exact()

    def request_preset(self, name: str, generation: int, envelope=None) -> None:
        """Load preset `name` as an exact bank with `envelope` (attack s, decay s, sustain,
        release s; None: the preset's own, else `DEFAULT_ADSR`); it plays once the held pitches
        are playable."""
        if name not in self._presets:
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(self._presets)}")
        if envelope is None:
            envelope = self._worker.preset_envelopes.get(name, DEFAULT_ADSR)
        self._want_exact_bank(TimbreRequest("preset", name=name), generation, envelope)

    def request_audio(self, path: str, generation: int, on_done: Callable[[], None],
                      on_fail: Callable[[str], None]) -> None:
        """Derive a timbre from a sound file in the worker; `on_done()` once the held pitches
        are playable, `on_fail(reason)` for a missing or unreadable file."""
        if not Path(path).is_file():
            on_fail(f"file not found: {path}")
            return
        refined = TimbreRequest("audio", path=path)
        if not self._worker.refines_one_shots:
            self._want_exact_bank(refined, generation, DEFAULT_ADSR, on_done, on_fail)
            return
        # two stages: the unrefined bank's held rows answer on_done, the refined bank follows
        self._want_exact_bank(TimbreRequest("audio", path=path, refine=False), generation, DEFAULT_ADSR,
                              on_done, on_fail, refined=refined)

    def _want_exact_bank(self, request: TimbreRequest, generation: int, envelope, on_done=None,
                         on_fail=None, refined: TimbreRequest | None = None) -> None:
        """Load and select the exact bank of `request`. With `refined`, `request` is its first stage:
        only its held rows render, they answer `on_done`, and the bank of `refined` renders next and
        is selected (crossfaded to) when its held rows land; a `refined` bank already playable
        is selected at once instead."""
        keys = {request.key()} | ({refined.key()} if refined is not None else set())
        with self._lock:
            self._latest_generation = max(self._latest_generation, generation)
            self._drop_exact_jobs(keep=keys)
            self._exact_wanted = False
            self._protected = keys
            if refined is not None and self._playable(refined.key()):
                self._want(refined, vk.SLOT_EXACT, self._point, 0, generation, envelope, on_done, on_fail)
                return
            self._want(request, vk.SLOT_EXACT, self._point, 0, generation, envelope, on_done, on_fail,
                       first_stage_only=refined is not None)
            if refined is not None:
                self._want(refined, vk.SLOT_EXACT, self._point, 0, generation, envelope)

    def _playable(self, key: str) -> bool:
        """Whether a slot holds the bank `key` and the callback may play it (loaded, or selected)."""
        for slot, slot_key in enumerate(self._slot_key):
            job = self._slot_job[slot]
            if slot_key == key and (self._slot_state[slot] == "loaded" or (job is not None and job.selected)):
                return True
        return False

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
                self._worker.requests.put(("boost", [row]))

    def state(self) -> str:
        """'failed', 'rendering' (urgent banks outstanding) or 'ready'."""
        if self.failed:
            return "failed"
        with self._lock:
            busy = any(job.priority == 0 for job in list(self._jobs.values()) + self._waiting)
        return "rendering" if busy or self._exact_wanted else "ready"

    def want_exact_point(self) -> None:
        """Offline: render the exact bank of the current point now (the score rests there); a
        point passed on its way plays from the grid nodes alone."""
        with self._lock:
            if self._exact_wanted:
                self._want_exact()

    def settle(self, timeout_s: float = 120.0) -> None:
        """Offline, between blocks: loads waiting for a slot take the ones the kernel has let go
        in the blocks so far, then every load in flight finishes (RuntimeError on a failed
        manager or past `timeout_s`)."""
        with self._lock:
            self._assign()
        if not self.wait_ready(timeout_s):
            raise RuntimeError(f"bank manager: banks not rendered within {timeout_s:g} s")

    def busy(self, include_exact: bool = True) -> bool:
        """True while the worker renders an urgent bank (grid nodes; exact banks too when
        `include_exact`). Jobs waiting for a slot do not count: the kernel frees slots."""
        with self._lock:
            if include_exact and self._exact_wanted and not self.offline:
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
            self._worker.close()
        finally:
            del self.banks
            self._shm.close()
            self._shm.unlink()

    # ---- bookkeeping (under the lock) ----------------------------------------------------
    def _want(self, request: TimbreRequest, kind: float, point, priority: int, generation: int = 0,
              envelope=DEFAULT_ADSR, on_done=None, on_fail=None, first_stage_only: bool = False) -> None:
        key = request.key()
        for slot, slot_key in enumerate(self._slot_key):
            if slot_key == key and self._slot_state[slot] in ("loading", "loaded"):
                self._slot_used[slot] = self._use()
                job = self._slot_job[slot]
                if job is not None and not job.selected:
                    job.update(priority, generation, envelope, on_done, on_fail)
                elif kind == vk.SLOT_EXACT:  # already playable: select it again at once
                    self.slots[slot, ENVELOPE_FIELDS] = envelope
                    self._select_slot(slot, generation, on_done, on_fail)
                return
        for job in self._waiting:
            if job.key == key:
                job.update(priority, generation, envelope, on_done, on_fail)
                return
        self._waiting.append(_Job(self._next_job, key, request, kind, point, priority, generation,
                                  envelope, frozenset(self._held_rows()), on_done, on_fail, first_stage_only))
        self._next_job += 1
        self._assign()

    def _use(self) -> int:
        """The next LRU stamp."""
        self._uses += 1
        return self._uses

    def _select_slot(self, slot: int, generation: int, on_done, on_fail=None) -> None:
        """Stage 3 and 4: the callback plays exact bank `slot`; the request hears `on_done`, or
        `on_fail(SUPERSEDED)` when a newer timbre request came meanwhile (the callback would
        not play it)."""
        if generation < self._latest_generation:
            if on_fail is not None:
                on_fail(SUPERSEDED)
            return
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

    def _drop_exact_jobs(self, keep: set) -> None:
        """Forget exact banks still outstanding for timbres the performer has left (all but the
        keys in `keep`); their requesters hear `on_fail(SUPERSEDED)`."""
        dropped = [j for j in self._waiting if j.kind == vk.SLOT_EXACT and j.key not in keep]
        self._waiting = [j for j in self._waiting if j not in dropped]
        for job in list(self._jobs.values()):
            if job.kind == vk.SLOT_EXACT and job.key not in keep and not job.published:
                self._worker.requests.put(("cancel", job.job_id))
                self._slot_state[job.slot] = "cancelling"
                del self._jobs[job.job_id]
                dropped.append(job)
        for job in dropped:
            if job.on_fail is not None:
                job.on_fail(SUPERSEDED)

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
        if self._restarting:
            return  # the jobs wait for the new worker
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
            self._slot_used[slot] = self._use()
            self._jobs[job.job_id] = job
            self.slots[slot, [vk.S_X, vk.S_Y]] = job.point
            self.slots[slot, ENVELOPE_FIELDS] = job.envelope
            first = len(job.needed) or (CHUNK_ROWS if job.priority == 0 else BACKGROUND_CHUNK_ROWS)
            store = self.store_points or not (job.kind == vk.SLOT_EXACT and job.request.kind == "xy")
            rows = self._row_order()[:first] if job.first_stage_only else self._row_order()
            self._worker.requests.put(("render", job.job_id, slot, job.request, rows, first, job.priority, store))

    def _row_order(self) -> list[int]:
        """Rows nearest the held pitches first, then outwards from them (or from middle C)."""
        centres = np.asarray(self._held or [60.0], dtype=np.float64)
        distance = np.abs(self.row_pitch[:, None] - centres[None, :]).min(axis=1)
        return [int(r) for r in np.argsort(distance, kind="stable")]

    # ---- listener thread -----------------------------------------------------------------
    def _listen(self) -> None:
        watched = 0.0
        while not self._stop.is_set():
            lost = False
            try:
                message = self._worker.results.get(timeout=0.05)
            except queue.Empty:
                message = None
            except (EOFError, OSError):
                message, lost = None, True  # the worker is gone: the check below restarts it
            with self._lock:
                if message is not None:
                    self._handle(message)
                reason = None
                if lost or time.monotonic() - watched >= WATCH_INTERVAL_S:
                    watched = time.monotonic()
                    reason = self._worker_trouble()
                if reason is None:
                    self._tick()
            if reason is not None and not self._restart_worker(reason):
                return

    def _worker_trouble(self) -> str | None:
        """Why the worker must be restarted, or None while it is healthy."""
        if self._stop.is_set():
            return None
        if not self._worker.process.is_alive():
            return f"bank worker exited with code {self._worker.process.exitcode}"
        memory = self._worker.memory_bytes()
        if memory > self.worker_memory_limit_bytes:
            return (f"bank worker used {memory / 2**20:.0f} MB, over its limit of "
                    f"{self.worker_memory_limit_bytes / 2**20:.0f} MB")
        return None

    def _restart_worker(self, reason: str) -> bool:
        """Replace the worker (see the module docstring). False when it cannot be restarted,
        with `failed` set. The lock is not held while the new worker loads."""
        now = time.monotonic()
        self.worker_restarts = [t for t in self.worker_restarts if now - t < RESTART_WINDOW_S] + [now]
        with self._lock:
            self._restarting = True
            lost = list(self._jobs.values())
            for job in lost:
                self._fail_job(job, f"{reason}; the bank worker was restarted")
            for slot, state in enumerate(self._slot_state):
                if state == "cancelling":  # its 'cancelled' reply will never come
                    self._slot_state[slot], self._slot_key[slot], self._slot_job[slot] = "free", None, None
            old = self._worker
        old.close(timeout_s=1.0)
        if len(self.worker_restarts) > MAX_RESTARTS:
            self.failed = f"{reason} ({len(self.worker_restarts)} restarts in {RESTART_WINDOW_S:.0f} s)"
            return False
        try:
            worker = start_worker(*self._worker_args)
        except RuntimeError as error:
            self.failed = f"{reason}; restarting it failed: {error}"
            return False
        self._attach(worker)
        with self._lock:
            self._worker, self._restarting = worker, False
            for job in lost:
                if job.kind == vk.SLOT_GRID:
                    self._want(job.request, job.kind, job.point, job.priority)
            self._assign()
        return True

    def _attach(self, worker) -> None:
        """Hand `worker` the shared memory; live, the worker is also asked to load the model's
        networks once the first bank is out or failed (`_handle`): not at the first miss, and not
        before the first banks (a worker idle between the attach and the first request would load
        torch then, 1.2 s before the starting point's banks)."""
        worker.requests.put(("attach", self._shm.name, self.banks.shape, self.layout, self.row_pitch))
        self._warm_due = self.render_ahead

    def _fail_job(self, job: _Job, reason: str) -> None:
        """Retire a job's slot (its published rows may still be playing) and tell its requester."""
        self.slots[job.slot, vk.S_KIND] = vk.SLOT_EMPTY
        self._retired_at[job.slot] = self.slots[job.slot, vk.S_SEEN]
        self._slot_state[job.slot] = "retiring" if job.published else "free"
        self._slot_key[job.slot], self._slot_job[job.slot] = None, None
        del self._jobs[job.job_id]
        if job.on_fail is not None:
            job.on_fail(reason)

    def _handle(self, message) -> None:
        if message[0] == "warm_failed":
            self.warm_error = message[2]
            print(f"latentsynth: warning: {message[2]}", file=sys.stderr, flush=True)
            return
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
                self._select_slot(job.slot, job.generation, job.on_done, job.on_fail)
        elif message[0] == "done":
            self._slot_state[job.slot], self._slot_job[job.slot] = "loaded", None
            del self._jobs[job.job_id]
            if job.kind == vk.SLOT_EXACT and not job.first_stage_only:
                self.last_bank_s = time.monotonic() - job.requested
        elif message[0] == "fail":
            self._fail_job(job, message[2])
        if self._warm_due and message[0] in ("done", "fail"):
            self._warm_due = False
            self._worker.requests.put(("warm",))  # it loads them once no job waits

    def _tick(self) -> None:
        if self.offline:
            return  # the caller decides (`settle`, `want_exact_point`)
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

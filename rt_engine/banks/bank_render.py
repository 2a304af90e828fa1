"""The bank worker process's body (`worker_main`, spawned by `rt_engine.banks.bank_worker`): it owns the
`BankSource`, renders the requested rows chunk by chunk, most urgent job first, retunes them,
prepares them for the kernel (`prepare_rows`) and writes them into the manager's shared memory.
Only the worker process imports this module.
"""
from __future__ import annotations

import gc
import os
import queue
import signal
from fractions import Fraction
from multiprocessing import resource_tracker, shared_memory

import numba
import numpy as np

from models.timbre_sources import load_bank_source
from rt_engine.core import voice_kernel as vk
from rt_engine.banks.bank_cache import BankCache
from rt_engine.banks.bank_layout import BACKGROUND_CHUNK_ROWS, CHUNK_ROWS, BankLayout
from rt_engine.banks.bank_tuning import measure_detune_cents, retune

FLUSH_SLICE_NOTES = 8
"""Deferred cache files written per pass of the worker loop while no urgent bank waits (a few ms)."""
MAX_DEFERRED_NOTES = 704
"""Past this many deferred cache files (four 88-key banks, raw and prepared: about 115 MB) a slice is
written even while an urgent bank waits, so a performer who never lets the worker idle does not
grow its memory."""
PARENT_CHECK_S = 1.0
"""An idle worker checks this often (s) that its server is alive, and exits when it is not."""


def prepare_rows(rows: np.ndarray, layout: BankLayout, detune_cents: np.ndarray | None = None) -> np.ndarray:
    """Resample notes float32 [n, n_source_samples] at `layout.source_rate` to the device rate
    (retuning each by its `detune_cents` [n] in the same pass, `bank_tuning.retune`) and bake the
    sustain loop: float32 [n, layout.bank_frames]. Reading past `loop_end` and continuing at
    `loop_start` is seamless (the end of the loop is crossfaded into the audio that precedes
    `loop_start`, and the tail repeats the loop's start)."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != layout.n_source_samples:
        raise ValueError(f"bank rows must be [n, {layout.n_source_samples}], got {rows.shape}")
    if detune_cents is None:
        detune_cents = np.full(rows.shape[0], np.nan)
    resampled = retune(rows, detune_cents, rate_ratio=Fraction(layout.device_rate, layout.source_rate))
    out = np.zeros((rows.shape[0], layout.bank_frames), dtype=np.float32)
    n = min(resampled.shape[1], layout.n_device_frames)
    out[:, vk.HEAD_PAD:vk.HEAD_PAD + n] = resampled[:, :n]
    start, end, xfade = layout.loop_start, layout.loop_end, layout.xfade_frames
    ramp = (np.arange(xfade, dtype=np.float32) + 1) / xfade
    out[:, end - xfade:end] = (1 - ramp) * out[:, end - xfade:end] + ramp * out[:, start - xfade:start]
    out[:, end:end + vk.HEAD_PAD] = out[:, start:start + vk.HEAD_PAD]
    return out


def tuned_rows(notes: np.ndarray, pitches: list[int], layout: BankLayout) -> np.ndarray:
    """Rendered notes float32 [n, n_source_samples] at MIDI `pitches`, retuned to their nominal
    pitch and prepared for the kernel (`prepare_rows`): float32 [n, layout.bank_frames]."""
    return prepare_rows(notes, layout, measure_detune_cents(notes, pitches, layout.source_rate))


def _bank_rows(source, cache: BankCache | None, conditioning, pitches: list[int], layout: BankLayout,
               store: bool = True) -> np.ndarray:
    """One chunk of a bank, ready for the kernel: float32 [len(pitches), layout.bank_frames];
    through the disk cache when there is one (a warm chunk is a file read; `store`: what is
    rendered is written to it)."""
    if cache is None:
        return tuned_rows(source.render_pitches(conditioning, pitches), pitches, layout)
    return cache.prepared_rows(source, conditioning, pitches, layout,
                               lambda notes, note_pitches: tuned_rows(notes, note_pitches, layout), store)


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Attach to the manager's block without registering it with the resource tracker (the
    manager, which created it, unlinks it; Python < 3.13 has no `track=False`)."""
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


def _next_request(requests, parent: int):
    """The next request, waiting as long as it takes; None once the server (`parent` pid) is gone."""
    while True:
        try:
            return requests.get(timeout=PARENT_CHECK_S)
        except queue.Empty:
            if os.getppid() != parent:  # the server died without stopping us (SIGKILL)
                return None


def worker_main(model_dir: str | None, cache_dir: str | None, requests, results,
                compute_threads: int = 1) -> None:
    """The worker process: owns the bank source, renders jobs chunk by chunk, most urgent job
    first, into the shared-memory slots. Messages in: attach, render, boost, cancel, warm (load the
    source's networks once idle, so the first render does not), stop. A worker whose server died
    without a stop (killed) exits within PARENT_CHECK_S of going idle. `compute_threads`: torch and
    inversion threads (1 beside live audio; an offline render, which has no audio thread to
    leave a core to, gives it every core)."""
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctrl-C goes to the server, which stops us
    os.nice(10)  # background work: the audio threads must win every contest for a core
    try:  # ... and a batch thread: it never preempts a waking audio or control thread
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        pass
    # One compute thread beside live audio: a second torch/OpenMP thread fights the audio process
    # for the other core (measured on 2 shared cores: one G call 3.9 ms with 1 thread, 248 ms with
    # 2). Set before torch loads (with the source's networks, at first use or "warm").
    compute_threads = max(1, min(int(compute_threads), numba.config.NUMBA_NUM_THREADS))
    os.environ["OMP_NUM_THREADS"] = str(compute_threads)
    os.environ["MKL_NUM_THREADS"] = str(compute_threads)
    try:
        numba.set_num_threads(compute_threads)
        source = load_bank_source(model_dir)
        cache = None
        if model_dir is not None and cache_dir is not None:  # a procedural bank is cheaper than a read
            cache = BankCache(cache_dir, model_dir, source.n_samples, defer_writes=True)
            cache.prune()
        results.put(("hello", source.preset_names(), source.preset_envelopes(), int(source.sample_rate),
                     int(source.n_samples), bool(source.refines_one_shots)))
    except Exception as error:  # any load failure is reported to the manager, which raises
        results.put(("fail", -1, f"cannot load bank source from {model_dir or 'procedural'}: {error}"))
        return
    gc.freeze()  # the imports' objects leave the collector: none of its passes, none at exit (0.1 s)
    attach = _next_request(requests, parent)
    if attach is None or attach[0] != "attach":  # gone, or stopped before its manager attached
        return
    _, shm_name, shape, layout, row_pitch = attach
    shm = _attach_untracked(shm_name)
    banks = np.ndarray(shape, dtype=np.float32, buffer=shm.buf)
    jobs: dict[int, dict] = {}
    warm_pending = False  # "warm" asked: load the source's networks once no job is waiting
    try:
        while True:
            messages = []
            writing = cache is not None and cache.pending_writes > 0
            if not jobs and not warm_pending and not writing:  # idle: wait for a request
                message = _next_request(requests, parent)
                if message is None:
                    return
                messages.append(message)
            while True:
                try:
                    messages.append(requests.get_nowait())
                except queue.Empty:
                    break
            for message in messages:
                if message[0] == "stop":
                    if cache is not None:
                        cache.flush()  # what was rendered is kept for the next run
                    return
                if message[0] == "render":
                    _, job_id, slot, request, rows, n_first, priority, store = message
                    jobs[job_id] = {"slot": slot, "request": request, "rows": list(rows), "store": store,
                                    "n_next": n_first, "priority": priority, "conditioning": None}
                elif message[0] == "warm":
                    warm_pending = True
                elif message[0] == "cancel":
                    jobs.pop(message[1], None)
                    results.put(("cancelled", message[1]))
                elif message[0] == "boost":
                    for job in jobs.values():
                        front = [r for r in message[1] if r in job["rows"]]
                        job["rows"] = front + [r for r in job["rows"] if r not in front]
            if writing and (all(job["priority"] > 0 for job in jobs.values())
                            or cache.pending_writes > MAX_DEFERRED_NOTES):
                # The disk writes (about 50 ms per 88 keys) wait until no urgent bank does, and go in
                # slices, so a request that arrives meanwhile waits for one slice at most.
                cache.flush(FLUSH_SLICE_NOTES)
                if not cache.pending_writes:
                    cache.prune()  # a session that visits many timbres stays within the limit too
                if not jobs:
                    continue
            if not jobs:
                if warm_pending:
                    warm_pending = False
                    try:
                        source.warm()
                    except Exception as error:  # bad weights: the manager warns; each render fails with it
                        results.put(("warm_failed", -1, f"cannot load the networks of {model_dir}: {error}"))
                continue
            job_id = min(jobs, key=lambda j: (jobs[j]["priority"], j))
            job = jobs[job_id]
            n_chunk = job["n_next"]
            job["n_next"] = CHUNK_ROWS if job["priority"] == 0 else BACKGROUND_CHUNK_ROWS
            chunk, job["rows"] = job["rows"][:n_chunk], job["rows"][n_chunk:]
            try:
                pitches = [int(round(row_pitch[r])) for r in chunk]
                if job["conditioning"] is None:  # once per request: file reads and f run here
                    job["conditioning"] = source.conditioning_for(job["request"])
                banks[job["slot"], chunk] = _bank_rows(source, cache, job["conditioning"], pitches, layout,
                                                       job["store"])
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

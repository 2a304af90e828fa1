"""The bank worker process, seen from the audio process: its layout, spawning, handle and watch.

The worker owns the `BankSource` and renders banks into shared memory: torch, the inversion and
file I/O run there, never in the audio process. `start_worker` spawns the process and waits for
its hello; its body is `rt_engine.banks.bank_render.worker_main`, which the audio process never imports
(nor scipy's resampler or torch that it needs). Each rendered row is retuned to its nominal pitch
(`bank_tuning`), resampled once to the device rate and given its crossfaded sustain loop
(`bank_render.prepare_rows`), then written into its slot of the manager's shared-memory block,
float32 [n_slots, n_rows, bank_frames].

Messages in (the manager's request queue): attach, render, boost, cancel, stop. Out (results):
hello, rows, done, fail, cancelled. `spawn_worker` starts the process without waiting, so its
source loads while the caller does other start-up work. The most urgent job renders first, chunk by chunk: urgent
jobs (priority 0) in chunks of `CHUNK_ROWS` (G's batch), background jobs (grid nodes rendered
ahead) in chunks of `BACKGROUND_CHUNK_ROWS`, so a request arriving meanwhile waits at most that
many rows for the worker (about 10 ms per row on one core at 32 kHz).
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WorkerHandle:
    """A started worker: its process, request and result queues, and what its hello said."""

    process: multiprocessing.Process
    requests: multiprocessing.Queue
    results: multiprocessing.Queue
    preset_names: list
    preset_envelopes: dict
    """Preset name -> (attack s, decay s, sustain, release s), for those that have their own."""
    source_rate: int
    n_samples: int
    refines_one_shots: bool = False
    """Whether the source refines one-shots at test time (`TimbreRequest.refine` matters)."""

    def memory_bytes(self) -> int:
        """The process's resident set (bytes; 0 once it is gone or off Linux)."""
        try:
            with open(f"/proc/{self.process.pid}/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the process (killed if it does not stop in time) and close the queues."""
        try:
            if self.process.is_alive():
                self.requests.put(("stop",))
                self.process.join(timeout_s)
        finally:
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout_s)
            for channel in (self.requests, self.results):
                channel.cancel_join_thread()  # unread messages must not hold up our exit
                channel.close()


@dataclass
class PendingWorker:
    """A spawned worker whose source is still loading: `wait` for its hello."""

    process: multiprocessing.Process
    requests: multiprocessing.Queue
    results: multiprocessing.Queue

    def wait(self, start_timeout_s: float) -> WorkerHandle:
        """The started worker. Raises RuntimeError if its source cannot load or it does not answer
        within `start_timeout_s` (s)."""
        hello, deadline = None, time.monotonic() + start_timeout_s
        while hello is None:
            try:
                hello = self.results.get(timeout=0.2)
            except queue.Empty:
                if not self.process.is_alive() or time.monotonic() > deadline:
                    self.process.kill()
                    raise RuntimeError(f"bank worker did not start (exit code "
                                       f"{self.process.exitcode}, {start_timeout_s} s allowed)") from None
        if hello[0] == "fail":
            self.process.join(5)
            raise RuntimeError(hello[2])
        _, presets, envelopes, source_rate, n_samples, refines_one_shots = hello
        return WorkerHandle(self.process, self.requests, self.results, list(presets), dict(envelopes),
                            int(source_rate), int(n_samples), bool(refines_one_shots))

    def kill(self) -> None:
        """Stop a worker that will not be used."""
        self.process.kill()
        self.process.join(5)


def worker_arguments(model_dir, cache_dir) -> tuple[str | None, str | None]:
    """(model folder, bank cache folder) as the worker takes them: `cache_dir` "auto" (the worker
    resolves it: `bank_cache.default_cache_dir()`), a folder, or None (no cache)."""
    return (None if model_dir is None else str(model_dir), None if cache_dir is None else str(cache_dir))


def spawn_worker(model_dir: str | None, cache_dir: str | Path | None = "auto",
                 compute_threads: int = 1) -> PendingWorker:
    """Start the worker process; it loads its source while the caller goes on (`PendingWorker.wait`).
    Spawned ahead of its `BankManager` (passed as `worker=`), the model loads while the audio
    device, the engine and the GRU voice start. `compute_threads`: see `bank_render.worker_main`."""
    context = multiprocessing.get_context("spawn")
    requests, results = context.Queue(), context.Queue()
    process = context.Process(target=_worker_entry, name="latentsynth-banks", daemon=True,
                              args=(*worker_arguments(model_dir, cache_dir), requests, results,
                                    int(compute_threads)))
    process.start()
    return PendingWorker(process, requests, results)


def start_worker(model_dir: str | None, cache_dir: str | Path | None, start_timeout_s: float,
                 compute_threads: int = 1) -> WorkerHandle:
    """Spawn the worker and wait for its hello (see `PendingWorker.wait`)."""
    return spawn_worker(model_dir, cache_dir, compute_threads).wait(start_timeout_s)


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc mallopt options
MALLOC_SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 2 ** 31 - 1, M_TOP_PAD: 64 << 20}
"""glibc `mallopt` settings of the worker: blocks up to 32 MB (G's activations, the inversion's
spectrograms) come from the heap, which grows 64 MB at a time and keeps what is freed, so a warm
worker maps and unmaps no memory per bank. Each munmap or brk that returns memory is a stretch of
kernel time on a core the audio threads may need (ftrace on this 2-vCPU VM, whose kernel does not
preempt: up to 5.8 ms in one munmap, 2.8 ms in one brk, during timbre moves)."""


def _keep_memory(settings: dict[int, int] = MALLOC_SETTINGS) -> bool:
    """Apply `settings` with glibc's mallopt; False where there is no glibc or it refuses one."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(ctypes.c_int(option), ctypes.c_int(value)) == 1 for option, value in settings.items())


def _worker_entry(model_dir: str | None, cache_dir: str | None, requests, results, compute_threads: int) -> None:
    """The spawned process's target: imports the worker's body there only."""
    _keep_memory()
    from rt_engine.banks.bank_cache import default_cache_dir  # the worker's imports (numpy, torch, scipy) stay out
    from rt_engine.banks.bank_render import worker_main  # of the caller until it needs them: it spawns first

    cache_dir = str(default_cache_dir()) if cache_dir == "auto" else cache_dir
    worker_main(model_dir, cache_dir, requests, results, compute_threads)
    results.close()
    results.join_thread()  # every message is in the pipe; then exit without tearing the interpreter
    os._exit(0)  # down (0.4 s once torch is loaded), as multiprocessing's own forked children do

"""A process tree in /proc: its descendants, the /dev/shm files they map, and whether a signal
ends it cleanly (exit code, children gone, shared memory unlinked). Linux only."""
from __future__ import annotations

import ctypes
import os
import subprocess
import time
from pathlib import Path

SYS_TGKILL = 234  # x86-64 Linux


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def shared_memory(pids: set[int]) -> set[str]:
    """/dev/shm files mapped by any of `pids`."""
    names = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        names |= {line.split()[-1] for line in maps.splitlines() if "/dev/shm/" in line}
    return names


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(map(alive, pids)):
        time.sleep(0.1)
    return {pid for pid in pids if alive(pid)}


def thread_ids(pid: int) -> list[int]:
    """The process's threads (tids), the main thread first."""
    return sorted(int(task.name) for task in Path(f"/proc/{pid}/task").glob("*"))


def signal_thread(pid: int, tid: int, signum: int) -> None:
    """Deliver `signum` to thread `tid` of process `pid` (tgkill), as the kernel may do with a
    signal sent to the process."""
    if ctypes.CDLL(None, use_errno=True).syscall(SYS_TGKILL, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def signalled_cleanly(process: subprocess.Popen, signum: int, expected_code: int, to_thread: int | None = None) -> bool:
    """Send `signum` (to the process, or to its thread `to_thread`); True when the process exits
    with `expected_code` within 30 s and its children (bank worker, resource tracker) and the
    shared memory they mapped are gone."""
    children = descendants(process.pid)
    shared = shared_memory(children | {process.pid})
    assert children and shared, (children, shared)
    if to_thread is None:
        process.send_signal(signum)
    else:
        signal_thread(process.pid, to_thread, signum)
    assert process.wait(timeout=30) == expected_code
    assert wait_gone(children, 10.0) == set()
    return not any(Path(name).exists() for name in shared)

"""Numba's on-disk cache, kept honest for kernels that call into other modules.

Numba keys a cached function on its own source file alone: a kernel compiled with callees from
another module keeps running the old callees after that module changes (an upgrade, an edit), with
no error. `drop_stale_cache(__file__, [callee modules])`, called in the caller's module before its
cached kernels are defined, stores a hash of the callees' sources beside the module's cache files
and deletes those files when the hash no longer matches, so the kernels compile afresh once.

Public API:
    drop_stale_cache(module_file, callee_files) -> bool (True when stale files were removed)
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence


def _callee_hash(callee_files: Sequence[str | Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(str(Path(p).resolve()) for p in callee_files):
        digest.update(path.encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def drop_stale_cache(module_file: str | Path, callee_files: Sequence[str | Path]) -> bool:
    """Remove `module_file`'s Numba cache files (`__pycache__/<module>.*.nbi|nbc`) when the sources
    of `callee_files` changed since they were written; record the callees' hash. Quietly does
    nothing where the cache folder cannot be written (Numba then caches elsewhere or not at all)."""
    module = Path(module_file).resolve()
    cache = module.parent / "__pycache__"
    stamp = cache / f"{module.stem}.callees.sha256"
    current = _callee_hash(callee_files)
    try:
        if stamp.is_file() and stamp.read_text() == current:
            return False
        removed = False
        for path in list(cache.glob(f"{module.stem}.*.nbi")) + list(cache.glob(f"{module.stem}.*.nbc")):
            path.unlink(missing_ok=True)
            removed = True
        cache.mkdir(exist_ok=True)
        stamp.write_text(current)
        return removed
    except OSError:
        return False

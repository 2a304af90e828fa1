"""Numba's on-disk cache, kept honest for kernels that call into other modules.

Numba keys a cached function on its own source file alone: a kernel compiled with callees from
another module keeps running the old callees after that module changes (an upgrade, an edit), with
no error. `drop_stale_cache(__name__)`, called in the kernel module after its imports and before its
cached kernels are defined, hashes the sources of the project modules it imported from (models/,
rt_engine/), stores the hash beside the module's cache files and deletes those files when the hash
no longer matches, so the kernels compile afresh once.

Public API:
    project_imports(module_name) -> list[Path] (the project modules `module_name` imported from)
    drop_stale_cache(module_name) -> bool (True when stale files were removed)
    drop_stale_cache_files(module_file, callee_files) -> bool (the same, callees given)
"""
from __future__ import annotations

import ast
import hashlib
import sys
from pathlib import Path
from typing import Sequence


def _callee_hash(callee_files: Sequence[str | Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(str(Path(p).resolve()) for p in callee_files):
        digest.update(path.encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("models", "rt_engine")


def project_imports(module_name: str) -> list[Path]:
    """Source files of the project modules (models/, rt_engine/) that module `module_name` imports
    at its top level, read from its import statements (constants imported by name included),
    itself and this module excluded."""
    module = sys.modules[module_name]
    own = Path(module.__file__).resolve()
    files = set()
    for node in ast.parse(own.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            imported = sys.modules.get(name)
            path = Path(getattr(imported, "__file__", "") or "").resolve() if imported is not None else None
            if (path and path not in (own, Path(__file__).resolve()) and path.name != "__init__.py"
                    and any(path.is_relative_to(PROJECT_ROOT / package) for package in PROJECT_PACKAGES)):
                files.add(path)
    return sorted(files)


def drop_stale_cache(module_name: str) -> bool:
    """`drop_stale_cache_files` for module `module_name` and the project modules it imported."""
    return drop_stale_cache_files(sys.modules[module_name].__file__, project_imports(module_name))


def drop_stale_cache_files(module_file: str | Path, callee_files: Sequence[str | Path]) -> bool:
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

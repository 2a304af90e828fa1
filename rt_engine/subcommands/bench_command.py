"""`latentsynth bench [NAME [ARGS...]]`: run bench/NAME.py with this Python and pass its output through.

With no NAME, lists the benchmarks. Benchmarks are the scripts in the repository's `bench/` folder;
each prints JSON and exits 0 (they never pass or fail on their figures). They are not installed with
the package: an installed `latentsynth` without the checkout beside it says so and exits 2.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def benchmark_names(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Names of the benchmark scripts in `bench_dir` (file stems of *.py, sorted, private ones skipped)."""
    if not bench_dir.is_dir():
        return []
    return sorted(p.stem for p in bench_dir.glob("*.py") if not p.stem.startswith("_"))


def _first_docstring_line(path: Path) -> str:
    """The first line of a script's module docstring, read without importing it ('' if none)."""
    text = path.read_text(encoding="utf-8", errors="replace").lstrip()
    for quote in ('"""', "'''"):
        if text.startswith(quote):
            return text[len(quote):].split("\n", 1)[0].strip().rstrip(quote).strip()
    return ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="benchmark to run (bench/NAME.py); omit to list them")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")


def main(args: argparse.Namespace, bench_dir: Path = BENCH_DIR) -> int:
    if not bench_dir.is_dir():
        print(f"latentsynth bench needs a source checkout: the benchmarks are the scripts in its bench/ "
              f"folder, which an installed package does not include (looked in {bench_dir})", file=sys.stderr)
        return 2
    names = benchmark_names(bench_dir)
    if args.name is None:
        if not names:
            print(f"no benchmarks in {bench_dir}", file=sys.stderr)
            return 1
        for name in names:
            print(f"{name:20s} {_first_docstring_line(bench_dir / f'{name}.py')}")
        return 0
    if args.name not in names:
        known = ", ".join(names) if names else "none"
        print(f"latentsynth bench: unknown benchmark {args.name!r}; known benchmarks: {known}", file=sys.stderr)
        return 2
    completed = subprocess.run([sys.executable, str(bench_dir / f"{args.name}.py"), *args.bench_args], check=False)
    return completed.returncode

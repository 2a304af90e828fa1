"""`latentsynth bench`: lists, runs and refuses benchmarks by name."""
import argparse
import sys
import tomllib
from pathlib import Path

from rt_engine.subcommands import bench_command


def _bench_dir(tmp_path):
    (tmp_path / "echo_args.py").write_text(
        '"""Prints its arguments as JSON."""\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n')
    (tmp_path / "_private.py").write_text("")
    return tmp_path


def test_without_a_name_it_lists_benchmarks_with_their_summary(tmp_path, capsys):
    code = bench_command.main(argparse.Namespace(name=None, bench_args=[]), _bench_dir(tmp_path))
    listing = capsys.readouterr().out
    assert code == 0
    assert "echo_args" in listing and "Prints its arguments" in listing and "_private" not in listing


def test_a_named_benchmark_runs_with_its_arguments(tmp_path, capfd):
    code = bench_command.main(argparse.Namespace(name="echo_args", bench_args=["--seconds", "2"]),
                              _bench_dir(tmp_path))
    assert code == 0
    assert '["--seconds", "2"]' in capfd.readouterr().out


def test_an_unknown_benchmark_names_the_known_ones(tmp_path, capsys):
    code = bench_command.main(argparse.Namespace(name="warp", bench_args=[]), _bench_dir(tmp_path))
    assert code == 2
    assert "echo_args" in capsys.readouterr().err


def test_the_shipped_benchmarks_are_found():
    assert {"inversion", "latency", "polyphony", "stability"} <= set(bench_command.benchmark_names())


def test_without_a_checkout_it_says_the_benchmarks_need_one(tmp_path, capsys):
    for name in (None, "latency"):
        code = bench_command.main(argparse.Namespace(name=name, bench_args=[]), tmp_path / "site-packages" / "bench")
        assert code == 2 and "needs a source checkout" in capsys.readouterr().err


def test_the_default_training_configs_are_package_data():
    root = Path(bench_command.__file__).resolve().parents[2]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {path for pattern in package_data["training"] for path in (root / "training").glob(pattern)}
    assert {root / "training" / "configs" / f"{kind}_default.json" for kind in ("gan", "features", "grid", "gru")} <= shipped

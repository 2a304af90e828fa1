"""The `latentsynth` dispatcher: every subcommand is listed; help works; the console script runs."""
import subprocess
import sys

import pytest

from rt_engine import cli


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for name in ("serve", "render", "generate", "dataset", "train", "eval", "bench", "devices"):
        assert name in help_text


def test_no_subcommand_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_a_missing_subcommand_module_says_not_built_and_fails(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "serve", ("rt_engine.no_such_module", "play live"))
    assert cli.main(["serve", "--anything"]) == 2
    assert "not built yet" in capsys.readouterr().err


def test_an_unknown_subcommand_is_an_argparse_error():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fly"])
    assert exit_info.value.code == 2


def test_module_entry_point_runs_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-m", "rt_engine.cli", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "devices" in result.stdout


@pytest.mark.parametrize("command", ["render", "serve"])
def test_a_runtime_subcommand_loads_neither_training_nor_torch(command):
    code = ("import sys; from rt_engine.cli import build_parser; build_parser(%r); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('training')))" % command)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_build_caches_renders_a_note_through_every_layer(tmp_path):
    from rt_engine.subcommands.build_caches_command import build
    from tests.support.osc_udp import procedural_model

    summary = build(str(procedural_model(tmp_path / "m")))
    assert summary["failures"] == 0 and summary["events"] == 4 and summary["duration_s"] > 0.3

"""docs/osc.md is the registry's generated reference, kept in step with the code."""
from pathlib import Path

from rt_engine.osc.osc_registry import markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "osc.md"


def test_committed_osc_reference_equals_the_generated_one():
    assert DOC.read_text(encoding="utf-8") == markdown(), (
        "docs/osc.md is out of date: run `python3 -m rt_engine.osc.osc_registry --markdown > docs/osc.md`")

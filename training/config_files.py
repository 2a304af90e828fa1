"""Training configs as JSON files, read into frozen dataclasses with clear errors."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def read_config_json(path: str | Path) -> dict:
    """The JSON object in `path`; a missing file or bad JSON is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return values


def build_dataclass(config_class: type, values: dict[str, Any], source: str | Path,
                    overrides: dict[str, Any] | None = None):
    """`config_class(**values)` with non-None `overrides` applied and JSON lists made tuples;
    unknown fields or bad values raise ValueError naming `source`."""
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{source}: unknown fields {sorted(unknown)} for {config_class.__name__}; "
                         f"known: {sorted(known)}")
    merged = {**values, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        return config_class(**{k: _tuples(v) for k, v in merged.items()})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: invalid {config_class.__name__}: {error}") from error


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value

"""Checkpoints: safetensors weights + JSON config (the model's frozen dataclass) + JSON metadata.

A checkpoint is a folder:
    config.json        {"class": "GeneratorConfig", "config": {...dataclass fields...}}
    model.safetensors  tensors by name (never pickle)
    metadata.json      free-form: data, steps, metrics, time
Loading validates everything and raises `CheckpointError` naming the file and what is wrong.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy_file

ConfigT = TypeVar("ConfigT")


class CheckpointError(ValueError):
    """A checkpoint folder or file is missing, corrupt, or does not match the expected model."""


def save_checkpoint(folder: str | Path, config: Any, tensors: dict, metadata: dict | None = None) -> Path:
    """Write `config` (a dataclass instance), `tensors` (name -> torch.Tensor) and `metadata` to
    `folder`, atomically per file (write to a temporary name, then rename)."""
    from safetensors.torch import save_file  # heavy: torch only when saving (training)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_record = {"class": type(config).__name__, "config": dataclasses.asdict(config)}
    _write_atomic(folder / "config.json", json.dumps(config_record, indent=2).encode())
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    temporary = folder / "model.safetensors.tmp"
    save_file(contiguous, str(temporary))
    os.replace(temporary, folder / "model.safetensors")
    _write_atomic(folder / "metadata.json", json.dumps(metadata or {}, indent=2, default=str).encode())
    return folder


def load_config(folder: str | Path, config_class: type[ConfigT]) -> ConfigT:
    """Rebuild the frozen dataclass `config_class` from `folder/config.json`."""
    path = Path(folder) / "config.json"
    record = _read_json(path)
    if not isinstance(record, dict) or "config" not in record:
        raise CheckpointError(f"{path}: expected an object with a 'config' field")
    if record.get("class") not in (None, config_class.__name__):
        raise CheckpointError(f"{path}: holds a {record.get('class')}, expected {config_class.__name__}")
    fields = {field.name for field in dataclasses.fields(config_class)}
    values = record["config"]
    unknown = set(values) - fields
    if unknown:
        raise CheckpointError(f"{path}: unknown config fields {sorted(unknown)} for {config_class.__name__}")
    try:
        return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid {config_class.__name__}: {error}") from error


def load_tensors(folder: str | Path) -> dict:
    """Load `folder/model.safetensors` as name -> torch.Tensor (CPU)."""
    from safetensors.torch import load_file  # heavy: torch tensors only for torch models

    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {path}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from error


def load_metadata(folder: str | Path) -> dict:
    """`folder/metadata.json`, or {} when absent."""
    path = Path(folder) / "metadata.json"
    return _read_json(path) if path.is_file() else {}


def load_arrays(folder: str | Path) -> dict:
    """Load `folder/model.safetensors` as name -> float32/int NumPy array, without torch (the
    runtime's loader)."""
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {path}")
    try:
        return load_numpy_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from error


def load_state_into(module, folder: str | Path) -> None:
    """Load weights into a torch module, strictly; mismatches name the file and the keys."""
    tensors = load_tensors(folder)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{Path(folder) / 'model.safetensors'} does not match the model: {error}") from error


def _read_json(path: Path):
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from error


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)

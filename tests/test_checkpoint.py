"""Checkpoint folders: round trip, and every kind of bad file is an error that names the file."""
import json
from dataclasses import dataclass

import pytest
import torch

from models.checkpoint import (CheckpointError, load_config, load_metadata, load_state_into,
                               load_tensors, save_checkpoint)


@dataclass(frozen=True)
class TinyConfig:
    width: int = 4
    sizes: tuple = (1, 2)


def _save(tmp_path):
    module = torch.nn.Linear(3, TinyConfig().width)
    save_checkpoint(tmp_path, TinyConfig(), module.state_dict(), {"steps": 7})
    return module


def test_round_trip_restores_config_weights_and_metadata(tmp_path):
    module = _save(tmp_path)
    assert load_config(tmp_path, TinyConfig) == TinyConfig()
    restored = torch.nn.Linear(3, 4)
    load_state_into(restored, tmp_path)
    torch.testing.assert_close(restored.weight, module.weight)
    assert load_metadata(tmp_path) == {"steps": 7}


def test_missing_weights_name_the_file(tmp_path):
    _save(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_tensors(tmp_path)


def test_corrupt_weights_name_the_file(tmp_path):
    _save(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_tensors(tmp_path)


def test_corrupt_config_names_the_file(tmp_path):
    _save(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        load_config(tmp_path, TinyConfig)


def test_config_of_another_model_is_refused(tmp_path):
    _save(tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    record["class"] = "SomethingElse"
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="SomethingElse"):
        load_config(tmp_path, TinyConfig)


def test_unknown_config_fields_are_refused(tmp_path):
    _save(tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    record["config"]["evil"] = 1
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="evil"):
        load_config(tmp_path, TinyConfig)


def test_weights_of_another_shape_are_refused(tmp_path):
    _save(tmp_path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_state_into(torch.nn.Linear(3, 5), tmp_path)

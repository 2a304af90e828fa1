"""The audio process loads the GRU voice without torch: the repacked weights equal those repacked
from the torch model, and a checkpoint whose weights do not fit its config is a clear error."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.checkpoint import CheckpointError
from models.gru import GruSynth, save_gru
from models.gru_config import GruSynthConfig
from models.gru_stream import load_stream_weights, stream_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gru")
    model = GruSynth(GruSynthConfig.preset("1x64"))
    save_gru(folder, model, {})
    return folder, model


@pytest.mark.parametrize("compression", ["int8", "fp32"])
def test_weights_loaded_without_torch_equal_the_torch_models(checkpoint, compression):
    folder, model = checkpoint
    loaded, config = load_stream_weights(folder, compression)
    expected = stream_weights(model, compression)
    assert config == model.config
    for name in expected._fields:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(expected, name), err_msg=name)


def test_serve_loads_the_voice_without_importing_torch(checkpoint):
    folder, _ = checkpoint
    model_dir = folder.parent / "model_for_serve"
    shutil.copytree(folder, model_dir / "gru", dirs_exist_ok=True)
    code = ("import sys; from rt_engine.subcommands.gru_voice import load_stream_layer; "
            f"layer = load_stream_layer({str(model_dir)!r}, 'auto'); "
            "print(layer is not None, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["True", "False"], result.stderr


def test_weights_that_do_not_fit_the_config_name_the_file(checkpoint, tmp_path):
    folder, _ = checkpoint
    shutil.copytree(folder, tmp_path / "gru")
    record = json.loads((tmp_path / "gru" / "config.json").read_text())
    record["config"]["hidden_size"] = 128
    (tmp_path / "gru" / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="model.safetensors does not match"):
        load_stream_weights(tmp_path / "gru")

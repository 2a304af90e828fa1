"""The GRU voice as `serve` and `render` start it: `--gru-temperature`, the start temperature from
the checkpoint's metadata, and loading the layer (torch-free) when the model folder has one.
Standard library only at import: the commands' parsers load it before anything heavy."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_gru_temperature_argument(parser: argparse.ArgumentParser) -> None:
    """`--gru-temperature T` (0..2), shared by serve and render."""
    parser.add_argument("--gru-temperature", type=float, default=None, metavar="T",
                        help="sampling temperature of the GRU voice at start, 0..2 (0 = argmax; "
                             "default: the model's metadata.json `sampling_temperature`, else 1); "
                             "live: /gru/temperature")


def _checked_temperature(value, source: str) -> float:
    from rt_engine.osc.osc_registry import MAX_TEMPERATURE  # run-time import: subcommand modules load fast (rt_engine.cli)

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= MAX_TEMPERATURE:
        raise ValueError(f"{source} must be a number in [0, {MAX_TEMPERATURE:g}], got {value!r}")
    return float(value)


def gru_temperature(gru_dir: str | Path, override: float | None = None) -> float:
    """Start temperature of the GRU voice in checkpoint folder `gru_dir`: `override`
    (`--gru-temperature`) when given, else metadata.json's optional "sampling_temperature", else 1.0.
    A value outside [0, 2] is a ValueError naming the option or the file."""
    from models.checkpoint import load_metadata  # run-time import: subcommand modules load fast (rt_engine.cli)

    if override is not None:
        return _checked_temperature(override, "--gru-temperature")
    path = Path(gru_dir) / "metadata.json"
    metadata = load_metadata(gru_dir)
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(metadata).__name__}")
    return _checked_temperature(metadata.get("sampling_temperature", 1.0), f"{path}: sampling_temperature")


def has_gru_voice(model_dir: str | None, choice: str = "auto") -> bool:
    """True when `choice` is auto and `model_dir/gru` holds a GRU voice."""
    return choice != "none" and model_dir is not None and (Path(model_dir) / "gru" / "config.json").is_file()


def load_stream_layer(model_dir: str | None, choice: str, threaded: bool = True,
                      temperature: float | None = None):
    """The model's GRU voice when `model_dir/gru` holds one (and `choice` is auto), else None.
    `threaded=False` for offline rendering: the caller drives `render_available()`. `temperature`
    overrides the checkpoint's default sampling temperature (see `gru_temperature`); it is checked
    even when there is no GRU, so a bad option never passes silently."""
    if temperature is not None:
        _checked_temperature(temperature, "--gru-temperature")
    if not has_gru_voice(model_dir, choice):
        return None
    from rt_engine.gru.gru_layer import GruLayer  # run-time import: subcommand modules load fast (rt_engine.cli)

    gru_dir = Path(model_dir) / "gru"
    return GruLayer.from_dir(gru_dir, threaded=threaded, temperature=gru_temperature(gru_dir, temperature))

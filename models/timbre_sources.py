"""The timbre-source registry: which `BankSource` a model folder holds, and the default folder.

A model folder names its source in `manifest.json`: `{"bank_source": NAME}` with NAME a key of
`TIMBRE_SOURCES`; a folder without a manifest that holds `gan/config.json` is a GAN model. Each
registered module exposes `load_source(model_dir) -> BankSource`, so a new generator is one module
plus one line here. The modules are imported by name when a folder asks for them: the GAN's pulls
in torch, which only the bank worker process may load.

Public API:
    TIMBRE_SOURCES                      name -> module path
    DEFAULT_MODEL_DIR                   models/pretrained/default (Path)
    source_name(model_dir) -> str       the registry name the folder asks for
    load_bank_source(model_dir | None) -> BankSource   (None: the procedural stand-in)
    default_model_dir() -> str | None   DEFAULT_MODEL_DIR when it holds a model, else None
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

TIMBRE_SOURCES = {
    "gan": "models.gan_bank",
    "procedural": "models.procedural_source",
}
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "pretrained" / "default"
MANIFEST = "manifest.json"


def source_name(model_dir: str | Path) -> str:
    """The registry name `model_dir` asks for (its manifest, else "gan" when it holds gan/).
    A missing folder raises FileNotFoundError; an unknown or absent source, ValueError."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    manifest = model_dir / MANIFEST
    if manifest.is_file():
        try:
            name = json.loads(manifest.read_text()).get("bank_source")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
            raise ValueError(f"{manifest}: not a valid manifest ({error})") from error
        if name not in TIMBRE_SOURCES:
            raise ValueError(f"{manifest}: unknown bank_source {name!r}; known: {', '.join(TIMBRE_SOURCES)}")
        return name
    if (model_dir / "gan" / "config.json").is_file():
        return "gan"
    raise ValueError(f"{model_dir} holds no {MANIFEST} naming a bank source and no GAN (gan/config.json)")


def load_bank_source(model_dir: str | Path | None):
    """The `BankSource` of a model folder (None: the procedural stand-in). A folder that exists
    but holds a bad model is an error naming it."""
    if model_dir is None:
        name, model_dir = "procedural", None
    else:
        name, model_dir = source_name(model_dir), Path(model_dir)
    return importlib.import_module(TIMBRE_SOURCES[name]).load_source(model_dir)


def default_model_dir() -> str | None:
    """`DEFAULT_MODEL_DIR` when it holds a model, else None (the procedural source)."""
    try:
        source_name(DEFAULT_MODEL_DIR)
    except (FileNotFoundError, ValueError):
        return None
    return str(DEFAULT_MODEL_DIR)

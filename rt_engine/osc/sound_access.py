"""Which sound files an OSC client may have the server read (`/timbre/audio`), checked before reading.

A path is resolved (symbolic links followed, `..` removed) and must lie inside one of the folders
the operator allowed (`serve --sounds DIR`, default `default_sound_dirs()`); the reason given for
a path outside them is the same whether or not it exists. Inside, it must be a regular file whose
header (`soundfile.info`, which reads only the header) says a rate of 8..192 kHz, 1..8 channels
and at most `MAX_SOUND_S` seconds, so what the bank worker then reads is bounded (at most
MAX_SOUND_S * 192 kHz * 8 channels samples).

Public API: `SoundAccess(dirs)`, its `check(path) -> str`, `default_sound_dirs()`, `OUTSIDE`.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

import soundfile

MIN_RATE_HZ, MAX_RATE_HZ = 8_000, 192_000
MAX_CHANNELS = 8
MAX_SOUND_S = 10.0
OUTSIDE = "path is outside the allowed sound folders (serve --sounds DIR)"


def default_sound_dirs() -> tuple[str, ...]:
    """The folder allowed when the operator names none: `$XDG_DATA_HOME/latentsynth/sounds`
    (default `~/.local/share/latentsynth/sounds`)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (str(Path(data_home) / "latentsynth" / "sounds"),)


class SoundAccess:
    """The allowed folders (resolved once); `check` vets one requested path."""

    def __init__(self, dirs: Iterable[str | Path]):
        self.dirs = tuple(os.path.realpath(os.path.expanduser(str(d))) for d in dirs)

    def check(self, path: str) -> str:
        """The resolved path the worker may read for `path`; raises ValueError with the reason."""
        try:
            real = os.path.realpath(os.path.expanduser(path))
        except (ValueError, OSError):  # NUL bytes, loops
            raise ValueError(OUTSIDE) from None
        if not any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in self.dirs):
            raise ValueError(OUTSIDE)
        try:
            mode = os.stat(real).st_mode
        except OSError as error:
            raise ValueError(f"cannot read {path}: {error.strerror}") from None
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is not a regular file")
        try:
            info = soundfile.info(real)
        except Exception:  # soundfile raises several types for bad files
            raise ValueError(f"{path} is not a sound file soundfile can read") from None
        if not MIN_RATE_HZ <= info.samplerate <= MAX_RATE_HZ:
            raise ValueError(f"{path}: sample rate {info.samplerate} Hz outside "
                             f"{MIN_RATE_HZ}..{MAX_RATE_HZ} Hz")
        if not 1 <= info.channels <= MAX_CHANNELS:
            raise ValueError(f"{path}: {info.channels} channels, at most {MAX_CHANNELS}")
        if info.frames <= 0:
            raise ValueError(f"{path} holds no audio")
        if info.frames > MAX_SOUND_S * info.samplerate:
            raise ValueError(f"{path} lasts {info.frames / info.samplerate:.1f} s, at most {MAX_SOUND_S:g} s "
                             "(a one-shot sound)")
        return real

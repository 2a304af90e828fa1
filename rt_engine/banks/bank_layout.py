"""What the bank worker and the manager agree on: the geometry of a prepared bank row at the device
rate (`BankLayout`) and the worker's chunk sizes."""
from __future__ import annotations

import math
from dataclasses import dataclass

from rt_engine.core import voice_kernel as vk

CHUNK_ROWS = 8
"""Rows per render call of an urgent bank."""
BACKGROUND_CHUNK_ROWS = 1
"""Rows per render call of a bank rendered ahead: the most an urgent request waits behind (one row,
about 20 ms at 32 kHz; `python3 bench/oneshot_live.py --repeats 5` then measures a `/timbre/audio`
-> `/done` median of 41-51 ms)."""


@dataclass(frozen=True)
class BankLayout:
    """Geometry of one prepared bank row at the device rate (all lengths in frames)."""

    source_rate: int      # (Hz) rate of the rendered notes
    device_rate: int      # (Hz)
    n_source_samples: int
    n_device_frames: int
    loop_start: int
    loop_end: int
    xfade_frames: int
    bank_frames: int

    @staticmethod
    def create(source_rate: int, device_rate: int, n_source_samples: int) -> "BankLayout":
        """Layout `[HEAD_PAD zeros | audio | HEAD_PAD loop tail]` with a loop over the last
        40% of the audio, crossfaded over half the loop."""
        n_device = math.ceil(n_source_samples * device_rate / source_rate)
        if n_device < 64:
            raise ValueError(f"bank notes too short: {n_source_samples} samples at {source_rate} Hz")
        loop_end = vk.HEAD_PAD + n_device
        loop_length = max(n_device * 2 // 5, 32)
        return BankLayout(source_rate, device_rate, n_source_samples, n_device,
                          loop_end - loop_length, loop_end, loop_length // 2,
                          loop_end + vk.HEAD_PAD)

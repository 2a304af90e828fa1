"""`StaticBanks`: the bank-provider interface of `rt_engine.banks.bank_manager.BankManager` over fixed
banks, already at the device rate, for tests and benchmarks (no worker process)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from rt_engine.core import voice_kernel as vk
from rt_engine.banks.bank_manager import DEFAULT_GRID_N, ENVELOPE_FIELDS
from rt_engine.banks.bank_layout import BankLayout
from rt_engine.banks.bank_render import prepare_rows
from rt_engine.core.commands import DEFAULT_ADSR


class StaticBanks:
    """Bank provider over fixed banks, already at the device rate: every slot is an exact bank
    at the initial point (tests, benchmarks). Timbre requests are accepted and change nothing."""

    grid_n = DEFAULT_GRID_N
    initial_point = (0.5, 0.5)

    def __init__(self, rows: np.ndarray, pitches: Sequence[float], source_rate: int,
                 device_rate: int):
        self.layout = BankLayout.create(source_rate, device_rate, rows.shape[1])
        self.banks = prepare_rows(rows, self.layout)[None]
        self.row_pitch = np.asarray(pitches, dtype=np.float64)
        self.row_ready = np.ones((1, len(pitches)), dtype=np.uint8)
        self.last_bank_s = float("nan")  # no bank is ever rendered
        self.slots = np.zeros((1, vk.N_SLOT_FIELDS))
        self.slots[0, [vk.S_KIND, vk.S_X, vk.S_Y]] = vk.SLOT_EXACT, 0.5, 0.5
        self.slots[0, ENVELOPE_FIELDS] = DEFAULT_ADSR
        self.loop_start, self.loop_end = self.layout.loop_start, self.layout.loop_end

    def bind(self, select: Callable[[int, int], bool]) -> None:
        """Select the one exact bank at once."""
        select(0, 0)

    def preset_names(self) -> list[str]:
        return []

    def note_requested(self, pitch: float, held: Sequence[float]) -> None:
        """Nothing to prioritise: every row is ready."""

    def request_xy(self, x: float, y: float, generation: int) -> None:
        """Fixed banks: the point does not change the sound."""

    def request_preset(self, name: str, generation: int, envelope=None) -> None:
        raise KeyError(f"unknown preset {name!r}: static banks have no presets")

    def request_audio(self, path: str, generation: int, on_done: Callable[[], None],
                      on_fail: Callable[[str], None]) -> None:
        on_fail("static banks cannot derive a timbre from audio")

    def state(self) -> str:
        return "ready"

    def close(self) -> None:
        """Nothing to release."""

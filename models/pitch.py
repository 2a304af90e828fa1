"""Equal-tempered pitch: MIDI note numbers and frequencies (A4 = MIDI 69 = 440 Hz).

Public API:
    midi_to_hz(pitch) -> Hz (float or float64 array, same shape)
    hz_to_midi(f0_hz) -> MIDI (float or float64 array, same shape)
"""
from __future__ import annotations

import numpy as np

A4_HZ = 440.0
A4_MIDI = 69.0


def midi_to_hz(pitch):
    """Frequency (Hz) of MIDI pitch `pitch` (fractional allowed; scalar or array)."""
    return A4_HZ * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - A4_MIDI) / 12.0)


def hz_to_midi(f0_hz):
    """MIDI pitch of frequency `f0_hz` (Hz, > 0; scalar or array)."""
    return A4_MIDI + 12.0 * np.log2(np.asarray(f0_hz, dtype=np.float64) / A4_HZ)

"""MIDI <-> Hz: A4 is 440 Hz, an octave doubles, the two directions invert each other."""
import numpy as np

from models.pitch import hz_to_midi, midi_to_hz


def test_a4_is_440_hz_and_an_octave_doubles():
    assert midi_to_hz(69) == 440.0
    assert midi_to_hz(81) == 880.0 and midi_to_hz(57) == 220.0
    np.testing.assert_allclose(midi_to_hz([60, 60.5]), [261.6255653, 269.2917795], rtol=1e-9)


def test_hz_to_midi_inverts_midi_to_hz():
    pitches = np.linspace(21.0, 108.0, 50)
    np.testing.assert_allclose(hz_to_midi(midi_to_hz(pitches)), pitches, atol=1e-9)

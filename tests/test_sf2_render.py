"""The SoundFont renderer: pitch of rendered notes, preprocessing, labels, errors, atomic output."""
from pathlib import Path

import numpy as np
import pytest

from models.one_shot import exponential_fade
from training.note_dataset import NoteStore
from training.sf2_render import (
    RenderConfig,
    gm_family,
    open_soundfont,
    preprocess_note,
    render_program_notes,
    render_soundfonts,
)

FLUID = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
needs_font = pytest.mark.skipif(not Path(FLUID).is_file(), reason="fluid-soundfont-gm not installed (.ci/install)")


def _dominant_period_hz(audio: np.ndarray, sample_rate: int) -> float:
    """f0 by the autocorrelation peak between 50 Hz and 2 kHz (an oracle independent of the renderer)."""
    frame = audio[2000:6096] - audio[2000:6096].mean()
    correlation = np.correlate(frame, frame, mode="full")[frame.size - 1:]
    low, high = sample_rate // 2000, sample_rate // 50
    lag = low + int(np.argmax(correlation[low:high]))
    return sample_rate / lag


@needs_font
def test_rendered_organ_note_has_the_requested_pitch():
    synth, sfid = open_soundfont(FLUID, 16_000)
    notes = render_program_notes(synth, sfid, program=19, pitches=[57, 69], velocity=100, n_samples=8000)
    for pitch, note in zip([57, 69], notes):
        expected_hz = 440.0 * 2 ** ((pitch - 69) / 12)
        cents = 1200 * np.log2(_dominant_period_hz(note, 16_000) / expected_hz)
        assert abs(cents) < 50


def test_preprocessing_normalises_the_peak_and_fades_out_exponentially():
    sample_rate, n = 1000, 1000
    audio = 0.25 * np.ones(n, dtype=np.float32)
    out = preprocess_note(audio, sample_rate, fade_seconds=0.1, decay=5.0)
    np.testing.assert_allclose(out[:900], 1.0)
    np.testing.assert_allclose(out[-1], np.exp(-5.0), rtol=1e-5)
    np.testing.assert_allclose(out[900:], exponential_fade(n, sample_rate, 0.1, 5.0)[900:])
    assert np.all(np.diff(out[900:]) < 0)


def test_gm_family_groups_programs_by_eight():
    assert [gm_family(p) for p in (0, 7, 8, 56, 127)] == [0, 0, 1, 7, 15]
    with pytest.raises(ValueError, match="128"):
        gm_family(128)


@needs_font
def test_render_writes_a_labelled_store_and_counts_every_render(tmp_path):
    config = RenderConfig(sf2_paths=(FLUID,), seconds=0.25, pitches=(60, 72), velocities=(90,),
                          programs=(0, 41), validation_programs=(41,))
    summary = render_soundfonts(config, tmp_path / "set", progress=False)
    assert summary["n_notes"] + summary["n_silent_dropped"] == 4
    store = NoteStore(tmp_path / "set")
    assert (store.sample_rate, store.n_samples) == (32_000, 8000)
    assert store.family.tolist() == [gm_family(int(name[-3:])) for name in store.instrument]
    assert set(store.split[[name.endswith("041") for name in store.instrument]]) == {"valid"}
    unfaded = np.asarray(store.audio) / exponential_fade(8000, 32_000, config.fade_seconds, config.fade_decay)
    np.testing.assert_allclose(np.abs(unfaded).max(axis=1), 1.0, rtol=1e-5)


def test_missing_soundfont_is_an_error_naming_it_and_writes_nothing(tmp_path):
    config = RenderConfig(sf2_paths=(str(tmp_path / "nope.sf2"),), programs=(0,), pitches=(60,))
    with pytest.raises(FileNotFoundError, match="nope.sf2"):
        render_soundfonts(config, tmp_path / "set", progress=False)
    assert not (tmp_path / "set").exists()


def test_corrupt_soundfont_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00junk")
    with pytest.raises(ValueError, match="bad.sf2"):
        open_soundfont(bad, 16_000)

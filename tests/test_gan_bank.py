"""GanBankSource: loading a model folder, timbre conditioning, rendering, errors; the shipped model."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from models.bank_source import TimbreRequest
from models.checkpoint import CheckpointError, save_checkpoint
from models.features import FeatureModel
from models.gan import Generator
from models.model_config import FeatureConfig, GanConfig
from models.gan_bank import GanBankSource, bilinear_conditioning, interpolate_conditioning
from models.harmonic_inversion import harmonic_comb, mel_inverter, mel_to_linear_harmonic
from models.one_shot import load_one_shot
from models.spectral import stft
from models.timbre_sources import load_bank_source
from training.evaluation import band_level_db

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "pretrained" / "default"
H_DIM = 8
TINY_SPECTRAL = dict(n_samples=4096, n_mels=32, h_dim=H_DIM)


def make_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised but complete model folder (gan/, features/, presets.json)."""
    torch.manual_seed(seed)
    gan_config = GanConfig(**TINY_SPECTRAL, z_dim=4, pitch_embedding_dim=8, style_dim=16, channels=(16, 8, 4),
                           discriminator_channels=(4, 8, 8), projection_dim=8)
    save_checkpoint(folder / "gan", gan_config, Generator(gan_config).state_dict())
    feature_config = FeatureConfig(**TINY_SPECTRAL, channels=(4, 8), classifier_hidden=16, n_instruments=3)
    save_checkpoint(folder / "features", feature_config, FeatureModel(feature_config).state_dict())
    rng = np.random.default_rng(seed)
    presets = {name: rng.normal(size=H_DIM).round(4).tolist() for name in ("piano", "strings", "brass", "flute", "organ")}
    (folder / "presets.json").write_text(json.dumps({"presets": presets, "corners": ["piano", "strings", "brass", "flute"]}))
    return folder


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    return GanBankSource.from_dir(make_tiny_model(tmp_path_factory.mktemp("model")))


def test_load_bank_source_picks_the_gan_for_a_model_folder(tmp_path):
    source = load_bank_source(make_tiny_model(tmp_path))
    assert isinstance(source, GanBankSource)
    assert (source.sample_rate, source.n_samples, source.conditioning_dim) == (16_000, 4096, H_DIM)
    assert source.preset_names() == ["piano", "strings", "brass", "flute", "organ"]


def test_render_bank_returns_one_normalised_note_per_pitch_in_order(tiny_source):
    pitches = [72, 21, 108]
    bank = tiny_source.render_bank(TimbreRequest("preset", name="organ"), pitches)
    assert bank.shape == (3, 4096) and bank.dtype == np.float32
    np.testing.assert_allclose(np.abs(bank).max(axis=1), 1.0, rtol=1e-5)
    h = tiny_source.conditioning_for(TimbreRequest("preset", name="organ"))
    one = tiny_source.render_conditioning(h[None], [21])
    np.testing.assert_allclose(one[0], bank[1], atol=2e-3)


def test_xy_corners_are_the_corner_presets_and_the_centre_is_their_mean(tiny_source):
    corners = [tiny_source.presets[name] for name in ("piano", "strings", "brass", "flute")]
    for (x, y), expected in zip(((0, 0), (1, 0), (0, 1), (1, 1)), corners):
        np.testing.assert_allclose(tiny_source.conditioning_for(TimbreRequest("xy", x=x, y=y)), expected, atol=1e-6)
    np.testing.assert_allclose(tiny_source.conditioning_for(TimbreRequest("xy", x=0.5, y=0.5)),
                               np.mean(corners, axis=0), atol=1e-6)


def test_interpolation_is_the_weighted_sum_of_conditionings():
    hs = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(interpolate_conditioning(hs, [0.25, 0.75]), [0.25, 1.5])
    np.testing.assert_allclose(bilinear_conditioning(np.eye(4, dtype=np.float32), 2.0, -1.0), [0, 1, 0, 0])


def test_audio_timbre_goes_through_the_feature_extractor(tiny_source, tmp_path):
    rate = 22_050
    t = np.arange(rate // 2) / rate
    tone = np.concatenate([np.zeros(300), np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    soundfile.write(tmp_path / "tone.wav", tone, rate)
    h = tiny_source.conditioning_for(TimbreRequest("audio", path=str(tmp_path / "tone.wav"), refine=False))
    expected = tiny_source.features_of_audio(load_one_shot(tmp_path / "tone.wav", 16_000, 4096)[None])[0]
    np.testing.assert_allclose(h, expected, atol=1e-6)
    assert abs(load_one_shot(tmp_path / "tone.wav", 16_000, 4096)[0]) < 0.1  # leading silence trimmed


def test_bad_requests_are_clear_errors(tiny_source, tmp_path):
    with pytest.raises(KeyError, match="nope"):
        tiny_source.conditioning_for(TimbreRequest("preset", name="nope"))
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        tiny_source.conditioning_for(TimbreRequest("audio", path=str(tmp_path / "missing.wav")))
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match="bad.wav"):
        tiny_source.conditioning_for(TimbreRequest("audio", path=str(tmp_path / "bad.wav")))
    with pytest.raises(ValueError, match="21..108"):
        tiny_source.render_bank(TimbreRequest("preset", name="piano"), [20])
    with pytest.raises(ValueError, match="h must be"):
        tiny_source.render_conditioning(np.zeros((2, H_DIM + 1), np.float32), [60, 61])


def test_bad_model_files_raise_checkpoint_errors_naming_them(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    (folder / "presets.json").write_text(json.dumps({"presets": {"a": [0.0] * H_DIM}, "corners": ["a"]}))
    with pytest.raises(CheckpointError, match="presets.json"):
        GanBankSource.from_dir(folder)
    folder = make_tiny_model(tmp_path / "n")
    (folder / "gan" / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="config.json"):
        GanBankSource.from_dir(folder)
    with pytest.raises(CheckpointError, match="absent"):
        GanBankSource.from_dir(tmp_path / "absent")


def test_harmonic_prior_inversion_fits_the_mel_and_keeps_a_low_note_periodic():
    config = GanConfig()
    f0_hz = 440.0 * 2 ** ((31 - 69) / 12)  # MIDI 31: harmonics 49 Hz apart, finer than the mel bands
    t = np.arange(16_000) / 16_000
    note = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, 60)).astype(np.float32)[None]
    from models.phase_reconstruction import griffin_lim

    filterbank = mel_inverter(config).filterbank
    mel = np.einsum("mf,bft->bmt", filterbank, np.abs(stft(note, config.n_fft, config.hop_length)))
    def residual(linear):
        return np.linalg.norm(np.einsum("mf,bft->bmt", filterbank, linear) - mel) / np.linalg.norm(mel)

    assert residual(mel_to_linear_harmonic(mel, [f0_hz], config, n_iter=30)) < 1e-3  # the updates converge
    linear = mel_to_linear_harmonic(mel, [f0_hz], config)  # the renderer's count: within 0.04 dB of the mel
    assert residual(linear) < 4e-3
    on_harmonics = harmonic_comb(f0_hz, config.n_fft, config.sample_rate) > 0.5
    plain = mel_inverter(config).invert(mel)

    def harmonic_share(magnitude):
        return magnitude[0][on_harmonics].sum() / magnitude[0].sum()

    assert harmonic_share(linear) > harmonic_share(plain) + 0.1
    audio = griffin_lim(linear, 16_000, n_iter=16, init="pghi")[0]
    estimated_hz = _f0_by_autocorrelation_hz(audio, 16_000, f0_hz / 1.4, f0_hz * 1.4)
    assert abs(1200 * np.log2(estimated_hz / f0_hz)) < 50


def _f0_by_autocorrelation_hz(note: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> float:
    frame = note[1024:1024 + 8192] - note[1024:1024 + 8192].mean()
    correlation = np.correlate(frame, frame, mode="full")[frame.size - 1:]
    low, high = int(sample_rate / high_hz), int(sample_rate / low_hz)
    return sample_rate / (low + int(np.argmax(correlation[low:high])))


def test_shipped_default_model_renders_full_band_notes_at_the_requested_pitch():
    source = load_bank_source(SHIPPED)
    assert source.sample_rate >= 32_000 and len(source.preset_names()) >= 4
    pitches = [57, 69]
    bank = source.render_bank(TimbreRequest("preset", name="trumpet"), pitches)
    for pitch, note in zip(pitches, bank):
        expected_hz = 440.0 * 2 ** ((pitch - 69) / 12)
        f0_hz = _f0_by_autocorrelation_hz(note, source.sample_rate, expected_hz / 1.4, expected_hz * 1.4)
        assert abs(1200 * np.log2(f0_hz / expected_hz)) < 50
    # a trumpet's edge lies above 8 kHz: the shipped banks carry it (a 16 kHz model reads -120 dB here)
    assert band_level_db(bank, source.sample_rate, 8_000.0, 15_000.0).min() > -50.0


def test_xy_timbres_read_the_som_grid_when_the_model_has_one(tmp_path):
    from models.timbre_grid import GridConfig, TimbreGrid

    folder = make_tiny_model(tmp_path / "m")
    nodes = np.arange(3 * 3 * H_DIM, dtype=np.float32).reshape(3, 3, H_DIM)
    TimbreGrid(nodes, GridConfig(size=3, conditioning_dim=H_DIM)).save(folder / "grid")
    source = GanBankSource.from_dir(folder)
    np.testing.assert_allclose(source.conditioning_for(TimbreRequest("xy", x=1.0, y=0.5)), nodes[1, 2])
    TimbreGrid(nodes[:, :, :2], GridConfig(size=3, conditioning_dim=2)).save(folder / "grid")
    with pytest.raises(CheckpointError, match="grid"):
        GanBankSource.from_dir(folder)


def test_configs_presets_and_grid_points_need_no_torch_until_the_networks_run(tmp_path):
    """A start whose banks are all in the disk cache never imports torch: from_dir and a grid or
    preset conditioning read files only; `warm` (or the first render) loads G, f and H."""
    import subprocess
    import sys

    folder = make_tiny_model(tmp_path / "m")
    code = ("import sys; from models.gan_bank import GanBankSource; from models.bank_source import TimbreRequest; "
            f"s = GanBankSource.from_dir({str(folder)!r}); s.conditioning_for(TimbreRequest('xy', x=0.3, y=0.6)); "
            "s.conditioning_for(TimbreRequest('preset', name=s.preset_names()[0])); before = 'torch' in sys.modules; "
            "s.warm(); print(before, 'torch' in sys.modules, s.generator is not None)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True", "True"]


def test_notes_whose_harmonics_share_a_main_lobe_get_more_phase_iterations(monkeypatch):
    import models.gan_bank as gan_bank

    calls = []

    def recording_griffin_lim(linear, n_samples, n_iter, **options):
        calls.append((len(linear), n_iter))
        return np.ones((len(linear), n_samples), dtype=np.float32)

    monkeypatch.setattr(gan_bank, "griffin_lim", recording_griffin_lim)
    config = GanConfig()
    x = np.zeros((3, config.n_mels, config.n_frames), dtype=np.float32)
    audio = gan_bank.log_mel_to_audio(x, config, pitches=[30, 60, 90])  # MIDI 30: 46 Hz, under 5 bins
    assert sorted(calls) == [(1, gan_bank.LOW_NOTE_PHASE_ITERATIONS), (2, gan_bank.PHASE_ITERATIONS)]
    assert audio.shape == (3, config.n_samples)
    calls.clear()
    gan_bank.log_mel_to_audio(x, config)  # no pitches: one count for all
    assert calls == [(3, gan_bank.PHASE_ITERATIONS)]

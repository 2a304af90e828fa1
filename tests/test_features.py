"""The torch log-mel representation, the harmonic template, and the pitch-adversarial feature model."""
import math

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError, save_checkpoint
from models.features import FeatureModel, harmonic_template, load_feature_extractor, log_mel
from models.model_config import FeatureConfig, mel_filterbank
from models.spectral import mel_frequencies, stft

TINY = FeatureConfig(n_samples=4096, n_mels=32, h_dim=8, channels=(4, 8), classifier_hidden=16, n_instruments=3)


def test_torch_log_mel_equals_the_spectral_core_numpy_representation():
    config = FeatureConfig(n_samples=4096)
    audio = np.random.default_rng(0).uniform(-1, 1, (2, 4096)).astype(np.float32)
    magnitude = np.abs(stft(audio, config.n_fft, config.hop_length))
    mel = np.einsum("mf,bft->bmt", mel_filterbank(config), magnitude)
    expected = (np.log(np.maximum(mel, config.log_floor)) - config.norm_center) / config.norm_scale
    actual = log_mel(torch.from_numpy(audio), config).numpy()
    assert actual.shape == (2, config.n_mels, config.n_frames)
    np.testing.assert_allclose(actual, expected, atol=2e-4)


def test_log_mel_rejects_audio_without_a_batch_axis():
    with pytest.raises(ValueError, match="batch"):
        log_mel(torch.zeros(4096), TINY)


def test_harmonic_template_is_high_on_harmonics_and_low_between_them():
    config = FeatureConfig()
    template = harmonic_template(config, [57])[0]  # A3, 220 Hz
    centres_hz = mel_frequencies(config.n_mels + 2, 0.0, config.sample_rate / 2)[1:-1]

    def at(f_hz):
        return template[int(np.argmin(np.abs(centres_hz - f_hz)))]

    assert template.max() == pytest.approx(1.0)
    for k in (1, 2, 3):
        assert at(220.0 * k) > 0.5
        assert at(220.0 * (k + 0.5)) < 0.5 * at(220.0 * k)


def test_pitch_kl_term_is_zero_exactly_when_pitch_predictions_are_uniform():
    torch.manual_seed(0)
    model = FeatureModel(TINY)
    x = torch.randn(4, TINY.n_mels, TINY.n_frames)
    instruments = torch.tensor([0, 1, 2, 0])
    _, logs = model.extractor_loss(x, instruments)
    assert logs["kl_pitch"] > 0
    with torch.no_grad():
        model.pitch_head[-1].weight.zero_()
        model.pitch_head[-1].bias.zero_()
    loss, logs = model.extractor_loss(x, instruments)
    assert logs["kl_pitch"] == pytest.approx(0.0, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(logs["ce_instrument"], abs=1e-6)


def test_pitch_classifier_step_does_not_train_the_extractor():
    model = FeatureModel(TINY)
    x = torch.randn(4, TINY.n_mels, TINY.n_frames)
    loss, _ = model.pitch_loss(x, torch.tensor([0, 5, 10, 87]))
    loss.backward()
    assert all(p.grad is None for p in model.extractor.parameters())
    assert all(p.grad is not None for p in model.pitch_head.parameters())


def test_extractor_output_is_one_h_per_note():
    h = FeatureModel(TINY).extractor(torch.randn(5, TINY.n_mels, TINY.n_frames))
    assert h.shape == (5, TINY.h_dim)


def test_feature_checkpoint_round_trip_and_corrupt_weights_error(tmp_path):
    model = FeatureModel(TINY)
    save_checkpoint(tmp_path / "f", TINY, model.state_dict())
    x = torch.randn(2, TINY.n_mels, TINY.n_frames)
    with torch.no_grad():
        torch.testing.assert_close(load_feature_extractor(tmp_path / "f")(x), model.extractor(x))
    (tmp_path / "f" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_feature_extractor(tmp_path / "f")


def test_invalid_feature_config_is_rejected():
    with pytest.raises(ValueError):
        FeatureConfig(n_instruments=1)
    assert TINY.n_frames == 1 + 4096 // 256 and math.isfinite(TINY.lambda_adv)

"""The log-mel representation (torch), the pitch-harmonic template, and the pitch-invariant
feature extractor f with its classifiers (GANStrument Eq. 2-3).

Representation (chosen by a measured comparison, see models/pretrained/default/README.md):
normalised log-mel, `(log(max(mel_magnitude, log_floor)) - norm_center) / norm_scale`, with
Slaney mel filters (librosa's default) over an STFT of n_fft 1024, hop 256, Hann, centred,
at 16 kHz: a 1 s note is `[n_mels=128, n_frames=63]`.

The configs (`SpectralConfig`, `FeatureConfig`), the mel filterbank and the denormalisation are in
`models.model_config` (no torch).

Public API:
    log_mel(audio, config) -> [batch, n_mels, n_frames]                      torch, normalised
    harmonic_template(config, pitches) -> [len(pitches), n_mels]             numpy, in [0, 1]
    FeatureExtractor(config)               f: [batch, n_mels, n_frames] -> h [batch, h_dim]
    FeatureModel(config)                   f + C_i + C_p with the Eq. 2 / Eq. 3 losses
    classifier_mlp(in_dim, hidden, out_dim) the shallow MLP of C_i / C_p / the pitch probe
    load_feature_extractor(folder) -> FeatureExtractor (eval mode)
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.checkpoint import load_config, load_state_into
from models.pitch import midi_to_hz
from models.model_config import FeatureConfig, mel_filterbank


_FILTERBANKS: dict[tuple, torch.Tensor] = {}


def _torch_filterbank(config) -> torch.Tensor:
    key = (config.sample_rate, config.n_fft, config.n_mels)
    if key not in _FILTERBANKS:
        _FILTERBANKS[key] = torch.from_numpy(mel_filterbank(config))
    return _FILTERBANKS[key]


def log_mel(audio: torch.Tensor, config) -> torch.Tensor:
    """Normalised log-mel of `audio` float `[batch, n_samples]` at config.sample_rate (Hz):
    `[batch, n_mels, n_frames]`, mel of the STFT magnitude (periodic Hann, centred, zero padding:
    the same frames as `models.spectral.stft`)."""
    if audio.dim() != 2:
        raise ValueError(f"audio must be [batch, n_samples], got shape {tuple(audio.shape)}")
    window = torch.hann_window(config.n_fft, dtype=audio.dtype, device=audio.device)
    spectrum = torch.stft(audio, n_fft=config.n_fft, hop_length=config.hop_length, window=window,
                          center=True, pad_mode="constant", return_complex=True)
    mel = torch.einsum("mf,bft->bmt", _torch_filterbank(config).to(audio.device, audio.dtype), spectrum.abs())
    return (torch.log(torch.clamp(mel, min=config.log_floor)) - config.norm_center) / config.norm_scale


def harmonic_template(config, pitches) -> np.ndarray:
    """Where the harmonics of each MIDI pitch fall on the mel axis: `float32 [len(pitches), n_mels]`
    in [0, 1]. A comb of harmonics k * f0 (amplitude 1/k, up to Nyquist) on the linear STFT
    axis, each a Gaussian of one bin's width, projected by the mel filterbank, then each row
    log-compressed and scaled to a peak of 1. Fed to G and D at every block as pitch conditioning."""
    n_bins = config.n_fft // 2 + 1
    bin_hz = config.sample_rate / config.n_fft
    freqs_hz = np.arange(n_bins) * bin_hz
    fb = mel_filterbank(config)
    rows = []
    for pitch in np.asarray(pitches, dtype=np.float64):
        f0_hz = midi_to_hz(pitch)
        harmonics = np.arange(1, int(config.sample_rate / 2 // f0_hz) + 1)
        comb = np.zeros(n_bins)
        for k in harmonics:
            comb += np.exp(-0.5 * ((freqs_hz - k * f0_hz) / bin_hz) ** 2) / k
        mel = fb @ comb
        compressed = np.log1p(mel / (mel.max() + 1e-12) * 100.0) / math.log1p(100.0)
        rows.append(compressed)
    return np.asarray(rows, dtype=np.float32)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, stride=2), nn.LeakyReLU(0.2),
    )


class FeatureExtractor(nn.Module):
    """f: normalised log-mel `[batch, n_mels, n_frames]` -> feature h `[batch, h_dim]`.
    Average-pool time by `time_pool` frames (timbre needs little time resolution; 4x cheaper),
    a strided conv encoder, mean over time, then a linear map of the flattened frequency axis."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self.config = config
        blocks, in_channels = [], 1
        for out_channels in config.channels:
            blocks.append(_conv_block(in_channels, out_channels))
            in_channels = out_channels
        self.encoder = nn.Sequential(*blocks)
        n_freq = config.n_mels
        for _ in config.channels:
            n_freq = (n_freq + 1) // 2
        self.project = nn.Linear(in_channels * n_freq, config.h_dim)

    def forward(self, log_mel_x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(log_mel_x.unsqueeze(1), (1, self.config.time_pool), ceil_mode=True)
        encoded = self.encoder(pooled).mean(dim=3)
        return self.project(encoded.flatten(1))


def classifier_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The shallow classifier shape of C_i, C_p and the pitch probe: [batch, in_dim] -> [batch, out_dim]."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, out_dim))


class FeatureModel(nn.Module):
    """f with its shallow classifiers C_i (instrument) and C_p (pitch), and their losses."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self.config = config
        self.extractor = FeatureExtractor(config)
        self.instrument_head = classifier_mlp(config.h_dim, config.classifier_hidden, config.n_instruments)
        self.pitch_head = classifier_mlp(config.h_dim, config.classifier_hidden, config.n_pitches)

    def extractor_loss(self, log_mel_x: torch.Tensor, instrument_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Eq. 2: CE(instrument) + lambda_adv * KL(uniform || C_p(f(x))), for f and C_i.
        Inputs `[batch, n_mels, n_frames]`, `int64 [batch]`. Returns (loss, scalar logs)."""
        h = self.extractor(log_mel_x)
        instrument_logits = self.instrument_head(h)
        classification = F.cross_entropy(instrument_logits, instrument_ids)
        log_q = F.log_softmax(self.pitch_head(h), dim=1)
        n_pitches = log_q.shape[1]
        kl_uniform = (-math.log(n_pitches) - log_q.mean(dim=1)).mean()
        loss = classification + self.config.lambda_adv * kl_uniform
        accuracy = (instrument_logits.argmax(1) == instrument_ids).float().mean()
        return loss, {"ce_instrument": float(classification.detach()), "kl_pitch": float(kl_uniform.detach()),
                      "acc_instrument": float(accuracy)}

    def pitch_loss(self, log_mel_x: torch.Tensor, pitch_classes: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Eq. 3: CE(pitch, C_p(f(x))) with f frozen (detached). `pitch_classes` = MIDI - min_pitch."""
        with torch.no_grad():
            h = self.extractor(log_mel_x)
        logits = self.pitch_head(h)
        loss = F.cross_entropy(logits, pitch_classes)
        return loss, {"ce_pitch": float(loss.detach()), "acc_pitch": float((logits.argmax(1) == pitch_classes).float().mean())}


def load_feature_extractor(folder) -> FeatureExtractor:
    """The trained f from a checkpoint folder (config.json holds a FeatureConfig; the weights of
    the whole FeatureModel), in eval mode. Bad files raise CheckpointError naming them."""
    config = load_config(folder, FeatureConfig)
    model = FeatureModel(config)
    load_state_into(model, folder)
    model.eval()
    return model.extractor

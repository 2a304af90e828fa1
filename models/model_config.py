"""The model configs and the representation they share, without torch: `SpectralConfig` (the fields
every model config starts with), `FeatureConfig` (f), `GanConfig` (G and D), the mel filterbank and
the log-mel denormalisation. The runtime reads a model folder's configs and presets from these
alone; torch loads only when a network runs (`models.gan_bank`).

Public API:
    SpectralConfig, SPECTRAL_FIELDS       the representation fields every model config starts with
    FeatureConfig(SpectralConfig)         sizes of f and its classifiers
    GanConfig(SpectralConfig)             sizes of G and D; .base_shape, .floor_value
    mel_filterbank(config) -> float32 [n_mels, n_fft // 2 + 1]   Slaney, numpy
    denormalise_log_mel(x, config) -> natural-log mel magnitude (numpy or torch, same shape)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from models.spectral import HOP_LENGTH, LOG_MAGNITUDE_FLOOR, N_FFT, N_MELS, SAMPLE_RATE
from models.spectral import mel_filterbank as core_mel_filterbank


@dataclass(frozen=True)
class SpectralConfig:
    """The representation every model config carries first (f and G must agree on it): audio
    (sample_rate Hz, n_samples per note), STFT (n_fft, hop_length samples), n_mels, the log floor
    and normalisation of the log-mel, and the pitch range (min_pitch MIDI, n_pitches)."""

    sample_rate: int = SAMPLE_RATE
    n_samples: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    n_mels: int = N_MELS
    log_floor: float = LOG_MAGNITUDE_FLOOR
    norm_center: float = -4.5
    norm_scale: float = 4.5
    min_pitch: int = 21
    n_pitches: int = 88

    @property
    def n_frames(self) -> int:
        """STFT frames of a note (centred): 1 + n_samples // hop_length."""
        return 1 + self.n_samples // self.hop_length


SPECTRAL_FIELDS = tuple(field.name for field in dataclasses.fields(SpectralConfig))


@dataclass(frozen=True)
class FeatureConfig(SpectralConfig):
    """Feature extractor f (conv encoder -> h), instrument classifier C_i, pitch classifier C_p."""

    h_dim: int = 64
    channels: tuple = (16, 32, 64, 64)
    classifier_hidden: int = 128
    time_pool: int = 4
    n_instruments: int = 101
    lambda_adv: float = 1.0

    def __post_init__(self):
        if self.n_samples < self.n_fft or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"invalid spectral settings in {self}")
        if self.h_dim <= 0 or self.n_instruments <= 1 or not self.channels:
            raise ValueError(f"invalid feature model sizes in {self}")


@dataclass(frozen=True)
class GanConfig(SpectralConfig):
    """Sizes of G and D (after the shared representation fields). `channels` run from G's lowest
    resolution to its highest (D mirrors them); n_mels must be divisible by 2 ** len(channels)."""

    h_dim: int = 64
    z_dim: int = 32
    pitch_embedding_dim: int = 64
    style_dim: int = 128
    channels: tuple = (128, 96, 64, 48, 32, 16)
    discriminator_channels: tuple = (16, 32, 48, 64, 64, 64)
    projection_dim: int = 128

    def __post_init__(self):
        n_up = len(self.channels) - 1
        if n_up < 1 or self.n_mels % (2 ** n_up):
            raise ValueError(f"n_mels={self.n_mels} must be divisible by 2**{n_up} (len(channels) - 1)")
        if len(self.discriminator_channels) != len(self.channels):
            raise ValueError("discriminator_channels must have as many entries as channels")

    @property
    def base_shape(self) -> tuple[int, int]:
        """(freq, time) of G's first block; the last block is 2 ** (len(channels) - 1) times larger."""
        scale = 2 ** (len(self.channels) - 1)
        return self.n_mels // scale, math.ceil(self.n_frames / scale)

    @property
    def floor_value(self) -> float:
        """The normalised log-mel value of silence (the log floor)."""
        return (math.log(self.log_floor) - self.norm_center) / self.norm_scale


def mel_filterbank(config) -> np.ndarray:
    """Slaney-normalised mel filterbank `float32 [n_mels, n_fft // 2 + 1]` (librosa's default),
    from 0 Hz to sample_rate / 2 (Hz), from the spectral core."""
    return core_mel_filterbank(config.sample_rate, config.n_fft, config.n_mels)


def denormalise_log_mel(x, config):
    """Normalised log-mel `[batch, n_mels, n_frames]` -> natural-log mel magnitude (same shape);
    works on numpy arrays and torch tensors."""
    return x * config.norm_scale + config.norm_center

"""The instance-conditioned instrument GAN: generator G(z, pitch, h) and projection discriminator
D(x, pitch, h) over normalised log-mel spectrograms (see models/features.py).

Pitch conditioning is strong by construction: a learned pitch embedding enters the style vector
that modulates (FiLM) every generator block, and the pitch's harmonic template (where its
harmonics fall on the mel axis) is concatenated as an extra input channel at every block of G
and D. The instance feature h = f(x) (pitch-invariant) enters G's style vector and D's
projection term (GANStrument Eq. 1; Miyato & Koyama's projection discriminator).

Public API:
    (GanConfig, the sizes of G and D, is in models.model_config: no torch)
    Generator(config)               (z [b, z_dim], pitch_classes int [b], h [b, h_dim]) -> [b, n_mels, n_frames]
    Discriminator(config)           (x [b, n_mels, n_frames], pitch_classes, h) -> logits [b]
    r1_penalty(discriminator, x, pitch_classes, h) -> scalar
    load_generator(folder) -> Generator (eval mode)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.checkpoint import load_config, load_state_into
from models.features import harmonic_template
from models.model_config import GanConfig


class _TemplateBank(nn.Module):
    """Harmonic templates per pitch class at every block resolution (buffers, not weights)."""

    def __init__(self, config: GanConfig):
        super().__init__()
        pitches = np.arange(config.min_pitch, config.min_pitch + config.n_pitches)
        template = torch.from_numpy(harmonic_template(config, pitches))  # [n_pitches, n_mels]
        self.register_buffer("template", template, persistent=False)

    def at(self, pitch_classes: torch.Tensor, n_freq: int, n_time: int) -> torch.Tensor:
        """`[batch, 1, n_freq, n_time]` template of each pitch, frequency-pooled to n_freq bins."""
        rows = self.template[pitch_classes]
        if rows.shape[1] != n_freq:
            rows = F.adaptive_avg_pool1d(rows.unsqueeze(1), n_freq).squeeze(1)
        return rows[:, None, :, None].expand(-1, 1, n_freq, n_time)


_UPSAMPLE_FOLD = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
"""[4, 3]: one axis of a 3x3 kernel seen through a nearest 2x upsample, as the 4 taps of a stride-2
transposed convolution (even outputs read x[i-1], x[i] with w0, w1 + w2; odd ones x[i], x[i+1]
with w0 + w1, w2)."""


def upsampled_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`conv2d(nearest_2x(x), weight, padding=1)` without making the upsampled input: x
    [batch, c_in, H, W], weight [c_out, c_in, 3, 3] -> [batch, c_out, 2H, 2W] (no bias), as one
    stride-2 transposed convolution with 4x4 kernels: 4 instead of 9 multiply-adds per input
    channel and output pixel. Equal to the upsampled convolution up to float rounding. It runs on
    channels-last tensors (the output stays channels-last, as do the elementwise operations after
    it), for which oneDNN's transposed convolution is 1.2-3x faster on one core than on contiguous
    ones (32 x 64 x 32 -> 16 x 128 x 64: 2.3 against 7.1 ms per 8 notes); G for 88 notes takes
    about 15 % less (`python3 bench/bank.py --threads 1`, generator_88_ms)."""
    fold = _UPSAMPLE_FOLD.to(weight)
    kernel = torch.einsum("ui,ocij,vj->couv", fold, weight, fold)  # [c_in, c_out, 4, 4]
    return F.conv_transpose2d(x.contiguous(memory_format=torch.channels_last), kernel, stride=2, padding=1)


class _ModulatedBlock(nn.Module):
    """[optional 2x upsample] -> concat template -> conv3x3 -> FiLM(style) -> leaky ReLU.

    With the upsample, the convolution of the upsampled features runs as `upsampled_conv3x3` and
    the template channel (at the output resolution) adds its own 3x3 convolution: the same
    function as upsample -> concat -> conv, 2-3x faster on a CPU."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(in_channels + 1, out_channels, 3, padding=1)
        self.film = nn.Linear(style_dim, 2 * out_channels)

    def forward(self, x, style, templates: _TemplateBank, pitch_classes):
        scale, shift = self.film(style)[:, :, None, None].chunk(2, dim=1)
        if self.upsample:
            weight = self.conv.weight
            y = upsampled_conv3x3(x, weight[:, :-1])
            _add_template_conv(y, templates.at(pitch_classes, y.shape[2], 3), weight[:, -1:], self.conv.bias)
        else:
            y = self.conv(torch.cat([x, templates.at(pitch_classes, x.shape[2], x.shape[3])], 1))
        return F.leaky_relu(torch.addcmul(shift, y, 1 + scale), 0.2)


def _add_template_conv(y: torch.Tensor, template: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """y [batch, c_out, F, T >= 2] += conv3x3(template, weight, bias, padding=1), in place, for a
    template constant along time: computed on 3 columns (`template` [batch, 1, F, 3]), whose middle
    one is every inner column and whose outer ones are the edges (the zero padding drops a kernel
    column)."""
    columns = F.conv2d(template, weight, bias, padding=1)  # [batch, c_out, F, 3]
    y[..., :1] += columns[..., :1]
    y[..., 1:-1] += columns[..., 1:2]
    y[..., -1:] += columns[..., 2:]


class Generator(nn.Module):
    """G(z, pitch, h) -> normalised log-mel `[batch, n_mels, n_frames]`."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        self.templates = _TemplateBank(config)
        self.pitch_embedding = nn.Embedding(config.n_pitches, config.pitch_embedding_dim)
        self.style = nn.Sequential(
            nn.Linear(config.z_dim + config.pitch_embedding_dim + config.h_dim, config.style_dim), nn.LeakyReLU(0.2),
            nn.Linear(config.style_dim, config.style_dim), nn.LeakyReLU(0.2),
        )
        base_freq, base_time = config.base_shape
        self.base = nn.Linear(config.style_dim, config.channels[0] * base_freq * base_time)
        self.blocks = nn.ModuleList(
            _ModulatedBlock(c_in, c_out, config.style_dim, upsample=i > 0)
            for i, (c_in, c_out) in enumerate(zip((config.channels[0],) + tuple(config.channels[:-1]), config.channels))
        )
        self.to_spectrogram = nn.Conv2d(config.channels[-1] + 1, 1, 1)

    def forward(self, z: torch.Tensor, pitch_classes: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        config = self.config
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # pixel norm
        style = self.style(torch.cat([z, self.pitch_embedding(pitch_classes), h], dim=1))
        base_freq, base_time = config.base_shape
        x = F.leaky_relu(self.base(style), 0.2).view(-1, config.channels[0], base_freq, base_time)
        for block in self.blocks:
            x = block(x, style, self.templates, pitch_classes)
        t = self.templates.at(pitch_classes, x.shape[2], x.shape[3])
        return self.to_spectrogram(torch.cat([x, t], 1))[:, 0, :, : config.n_frames]


class Discriminator(nn.Module):
    """Projection D(x, pitch, h): logits `[batch]`; x is `[batch, n_mels, n_frames]`.

    Weights start He-normal (leaky ReLU 0.2) with zero biases. PyTorch's default init (weight
    variance 1 / (3 fan_in), against He's ~2 / fan_in) shrinks the signal's spread ~2.4x per layer
    while its biases do not shrink, so after six layers the logits hardly depended on x (spread over
    random inputs 1e-4, He: 0.07): a fresh D trained alone against a frozen, reconstruction-trained G stayed at
    chance (0.53 held-out real/fake accuracy after 600 steps); with this init it reaches 0.89 after 300."""

    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        self.templates = _TemplateBank(config)
        channels = config.discriminator_channels
        self.from_spectrogram = nn.Conv2d(2, channels[0], 1)
        self.blocks = nn.ModuleList(
            nn.Conv2d(c_in + 1, c_out, 3, padding=1) for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        base_freq, base_time = config.base_shape
        self.features = nn.Linear(channels[-1] * base_freq * base_time, config.projection_dim)
        self.unconditional = nn.Linear(config.projection_dim, 1)
        self.pitch_projection = nn.Embedding(config.n_pitches, config.projection_dim)
        self.h_projection = nn.Linear(config.h_dim, config.projection_dim, bias=False)
        for module in self.modules():  # He init for leaky ReLU, zero bias (see class docstring)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, a=0.2)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, pitch_classes: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        config = self.config
        base_freq, base_time = config.base_shape
        n_time = base_time * 2 ** (len(config.channels) - 1)
        x = F.pad(x, (0, n_time - x.shape[2]), value=config.floor_value).unsqueeze(1)
        t = self.templates.at(pitch_classes, x.shape[2], x.shape[3])
        x = F.leaky_relu(self.from_spectrogram(torch.cat([x, t], 1)), 0.2)
        for conv in self.blocks:
            t = self.templates.at(pitch_classes, x.shape[2], x.shape[3])
            x = F.avg_pool2d(F.leaky_relu(conv(torch.cat([x, t], 1)), 0.2), 2)
        phi = F.leaky_relu(self.features(x.flatten(1)), 0.2)
        projection = (self.pitch_projection(pitch_classes) * phi).sum(1) + (self.h_projection(h) * phi).sum(1)
        return self.unconditional(phi)[:, 0] + projection


def r1_penalty(discriminator: Discriminator, x_real: torch.Tensor, pitch_classes: torch.Tensor,
               h: torch.Tensor) -> torch.Tensor:
    """R1: mean over the batch of ||d D(x_real) / d x_real||^2 (scalar); multiply by gamma / 2."""
    x_real = x_real.detach().requires_grad_(True)
    logits = discriminator(x_real, pitch_classes, h)
    (gradient,) = torch.autograd.grad(logits.sum(), x_real, create_graph=True)
    return gradient.pow(2).flatten(1).sum(1).mean()


def load_generator(folder) -> Generator:
    """G from a checkpoint folder (config.json holds a GanConfig), eval mode; bad files raise
    CheckpointError naming them."""
    config = load_config(folder, GanConfig)
    generator = Generator(config)
    load_state_into(generator, folder)
    generator.eval()
    return generator

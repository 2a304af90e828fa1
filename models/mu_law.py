"""Mu-law companding and quantisation (ITU-T G.711 style, as WaveNet and the Sound Model Factory GRU).

With mu = n_classes - 1 (255 for 8 bits):
    compress(x) = sign(x) * ln(1 + mu |x|) / ln(1 + mu)           x in [-1, 1] -> [-1, 1]
    expand(y)   = sign(y) * ((1 + mu)^|y| - 1) / mu               inverse of compress
    encode(x)   = floor((compress(x) + 1) / 2 * mu + 0.5)         -> integer class in [0, mu]
    decode(q)   = expand(2 q / mu - 1)                            -> float in [-1, 1]
Silence (x = 0) encodes to (mu + 1) // 2 = 128 for 8 bits (`mu_law_zero`).

NumPy functions take/return float32 / int64 arrays of any shape; the `_torch` twins take tensors.
"""
from __future__ import annotations

import math

import numpy as np


def _check_n_classes(n_classes: int) -> int:
    if int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"mu-law n_classes must be an integer >= 2, got {n_classes!r}")
    return int(n_classes) - 1


def mu_law_zero(n_classes: int = 256) -> int:
    """The class that encodes silence (x = 0): (mu + 1) // 2, i.e. 128 for 256 classes."""
    mu = _check_n_classes(n_classes)
    return int(math.floor(mu / 2 + 0.5))


def mu_law_compress(x: np.ndarray, n_classes: int = 256) -> np.ndarray:
    """Continuous mu-law compression. x: float [...] in [-1, 1] (clipped) -> float32 [...] in [-1, 1]."""
    mu = _check_n_classes(n_classes)
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    return (np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)).astype(np.float32)


def mu_law_expand(y: np.ndarray, n_classes: int = 256) -> np.ndarray:
    """Inverse of `mu_law_compress`. y: float [...] in [-1, 1] -> float32 [...] in [-1, 1]."""
    mu = _check_n_classes(n_classes)
    y = np.clip(np.asarray(y, dtype=np.float64), -1.0, 1.0)
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def mu_law_encode(x: np.ndarray, n_classes: int = 256) -> np.ndarray:
    """Quantise audio. x: float [...] in [-1, 1] (clipped) -> int64 [...] classes in [0, n_classes - 1]."""
    mu = _check_n_classes(n_classes)
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.floor((y + 1.0) * 0.5 * mu + 0.5).astype(np.int64)


def mu_law_decode(q: np.ndarray, n_classes: int = 256) -> np.ndarray:
    """Dequantise. q: int [...] classes in [0, n_classes - 1] -> float32 [...] audio in [-1, 1]."""
    mu = _check_n_classes(n_classes)
    q = np.asarray(q)
    if q.size and (q.min() < 0 or q.max() > mu):
        raise ValueError(f"mu-law classes must lie in [0, {mu}], got range [{q.min()}, {q.max()}]")
    y = 2.0 * q.astype(np.float64) / mu - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def mu_law_decode_table(n_classes: int = 256) -> np.ndarray:
    """float32 [n_classes]: the decoded value of every class (a lookup table for kernels)."""
    return mu_law_decode(np.arange(n_classes), n_classes)


def mu_law_encode_torch(x, n_classes: int = 256):
    """Torch twin of `mu_law_encode`. x: float tensor [...] -> int64 tensor [...]."""
    import torch  # heavy: only the torch twins need it

    mu = _check_n_classes(n_classes)
    x = torch.clamp(x.to(torch.float64), -1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / math.log1p(mu)
    return torch.floor((y + 1.0) * 0.5 * mu + 0.5).to(torch.int64)


def mu_law_decode_torch(q, n_classes: int = 256):
    """Torch twin of `mu_law_decode`. q: int tensor [...] -> float32 tensor [...]."""
    import torch  # heavy: only the torch twins need it

    mu = _check_n_classes(n_classes)
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > mu):
        raise ValueError(f"mu-law classes must lie in [0, {mu}], got range [{int(q.min())}, {int(q.max())}]")
    y = 2.0 * q.to(torch.float64) / mu - 1.0
    return (torch.sign(y) * torch.expm1(torch.abs(y) * math.log1p(mu)) / mu).to(torch.float32)

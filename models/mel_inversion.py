"""Mel -> linear magnitude, as GANStrument does it (Narita et al. 2023, section 2.3).

Solves min_x ||F x - mel||^2 subject to x >= 0 for every frame, F the mel filterbank
[n_mels, n_bins]: start from the unconstrained least-squares solution by the SVD pseudo-inverse
(`models.spectral.mel_pseudo_inverse`) with negatives clipped, then run a projected first-order
gradient method (step 1 / ||F||^2, negatives clipped after each step; FISTA momentum by default,
GANStrument's plain gradient with `accelerated=False`).
The filterbank is sparse (about two non-zeros per linear bin), so each iteration costs two sparse
products over the whole batch. `mel_to_linear_nnls` solves the same problem exactly with
`scipy.optimize.nnls`, frame by frame, as the reference.

Shapes: mel magnitudes float [batch, n_mels, n_frames]; linear magnitudes float32
[batch, n_bins, n_frames]; filterbank [n_mels, n_bins] (`models.spectral.mel_filterbank`).

Public API:
    MEL_INVERSION_ITERATIONS
    MelInverter(filterbank).invert(mel, n_iter, init, seed, accelerated) -> float32 [batch, n_bins, n_frames]
    mel_to_linear(mel, filterbank, n_iter, init, seed, accelerated): the same in one call
    mel_to_linear_nnls(mel, filterbank) -> float32 [batch, n_bins, n_frames]
    mel_residual_db(mel, filterbank, linear) -> float64 [batch] (dB)
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse

from models.spectral import mel_pseudo_inverse

MEL_INVERSION_ITERATIONS = 32
"""Default projected-gradient iterations after the pseudo-inverse start."""
_INITS = ("pinv", "random")


def _check(mel: np.ndarray, filterbank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mel = np.asarray(mel, dtype=np.float32)
    filterbank = np.asarray(filterbank, dtype=np.float32)
    if filterbank.ndim != 2:
        raise ValueError(f"filterbank must be [n_mels, n_bins], got shape {filterbank.shape}")
    if mel.ndim != 3 or mel.shape[1] != filterbank.shape[0]:
        raise ValueError(f"mel must be [batch, n_mels={filterbank.shape[0]}, n_frames], got shape {mel.shape}")
    if not np.all(np.isfinite(mel)):
        raise ValueError("mel contains NaN or infinite values")
    return mel, filterbank


def _columns(x: np.ndarray) -> np.ndarray:
    """[batch, n, n_frames] -> [n, batch * n_frames] (one column per frame)."""
    return np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(x.shape[1], -1)


def _uncolumns(x: np.ndarray, batch: int) -> np.ndarray:
    """[n, batch * n_frames] -> [batch, n, n_frames]."""
    return np.ascontiguousarray(x.reshape(x.shape[0], batch, -1).transpose(1, 0, 2))


class MelInverter:
    """A mel filterbank's solver state, computed once: sparse F and F^T, the SVD pseudo-inverse and
    the gradient step 1 / sigma_max(F)^2. `invert` is `mel_to_linear` without the set-up cost."""

    def __init__(self, filterbank: np.ndarray):
        """filterbank: [n_mels, n_bins] (`models.spectral.mel_filterbank`)."""
        filterbank = np.asarray(filterbank, dtype=np.float32)
        if filterbank.ndim != 2 or not np.all(np.isfinite(filterbank)):
            raise ValueError(f"filterbank must be a finite [n_mels, n_bins] array, got shape {filterbank.shape}")
        self.filterbank = filterbank
        self.inverse = mel_pseudo_inverse(filterbank)
        self.step = np.float32(1.0 / scipy.linalg.svdvals(filterbank.astype(np.float64)).max() ** 2)
        self._fb = scipy.sparse.csr_matrix(filterbank)
        self._fb_t = scipy.sparse.csr_matrix(filterbank.T)

    def invert(self, mel: np.ndarray, n_iter: int = MEL_INVERSION_ITERATIONS, init: str = "pinv",
               seed: int = 0, accelerated: bool = True) -> np.ndarray:
        """Non-negative linear magnitudes whose mel projection matches `mel`.

        mel: float [batch, n_mels, n_frames] (linear magnitude, not log); n_iter: gradient iterations;
        init: "pinv" (GANStrument: pseudo-inverse solution, negatives clipped) or "random" (uniform,
        scaled so that its mel projection has the target's mean: the baseline); accelerated: FISTA
        momentum (True) or the plain projected gradient of GANStrument / torchaudio (False).
        Returns float32 [batch, n_bins, n_frames] >= 0.
        """
        mel, _ = _check(mel, self.filterbank)
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}")
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        y = _columns(mel)
        if init == "pinv":
            x = np.maximum(self.inverse @ y, 0.0)
        else:
            x = np.random.default_rng(seed).random((self.filterbank.shape[1], y.shape[1]), dtype=np.float32)
            x *= np.float32(max(float(y.mean()), 1e-12) / max(float((self._fb @ x).mean()), 1e-12))
        z = x
        t = 1.0
        for _ in range(n_iter):
            x_next = np.maximum(z - self.step * (self._fb_t @ (self._fb @ z - y)), 0.0)
            t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t)) if accelerated else 1.0
            z = x_next + np.float32((t - 1.0) / t_next) * (x_next - x)
            x, t = x_next, t_next
        return _uncolumns(x.astype(np.float32, copy=False), mel.shape[0])


def mel_to_linear(mel: np.ndarray, filterbank: np.ndarray, n_iter: int = MEL_INVERSION_ITERATIONS,
                  init: str = "pinv", seed: int = 0, accelerated: bool = True) -> np.ndarray:
    """`MelInverter(filterbank).invert(mel, n_iter, init, seed, accelerated)`: see there.

    mel: float [batch, n_mels, n_frames]; filterbank: [n_mels, n_bins].
    Returns float32 [batch, n_bins, n_frames] >= 0.
    """
    return MelInverter(filterbank).invert(mel, n_iter, init, seed, accelerated)


def mel_to_linear_nnls(mel: np.ndarray, filterbank: np.ndarray) -> np.ndarray:
    """Exact non-negative least squares per frame with `scipy.optimize.nnls` (slow reference).

    mel: float [batch, n_mels, n_frames]; filterbank: [n_mels, n_bins].
    Returns float32 [batch, n_bins, n_frames].
    """
    import scipy.optimize  # the reference only: 0.2 s of import every bank worker start would pay

    mel, filterbank = _check(mel, filterbank)
    y = _columns(mel).astype(np.float64)
    a = filterbank.astype(np.float64)
    x = np.stack([scipy.optimize.nnls(a, y[:, j])[0] for j in range(y.shape[1])], axis=1)
    return _uncolumns(x.astype(np.float32), mel.shape[0])


def mel_residual_db(mel: np.ndarray, filterbank: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """Relative mel residual 20 log10(||F linear - mel|| / ||mel||) per note.

    mel: float [batch, n_mels, n_frames]; filterbank: [n_mels, n_bins]; linear: [batch, n_bins, n_frames].
    Returns float64 [batch] (dB); lower is better.
    """
    mel, filterbank = _check(mel, filterbank)
    linear = np.asarray(linear, dtype=np.float64)
    if linear.shape != (mel.shape[0], filterbank.shape[1], mel.shape[2]):
        raise ValueError(f"linear must be [batch, n_bins, n_frames] = "
                         f"{(mel.shape[0], filterbank.shape[1], mel.shape[2])}, got {linear.shape}")
    residual = np.einsum("mk,bkt->bmt", filterbank.astype(np.float64), linear) - mel
    error = np.linalg.norm(residual.reshape(len(mel), -1), axis=1)
    norm = np.linalg.norm(mel.reshape(len(mel), -1).astype(np.float64), axis=1)
    return 20.0 * np.log10(np.maximum(error, 1e-300) / np.maximum(norm, 1e-300))

"""Mu-law companding against the analytic G.711 formula."""
import math

import numpy as np
import pytest
import torch

from models.mu_law import (mu_law_compress, mu_law_decode, mu_law_decode_table, mu_law_decode_torch,
                           mu_law_encode, mu_law_encode_torch, mu_law_expand, mu_law_zero)


def _analytic_compress(x: float, mu: int) -> float:
    return math.copysign(math.log(1 + mu * abs(x)) / math.log(1 + mu), x)


@pytest.mark.parametrize("n_classes", [256, 16])
def test_encode_matches_the_analytic_formula(n_classes):
    mu = n_classes - 1
    x = np.random.default_rng(0).uniform(-1, 1, 500)
    expected = [math.floor((_analytic_compress(v, mu) + 1) / 2 * mu + 0.5) for v in x]
    np.testing.assert_array_equal(mu_law_encode(x, n_classes), expected)


def test_decode_matches_the_analytic_inverse():
    mu = 255
    q = np.arange(256)
    expected = [math.copysign(((1 + mu) ** abs(2 * k / mu - 1) - 1) / mu, 2 * k / mu - 1) for k in q]
    np.testing.assert_allclose(mu_law_decode(q), expected, rtol=1e-6, atol=1e-7)


def test_round_trip_error_is_within_half_a_companded_step():
    x = np.random.default_rng(1).uniform(-1, 1, 10000)
    recovered = mu_law_decode(mu_law_encode(x))
    companded_error = np.abs(mu_law_compress(x).astype(np.float64) - mu_law_compress(recovered))
    assert companded_error.max() <= 1.0 / 255 + 1e-6


def test_silence_and_extremes_map_to_the_expected_classes():
    assert mu_law_encode(np.array([0.0]))[0] == mu_law_zero(256) == 128
    np.testing.assert_array_equal(mu_law_encode(np.array([-1.0, 1.0, -5.0, 5.0])), [0, 255, 0, 255])
    assert mu_law_decode_table()[0] == -1.0 and mu_law_decode_table()[255] == 1.0


def test_encoding_is_monotonic():
    codes = mu_law_encode(np.linspace(-1, 1, 5001))
    assert np.all(np.diff(codes) >= 0) and codes[0] == 0 and codes[-1] == 255


def test_compress_and_expand_are_inverse():
    x = np.linspace(-1, 1, 1001)
    np.testing.assert_allclose(mu_law_expand(mu_law_compress(x)), x, atol=1e-6)


def test_torch_twins_equal_numpy():
    x = np.random.default_rng(2).uniform(-1.2, 1.2, 1000).astype(np.float32)
    np.testing.assert_array_equal(mu_law_encode_torch(torch.from_numpy(x)).numpy(), mu_law_encode(x))
    q = np.arange(256)
    np.testing.assert_array_equal(mu_law_decode_torch(torch.from_numpy(q)).numpy(), mu_law_decode(q))


def test_out_of_range_classes_are_rejected_by_name():
    with pytest.raises(ValueError, match="mu-law classes"):
        mu_law_decode(np.array([256]))
    with pytest.raises(ValueError, match="n_classes"):
        mu_law_encode(np.zeros(3), n_classes=1)

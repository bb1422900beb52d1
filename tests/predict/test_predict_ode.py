"""gradient_descent (ODE) against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close

import ntkit.predict as P

TIMES = torch.tensor([0.0, 0.5, 4.0, 40.0, 400.0], dtype=torch.float64)


def test_mse_ode_matches_closed_form(small_problem):
    p = small_problem
    k, ktd = p["kdd"].ntk, p["ktd"].ntk
    closed = P.gradient_descent_mse(k, p["y"], learning_rate=0.6)
    ode = P.gradient_descent("mse", k, p["y"], learning_rate=0.6)
    a_tr, a_te = ode(TIMES, p["f0"], p["ft0"], ktd)
    b_tr, b_te = closed(TIMES, p["f0"], p["ft0"], ktd)
    assert_close(a_tr, b_tr, 1e-8, "train")
    assert_close(a_te, b_te, 1e-8, "test")


def test_momentum_matches_damped_oscillator(small_problem):
    # Each eigenmode c of the train residual obeys c'' = m c' - (λ/N) c, c'(0) = 0, in
    # s = √η t with m = (μ - 1)/√η: a damped oscillator solved in closed form.
    p = small_problem
    k, y, f0 = p["kdd"].ntk.numpy(), p["y"].numpy(), p["f0"].numpy()
    lr, mu = 0.5, 0.8
    ode = P.gradient_descent("mse", k, y, learning_rate=lr, momentum=mu)
    tr, _ = ode(TIMES, f0)
    lam, v = np.linalg.eigh(k)
    m, c0 = (mu - 1) / np.sqrt(lr), v.T @ (f0 - y)
    disc = np.sqrt((m * m - 4 * lam / y.size).astype(complex))
    r1, r2 = (m + disc) / 2, (m - disc) / 2
    expected = []
    for t in TIMES.numpy():
        s = np.sqrt(lr) * t
        c = ((r2 * np.exp(r1 * s) - r1 * np.exp(r2 * s)) / (r2 - r1)).real
        expected.append(y + v @ (c[:, None] * c0))
    assert_close(tr, np.stack(expected), 1e-8)


def test_cross_entropy_string_and_callable(small_problem):
    p = small_problem
    y = F.one_hot(p["y"].argmax(1), 2).to(torch.float64)
    k, ktd = p["kdd"].ntk, p["ktd"].ntk
    a = P.gradient_descent("cross_entropy", k, y, learning_rate=2.0,
                           normalization="per_example")
    b = P.gradient_descent(lambda f, yy: F.cross_entropy(f, yy), k, y, learning_rate=2.0)
    ta, tea = a(TIMES, p["f0"], p["ft0"], ktd)
    # The callable goes through autograd (slow on tiny tensors): a shorter run suffices.
    tb, teb = b(TIMES[:2], p["f0"], p["ft0"], ktd)
    assert_close(ta[:2], tb, 1e-9) and assert_close(tea[:2], teb, 1e-9)
    # Gradient flow decreases the loss monotonically.
    losses = torch.stack([F.cross_entropy(f, y) for f in ta])
    assert bool((losses[1:] < losses[:-1]).all())


def test_unsorted_and_repeated_times(small_problem):
    p = small_problem
    ode = P.gradient_descent("mse", p["kdd"].ntk, p["y"])
    t = torch.tensor([[5.0, 1.0], [5.0, 0.0]], dtype=torch.float64)
    tr, te = ode(t, p["f0"], None, p["ktd"].ntk)
    assert tr.shape == (2, 2, 10, 2) and te.shape == (2, 2, 6, 2)
    assert torch.equal(tr[0, 0], tr[1, 0]) and torch.equal(tr[1, 1], p["f0"])
    ref = ode(torch.tensor([1.0, 5.0], dtype=torch.float64), p["f0"])[0]
    assert_close(tr[0, 1], ref[0], 1e-9) and assert_close(tr[0, 0], ref[1], 1e-9)


def test_infinite_time_refused(small_problem):
    p = small_problem
    ode = P.gradient_descent("mse", p["kdd"].ntk, p["y"])
    with pytest.raises(ValueError, match="infinite"):
        ode(None, p["f0"])
    with pytest.raises(ValueError, match="finite"):
        ode(float("inf"), p["f0"])

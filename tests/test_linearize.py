"""linearize / taylor_expand: values, gradients, and exact training dynamics."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from ntkit.empirical import empirical_ntk
from ntkit.linearize import TaylorModel, linearize, taylor_expand


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def net(d=3, k=2, width=24, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                         nn.Linear(width, k)).double()


def data(n, d=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def perturb(module: nn.Module, eps: float, seed: int = 2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(eps * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_linearize_value_and_gradient_at_theta0():
    model, x = net(), data(5)
    lin = linearize(model)
    assert isinstance(lin, TaylorModel) and lin.degree == 1
    assert sum(p.numel() for p in lin.parameters()) == sum(p.numel() for p in model.parameters())
    assert torch.equal(lin(x).detach(), model(x).detach())
    v = torch.randn(5, 2, dtype=torch.float64)
    (lin(x) * v).sum().backward()
    (model(x) * v).sum().backward()
    for (_, p), (_, q) in zip(lin.theta().items(), model.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-13, atol=1e-14)


def test_linearize_is_linear_in_theta():
    model, x = net(), data(4)
    lin = linearize(model)
    perturb(lin, 0.3)
    d = lin.delta()
    params0 = {n: p.detach() for n, p in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params0)
    expected = model(x) + sum(torch.einsum("ij...,...->ij", jac[n], d[n]) for n in d)
    torch.testing.assert_close(lin(x), expected, rtol=1e-12, atol=1e-12)


def test_quadratic_model_matches_explicit_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    x = data(3, d=2)
    quad = taylor_expand(model, degree=2)
    perturb(quad, 0.2)
    names = [n for n, _ in model.named_parameters()]
    p0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def f(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            parts[n] = flat[i:i + s.numel()].reshape(s)
            i += s.numel()
        return functional_call(model, parts, (x,)).reshape(-1)

    delta = torch.cat([v.detach().reshape(-1) for v in quad.delta().values()])
    J, H = jacrev(f)(p0), hessian(f)(p0)
    expected = f(p0) + J @ delta + 0.5 * torch.einsum("opq,p,q->o", H, delta, delta)
    torch.testing.assert_close(quad(x).reshape(-1), expected, rtol=1e-12, atol=1e-12)
    # Its gradient in θ is J + H Δθ.
    quad(x).sum().backward()
    grad = torch.cat([p.grad.reshape(-1) for p in quad.theta().values()])
    torch.testing.assert_close(grad, (J + torch.einsum("opq,q->op", H, delta)).sum(0),
                               rtol=1e-11, atol=1e-12)


def test_taylor_error_orders():
    """Errors against the true network fall as ε², ε³, ε⁴ for degrees 1, 2, 3."""
    model, x = net(width=8), data(4)
    errs = {d: [] for d in (1, 2, 3)}
    for eps in (1e-2, 5e-3):
        for d in errs:
            t = taylor_expand(model, degree=d)
            perturb(t, eps)
            true = functional_call(model, {n: p.detach() for n, p in t.theta().items()}, (x,))
            errs[d].append(float((t(x) - true).detach().abs().max()))
    for d, (e1, e2) in errs.items():
        order = torch.log2(torch.tensor(e1 / e2)).item()
        assert abs(order - (d + 1)) < 0.3, (d, order)


def test_frozen_params_buffers_and_module_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    model[1].running_mean.normal_()
    model[0].weight.requires_grad_(False)
    model.train()
    lin = linearize(model)
    assert [n for n, _ in lin.theta().items()] == ["0.bias", "1.weight", "1.bias", "2.weight",
                                                   "2.bias"]
    x = data(5)
    model.eval()
    torch.testing.assert_close(lin(x), model(x), rtol=0, atol=0)
    assert all(not m.training for m in model.modules())
    state = {k: v.clone() for k, v in lin.state_dict().items()}
    lin2 = linearize(model)
    lin2.load_state_dict(state)
    torch.testing.assert_close(lin2(x), lin(x), rtol=0, atol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="degree"):
        taylor_expand(net(), degree=0)
    with pytest.raises(TypeError, match="nn.Module"):
        linearize(lambda x: x)
    frozen = net()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        linearize(frozen)


def test_linearized_gd_matches_discrete_ntk_formula():
    """Gradient descent on the linearized network vs the closed form from its empirical NTK.

    Exactly comparable: *discrete* GD with step η on L = ½·mean((f − y)²) over all n·k
    entries. With Θ the (n·k × n·k) untraced empirical NTK at θ0 and r = f − y,

        r_t = (I − ηΘ/(nk))^t r_0,
        f_t(x*) = f_0(x*) − (η/(nk)) Θ(x*, X) Σ_{s<t} (I − ηΘ/(nk))^s r_0,

    evaluated through the eigendecomposition Θ = V Λ Vᵀ (no inverse: the geometric sum
    is taken per eigenvalue). Continuous gradient flow would differ by O(η²) and is not
    compared here. Agreement is to float64 round-off.
    """
    d, k, n, m = 3, 2, 6, 4
    model = net(d, k)
    X, Xt = data(n, d, seed=3), data(m, d, seed=4)
    Y = torch.sin(X @ torch.ones(d, k, dtype=torch.float64))
    eta, steps = 0.5, 150

    with torch.no_grad():
        f0, f0t = model(X).reshape(-1), model(Xt).reshape(-1)
    theta = empirical_ntk(model, X, trace_outputs=False, method="structured")
    theta = theta.permute(0, 2, 1, 3).reshape(n * k, n * k)
    theta_t = empirical_ntk(model, Xt, X, trace_outputs=False, method="structured")
    theta_t = theta_t.permute(0, 2, 1, 3).reshape(m * k, n * k)
    lam, V = torch.linalg.eigh(theta)
    q = 1 - eta * lam / (n * k)
    assert float(q.abs().max()) < 1, "step too large for the closed form to converge"
    r0 = f0 - Y.reshape(-1)
    geo = torch.where((1 - q).abs() > 1e-12, (1 - q**steps) / (1 - q),
                      torch.full_like(q, float(steps)))
    pred_train = Y.reshape(-1) + V @ (q**steps * (V.T @ r0))
    pred_test = f0t - eta / (n * k) * theta_t @ (V @ (geo * (V.T @ r0)))

    lin = linearize(model)
    opt = torch.optim.SGD(lin.parameters(), lr=eta)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((lin(X) - Y) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        got_train, got_test = lin(X).reshape(-1), lin(Xt).reshape(-1)
    # Training made real progress, so the comparison is not trivial.
    assert float((got_train - Y.reshape(-1)).norm()) < 0.5 * float(r0.norm())
    # Measured: max abs error ~1e-15 on outputs of order 1.
    torch.testing.assert_close(got_train, pred_train, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(got_test, pred_test, rtol=1e-12, atol=1e-13)

"""Every empirical-NTK method agrees with Jacobian contraction to float64 round-off."""

from __future__ import annotations

import pytest
import torch
from empirical_nets import mlp, models_and_inputs
from torch import nn

from ntkit.empirical import empirical_nngp, empirical_ntk
from ntkit.empirical.common import FunctionalModel
from ntkit.empirical.structured import StructuredMethod, discover

TOL = 1e-12
MODELS = models_and_inputs()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("traced", [True, False])
def test_methods_agree(name, traced):
    model, x1, x2 = MODELS[name]
    ref = empirical_ntk(model, x1, x2, method="jacobian", trace_outputs=traced)
    k = model(x1[:1])
    k = sum(t.numel() for t in (k.values() if isinstance(k, dict) else [k]))
    assert ref.shape == ((x1.shape[0], x2.shape[0]) if traced else
                         (x1.shape[0], x2.shape[0], k, k))
    assert ref.dtype == torch.float64
    for method in ("ntk_vp", "structured", "auto"):
        got = empirical_ntk(model, x1, x2, method=method, trace_outputs=traced)
        assert got.shape == ref.shape
        assert rel(got, ref) < TOL, (method, rel(got, ref))


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet", "tied"])
def test_symmetric_tiles_any_batch_size(name):
    model, x1, _ = MODELS[name]
    ref = empirical_ntk(model, x1, method="jacobian", trace_outputs=False)
    # Untraced blocks are mirrored with their output axes swapped.
    assert rel(ref, ref.permute(1, 0, 3, 2)) < TOL
    for method in ("jacobian", "ntk_vp", "structured"):
        for bs in (2, 3):   # neither divides n
            got = empirical_ntk(model, x1, method=method, trace_outputs=False, batch_size=bs)
            assert rel(got, ref) < TOL, (method, bs)
    traced = empirical_ntk(model, x1, method="structured", batch_size=4, progress=True)
    assert rel(traced, torch.einsum("ijaa->ij", ref) / ref.shape[-1]) < TOL


@pytest.mark.parametrize("method", ["jacobian", "ntk_vp", "structured"])
def test_tiled_rectangular(method):
    model, x1, x2 = MODELS["cnn"]
    ref = empirical_ntk(model, x1, x2, method="jacobian")
    got = empirical_ntk(model, x1, x2, method=method, batch_size=3)
    assert rel(got, ref) < TOL


def test_traced_is_mean_of_diagonal():
    model, x1, x2 = MODELS["multihead"]
    full = empirical_ntk(model, x1, x2, method="jacobian", trace_outputs=False)
    traced = empirical_ntk(model, x1, x2, method="jacobian")
    assert rel(traced, torch.einsum("ijaa->ij", full) / 8) < TOL


def test_jacobian_matches_explicit_autograd():
    """The reference itself against per-example torch.autograd.grad."""
    model, x1, x2 = MODELS["resnet"]
    params = list(model.parameters())

    def jac(x):
        rows = []
        for i in range(x.shape[0]):
            out = model(x[i:i + 1])[0]
            grads = [torch.autograd.grad(o, params, retain_graph=True) for o in out]
            rows.append(torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in grads]))
        return torch.stack(rows)   # (n, k, P)

    model.eval()
    j1, j2 = jac(x1), jac(x2)
    ref = torch.einsum("iap,jap->ij", j1, j2) / j1.shape[1]
    assert rel(empirical_ntk(model, x1, x2, method="jacobian"), ref) < TOL


@pytest.mark.parametrize("traced", [True, False])
def test_structured_gram_and_grad_routes_agree(traced):
    """Both contraction routes of the structured method, forced for every weight."""
    model, x1, x2 = MODELS["cnn"]
    ref = empirical_ntk(model, x1, x2, method="jacobian", trace_outputs=traced)
    fm = FunctionalModel(model)
    model.eval()
    plan = discover(fm, x1)
    assert {w.name for w in plan.weights} == {"c1.weight", "c2.weight", "c3.weight",
                                              "c4.weight", "fc.weight"}
    assert plan.direct == [] and plan.biases == {}   # biases folded into their weights
    assert {w.bias for w in plan.weights} == {"c1.bias", "c2.bias", "c3.bias", None, "fc.bias"}
    for route in ("gram", "grad"):
        for wp in plan.weights:
            wp.route = route
        m = StructuredMethod(fm, traced, plan)
        got = m.contract(m.features(x1), m.features(x2))
        assert rel(got, ref) < TOL, route


def test_structure_detection():
    model, x1, _ = MODELS["tied"]
    fm = FunctionalModel(model)
    plan = discover(fm, x1)
    # w is used by F.linear twice and as a scaled transpose in a matmul: one weight, three
    # uses; gain enters elementwise, so it goes to the Jacobian route.
    assert [w.name for w in plan.weights] == ["w", "head.weight"]
    assert len(plan.weights[0].uses) == 3
    assert plan.direct == ["gain"]
    model, x1, _ = MODELS["permuted"]
    plan = discover(FunctionalModel(model), x1)
    # u is used both as (in, out) and as (out, in): not one outer-product layout.
    assert [w.name for w in plan.weights] == ["w", "v"] and plan.direct == ["u"]
    assert [wp.uses for wp in plan.weights] == [[0, 1, 2], [3]]
    assert plan.uses[3].weight.scale == -0.5
    model, x1, _ = MODELS["ntkdense"]
    plan = discover(FunctionalModel(model), x1)
    assert [w.name for w in plan.weights] == ["0.weight", "2.weight"]
    assert set(plan.direct) == {"0.bias", "2.bias"}   # b * b_std is added, not a linear bias


@pytest.mark.parametrize("sel", [
    ["0.weight"],
    lambda n, p: n.startswith("2."),
    "tensor",
])
def test_param_selection(sel):
    model, x1, x2 = MODELS["mlp"]
    if sel == "tensor":
        sel = [model[0].weight, model[4].bias]
    ref = empirical_ntk(model, x1, x2, method="jacobian", params=sel, trace_outputs=False)
    for method in ("ntk_vp", "structured"):
        got = empirical_ntk(model, x1, x2, method=method, params=sel, trace_outputs=False)
        assert rel(got, ref) < TOL


def test_param_selection_sums_to_total():
    """Θ is additive over parameter groups; the first-layer-only NTK is one block."""
    model, x1, x2 = MODELS["mlp"]
    names = [n for n, _ in model.named_parameters()]
    total = empirical_ntk(model, x1, x2, method="structured")
    parts = sum(empirical_ntk(model, x1, x2, method="structured", params=[n]) for n in names)
    assert rel(parts, total) < TOL
    frozen = mlp().double()
    frozen[4].weight.requires_grad_(False)
    frozen[4].bias.requires_grad_(False)
    default = empirical_ntk(frozen, x1, x2)
    explicit = empirical_ntk(frozen, x1, x2, params=lambda n, p: not n.startswith("4."))
    assert rel(default, explicit) < TOL


def test_float32_model_computes_in_float32():
    model, x1, x2 = MODELS["mlp"]
    m32 = mlp().float()
    m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    got = empirical_ntk(m32, x1, x2, method="structured")
    assert got.dtype == torch.float32
    ref = empirical_ntk(model, x1, x2, method="jacobian")
    assert rel(got.double(), ref) < 1e-5


def test_module_state_untouched():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5),
                          nn.Linear(8, 2)).double()
    model.train()
    x = torch.randn(6, 4, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    k_train = empirical_ntk(model, x, method="structured")   # computed in eval mode
    assert model.training and all(m.training for m in model.modules())
    for key, v in model.state_dict().items():
        assert torch.equal(v, state[key]), key
    model.eval()
    assert rel(k_train, empirical_ntk(model, x, method="jacobian")) < TOL
    assert not model.training


def test_nngp():
    model, x1, x2 = MODELS["multihead"]
    model.eval()
    with torch.no_grad():
        out = model(x1)
        f1 = torch.cat([out["a"], out["b"].flatten(1)], 1)
        out = model(x2)
        f2 = torch.cat([out["a"], out["b"].flatten(1)], 1)
    assert rel(empirical_nngp(model, x1, x2), f1 @ f2.T / 8) < TOL
    full = empirical_nngp(model, x1, x2, trace_outputs=False, batch_size=2)
    assert full.shape == (5, 3, 8, 8)
    assert rel(full, torch.einsum("ia,jb->ijab", f1, f2)) < TOL
    sym = empirical_nngp(model, x1)
    assert rel(sym, f1 @ f1.T / 8) < TOL


def test_psd_and_symmetric():
    model, x1, _ = MODELS["resnet"]
    k = empirical_ntk(model, x1, method="structured", trace_outputs=False)
    n, _, c, _ = k.shape
    mat = k.permute(0, 2, 1, 3).reshape(n * c, n * c)
    assert rel(mat, mat.T) < TOL
    assert float(torch.linalg.eigvalsh(mat).min()) > -1e-10 * float(mat.norm())

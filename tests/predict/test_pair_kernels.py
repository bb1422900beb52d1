"""(n, n, k, k) kernels in `gradient_descent_mse` and `gp_inference`.

Truths: Θ ⊗ I_k must give exactly the (n, n) Θ's predictions; a genuinely coupled
kernel must give the closed forms on the flattened (n·k × n·k) system, solved here by
hand with a matrix exponential and a dense solve (no eigendecomposition).
"""

import pytest
import torch

from ntkit.predict import gp_inference, gradient_descent_mse

N, M, K = 7, 4, 3
LR = 0.7


def _flat(k):
    a, b = k.shape[:2]
    return k.permute(0, 2, 1, 3).reshape(a * K, b * K)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(N + M, K, 40, generator=g, dtype=torch.float64)
    # coupled kernel: features shared across outputs, so K[i, j, a, b] ≠ 0 for a ≠ b
    full = torch.einsum("iap,jbp->ijab", feats, feats) / 40
    theta = torch.einsum("iap,jap->ij", feats, feats) / (40 * K)
    y = torch.randn(N, K, generator=g, dtype=torch.float64)
    f0 = 0.1 * torch.randn(N, K, generator=g, dtype=torch.float64)
    ft0 = 0.1 * torch.randn(M, K, generator=g, dtype=torch.float64)
    return dict(full=full, theta=theta, y=y, f0=f0, ft0=ft0)


def _kron(theta):
    return theta[..., None, None] * torch.eye(K, dtype=theta.dtype)   # (…, m, m, K, K)


@pytest.mark.parametrize("diag_reg", [0.0, 1e-2])
def test_mse_kron_identity_equals_matrix(data, diag_reg):
    th, y, f0, ft0 = data["theta"], data["y"], data["f0"], data["ft0"]
    d, td = th[:N, :N], th[N:, :N]
    ts = torch.tensor([0.0, 3.0, 40.0, float("inf")], dtype=torch.float64)
    want = gradient_descent_mse(d, y, LR, diag_reg)(ts, f0, ft0, td)
    got = gradient_descent_mse(_kron(d), y, LR, diag_reg)(ts, f0, ft0, _kron(td))
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape == (4, a.shape[1], K)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    want = gradient_descent_mse(d, y, LR, diag_reg)(None, f0, ft0, td)
    got = gradient_descent_mse(_kron(d), y, LR, diag_reg)(None, f0, ft0, _kron(td))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("t", [0.5, 5.0, 60.0])
def test_mse_coupled_kernel_matches_flattened_closed_form(data, t):
    full, y, f0, ft0 = data["full"], data["y"], data["f0"], data["ft0"]
    kdd, ktd = _flat(full[:N, :N]), _flat(full[N:, :N])
    r0 = (f0 - y).reshape(-1)
    decay = torch.linalg.matrix_exp(-LR * t * kdd / y.numel())
    want_train = y.reshape(-1) + decay @ r0
    want_test = ft0.reshape(-1) - ktd @ torch.linalg.solve(
        kdd, (torch.eye(N * K, dtype=torch.float64) - decay) @ r0)
    fx_train, fx_test = gradient_descent_mse(full[:N, :N], y, LR)(t, f0, ft0, full[N:, :N])
    assert fx_train.shape == (N, K) and fx_test.shape == (M, K)
    torch.testing.assert_close(fx_train.reshape(-1), want_train, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(fx_test.reshape(-1), want_test, rtol=1e-8, atol=1e-10)
    # and it differs from what its trace alone predicts (the coupling matters)
    tr = torch.einsum("ijaa->ij", full) / K
    _, traced = gradient_descent_mse(tr[:N, :N], y, LR)(t, f0, ft0, tr[N:, :N])
    assert (traced - fx_test).abs().max() > 1e-3


def test_gp_coupled_kernel_matches_flattened_solve(data):
    full, y = data["full"], data["y"]
    kdd, ktd, ktt = _flat(full[:N, :N]), _flat(full[N:, :N]), _flat(full[N:, N:])
    reg = 1e-3 * torch.diagonal(kdd).mean()
    a = kdd + reg * torch.eye(N * K, dtype=torch.float64)
    mean = (ktd @ torch.linalg.solve(a, y.reshape(-1))).reshape(M, K)
    cov = ktt - ktd @ torch.linalg.solve(a, ktd.T)
    cov = cov.reshape(M, K, M, K).permute(0, 2, 1, 3)
    post = gp_inference(full[:N, :N], y, diag_reg=1e-3)("nngp", full[N:, :N], full[N:, N:])
    torch.testing.assert_close(post.mean, mean, rtol=1e-8, atol=1e-10)
    assert post.covariance.shape == (M, M, K, K)
    torch.testing.assert_close(post.covariance, cov, rtol=1e-8, atol=1e-10)


def test_gp_kron_identity_equals_matrix(data):
    th, y = data["theta"], data["y"]
    kern = {"nngp": th, "ntk": 1.3 * th + 0.1 * torch.eye(N + M, dtype=torch.float64)}
    blocks = [lambda k: k[:N, :N], lambda k: k[N:, :N], lambda k: k[N:, N:]]
    two = [{g: b(v) for g, v in kern.items()} for b in blocks]
    four = [{g: _kron(b(v)) for g, v in kern.items()} for b in blocks]
    want = gp_inference(two[0], y, diag_reg=1e-4)(("nngp", "ntk", "ntkgp"), two[1], two[2])
    got = gp_inference(four[0], y, diag_reg=1e-4)(("nngp", "ntk", "ntkgp"), four[1], four[2])
    for g in ("nngp", "ntk", "ntkgp"):
        torch.testing.assert_close(getattr(got, g).mean, getattr(want, g).mean,
                                   rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(getattr(got, g).covariance,
                                   _kron(getattr(want, g).covariance), rtol=1e-9, atol=1e-11)


def test_pair_kernel_errors(data):
    full, y = data["full"], data["y"]
    with pytest.raises(ValueError, match=r"y_train must have shape \(n, 3\)"):
        gradient_descent_mse(full[:N, :N], y[:, :2])
    fn = gradient_descent_mse(full[:N, :N], y)
    with pytest.raises(ValueError, match="k_test_train must have shape"):
        fn(1.0, 0.0, None, data["theta"][N:, :N])
    gp = gp_inference(full[:N, :N], y)
    with pytest.raises(ValueError, match="k_test_train.nngp must have shape"):
        gp("nngp", data["theta"][N:, :N])


def test_ode_pair_kernels(data):
    """gradient_descent: Θ ⊗ I_k = Θ (cross-entropy), and a coupled kernel under MSE
    matches the closed form of gradient_descent_mse (checked above by hand)."""
    from ntkit.predict import gradient_descent

    th, full, f0, ft0 = data["theta"], data["full"], data["f0"], data["ft0"]
    onehot = torch.nn.functional.one_hot(torch.arange(N) % K, K).double()
    ts = [0.0, 2.0, 15.0]
    want = gradient_descent("cross_entropy", th[:N, :N], onehot, LR)(ts, f0, ft0, th[N:, :N])
    got = gradient_descent("cross_entropy", _kron(th[:N, :N]), onehot, LR)(
        ts, f0, ft0, _kron(th[N:, :N]))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    y = data["y"]
    got = gradient_descent("mse", full[:N, :N], y, LR)(ts, f0, ft0, full[N:, :N])
    want = gradient_descent_mse(full[:N, :N], y, LR)(torch.tensor(ts, dtype=torch.float64),
                                                      f0, ft0, full[N:, :N])
    for a, b in zip(got, want, strict=True):
        assert a.shape == (3, a.shape[1], K)
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_ensemble_pair_kernels(data):
    """gradient_descent_mse_ensemble with precomputed kernels: Θ ⊗ I_k = Θ (means and
    covariances, test and train sets, finite and infinite t), and the coupled kernel's
    mean equals gradient_descent_mse from zero outputs (the ensemble's mean)."""
    from ntkit.predict import gradient_descent_mse_ensemble as ensemble

    th, full, y = data["theta"], data["full"], data["y"]
    kern = {"nngp": th, "ntk": 1.3 * th + 0.1 * torch.eye(N + M, dtype=torch.float64)}

    def parts(f):
        return [{g: f(v[s1, s2]) for g, v in kern.items()}
                for s1, s2 in ((slice(None, N),) * 2, (slice(N, None), slice(None, N)),
                               (slice(N, None),) * 2)]

    two, four = parts(lambda k: k), parts(_kron)
    ens2 = ensemble(None, None, y, LR, 1e-3, k_train_train=two[0])
    ens4 = ensemble(None, None, y, LR, 1e-3, k_train_train=four[0])
    for t in ([0.0, 5.0, 50.0], None):
        want = ens2(t, get=("nngp", "ntk"), compute_cov=True, k_test_train=two[1],
                    k_test_test=two[2])
        got = ens4(t, get=("nngp", "ntk"), compute_cov=True, k_test_train=four[1],
                   k_test_test=four[2])
        for g in ("nngp", "ntk"):
            torch.testing.assert_close(getattr(got, g).mean, getattr(want, g).mean,
                                       rtol=1e-9, atol=1e-11)
            torch.testing.assert_close(getattr(got, g).covariance,
                                       _kron(getattr(want, g).covariance), rtol=1e-9,
                                       atol=1e-11)
        want, got = ens2(t, get="ntk", compute_cov=True), ens4(t, get="ntk", compute_cov=True)
        torch.testing.assert_close(got.mean, want.mean, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(got.covariance, _kron(want.covariance), rtol=1e-9,
                                   atol=1e-11)
    ens = ensemble(None, None, y, LR, k_train_train={"ntk": full[:N, :N]})
    ts = torch.tensor([0.5, 5.0, 60.0], dtype=torch.float64)
    got = ens(ts, get="ntk", k_test_train={"ntk": full[N:, :N]})
    _, want = gradient_descent_mse(full[:N, :N], y, LR)(ts, 0.0, 0.0, full[N:, :N])
    assert got.shape == (3, M, K)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)

"""The demo experiment: finite networks trained by gradient descent vs their NTK prediction.

Setup (all float64):

- data: scikit-learn's bundled digits (8×8 images, d = 64, 10 classes), a stratified
  train/test split (`ntkit.lab.data.load_digits_split`), features standardized with the
  training statistics, targets the centred one-hot vectors onehot(y) − 1/10 (each row
  sums to 0, so a zero function predicts the mean target);
- architecture: one layer spec ``depth`` × [Dense(m), activation] + Dense(10), NTK
  parameterization. ``spec.build`` gives the finite network at width m and
  ``spec.kernel`` its infinite-width NNGP and NTK (which do not depend on m);
- training: full-batch gradient descent with step η on the loss 0.5·mean((f − y)²) over
  all n·10 outputs, i.e. exactly the flow that `ntkit.predict.gradient_descent_mse`
  integrates, with time t counted in steps (t = number of steps taken);
- η = ``lr_fraction`` · N / λ_max(Θ_train), N = n·10, so every eigenmode of the
  infinite-width dynamics decays monotonically (ηλ/N ≤ lr_fraction < 1).

Comparison: the standard one. A network of width m with initial outputs f₀ (train and
test) is compared with the infinite-width prediction started from the same f₀:

    f_train(t) = y + exp(−η t Θ/N)(f₀ − y),
    f_test(t)  = f₀,test − Θ_*d Θ⁻¹ (I − exp(−η t Θ/N))(f₀ − y)

(``gradient_descent_mse(Θ, y, η)(t, f₀, f₀_test, Θ_*d)``). The gap is the RMS over test
points and outputs of f_net − f_NTK at the final time; theory says it shrinks like
m^(−1/2). Two more width-free references are reported: the infinite-ensemble mean (the
same prediction started from f₀ = 0, what an average over many initializations gives) and
the NNGP posterior mean (Bayesian inference with the NNGP prior, t = ∞).

Discrete vs continuous time: the networks take discrete steps, the closed form is the
continuous flow. Their difference, at fixed kernel, is measured exactly by running the
discrete linear recursion f ← f − ηΘ(f − y)/N with the infinite-width Θ from each
network's f₀ ("discretization floor"); it is width-independent and reported next to
the gaps, so that a gap at the floor is not mistaken for a width effect.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ntkit.engine.threads import torch_threads
from ntkit.lab.data import load_digits_split
from ntkit.predict import gp_inference, gradient_descent_mse
from ntkit.sklearn import make_network

__all__ = ["DemoConfig", "DemoResult", "NetRun", "checkpoint_steps", "fit_power_law",
           "load_digits_split", "run_demo_experiment"]

ProgressFactory = Callable[..., Any]  # tqdm-like: factory(total=..., desc=...) -> bar


@dataclass(frozen=True)
class DemoConfig:
    """Configuration of the demo; the defaults are the full run (~1–2 min on 2 cores).

    Attributes:
      n_train, n_test: sizes of the stratified digits split.
      widths: hidden widths m of the finite networks.
      depth: number of hidden layers; activation, w_std, b_std: the Dense/activation spec.
      steps: gradient-descent steps S (the final time is t = S).
      lr_fraction: η = lr_fraction · N / λ_max(Θ_train).
      n_checkpoints: roughly log-spaced steps at which outputs are recorded.
      seed_budget, max_seeds: networks per width = clip(seed_budget // m, 1, max_seeds),
        so that narrow (cheap, noisy) widths are averaged over more initializations.
      seed: seed of the data split and of the initializations.
      threads: torch intra-op threads while the demo runs (restored afterwards).
      quick: marks the few-second smoke configuration (`quick_config`).
    """

    n_train: int = 256
    n_test: int = 512
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
    depth: int = 1
    activation: str = "relu"
    w_std: float = 1.0
    b_std: float = 0.05
    steps: int = 300
    lr_fraction: float = 0.5
    n_checkpoints: int = 30
    seed_budget: int = 4096
    max_seeds: int = 4
    seed: int = 0
    threads: int = 1
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> DemoConfig:
        """A few-second version for tests and smoke runs (same code path, small sizes)."""
        kw: dict[str, Any] = dict(n_train=64, n_test=128, widths=(32, 64, 128, 256), steps=40,
                                  n_checkpoints=10, seed_budget=256, max_seeds=2, quick=True)
        kw.update(overrides)
        return cls(**kw)

    def seeds_for(self, width: int) -> int:
        return int(min(self.max_seeds, max(1, self.seed_budget // width)))

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d


@dataclass
class NetRun:
    """One finite network: its outputs over time and the NTK prediction from its f₀.

    Arrays are (T,) over checkpoints unless noted; outputs are (T, n, 10).
    """

    width: int
    seed: int
    train_loss: np.ndarray
    test_acc: np.ndarray
    ntk_train_loss: np.ndarray  # loss of the NTK prediction started from this net's f₀
    ntk_test_acc: np.ndarray
    gap_test_t: np.ndarray  # RMS(f_net − f_NTK) on the test set at each checkpoint
    gap_train_t: np.ndarray
    gap_test: float  # at the final time
    gap_train: float
    rel_gap_test: float  # gap_test / RMS(f_NTK(T) − f₀) on the test set
    floor_test: float  # discrete vs continuous time, infinite-width kernel, same f₀
    floor_test_t: np.ndarray  # the same at each checkpoint
    seconds: float
    final_test_net: np.ndarray | None = None  # (m, 10), kept for the scatter figure
    final_test_ntk: np.ndarray | None = None


@dataclass
class DemoResult:
    config: DemoConfig
    learning_rate: float
    lambda_max: float
    checkpoints: np.ndarray  # (T,) GD steps
    curve_times: np.ndarray  # dense times for the infinite-width curves
    ntk_mean_acc: np.ndarray  # test accuracy of the f₀ = 0 NTK prediction at curve_times
    ntk_mean_loss: np.ndarray  # its train loss
    ntk_inf_acc: float  # t = ∞ (kernel regression with the NTK)
    nngp_acc: float  # NNGP posterior mean
    kernel_ntk: np.ndarray  # (n, n) train NTK, rows sorted by class
    kernel_nngp: np.ndarray
    sorted_labels: np.ndarray
    runs: list[NetRun] = field(default_factory=list)
    seconds: float = 0.0
    kernel_seconds: float = 0.0

    # ---- summaries ------------------------------------------------------------------
    def by_width(self) -> list[dict[str, Any]]:
        """One row per width: means over its seeds."""
        rows = []
        for m in self.config.widths:
            rs = [r for r in self.runs if r.width == m]
            rows.append(dict(
                width=m, seeds=len(rs),
                gap_test=float(np.mean([r.gap_test for r in rs])),
                gap_train=float(np.mean([r.gap_train for r in rs])),
                rel_gap_test=float(np.mean([r.rel_gap_test for r in rs])),
                floor_test=float(np.mean([r.floor_test for r in rs])),
                train_loss=float(np.mean([r.train_loss[-1] for r in rs])),
                test_acc=float(np.mean([r.test_acc[-1] for r in rs])),
                ntk_test_acc=float(np.mean([r.ntk_test_acc[-1] for r in rs])),
                seconds=float(np.sum([r.seconds for r in rs])),
            ))
        return rows

    def slope(self, key: str = "gap_test") -> tuple[float, float]:
        """Least-squares fit log(gap) = a + slope·log(width) over the per-width means.

        Returns (slope, prefactor e^a).
        """
        rows = self.by_width()
        return fit_power_law([r["width"] for r in rows], [r[key] for r in rows])

    def summary(self) -> dict[str, Any]:
        slope, pref = self.slope("gap_test")
        slope_tr, _ = self.slope("gap_train")
        return dict(
            config=self.config.as_dict(), learning_rate=self.learning_rate,
            lambda_max=self.lambda_max, final_time=int(self.checkpoints[-1]),
            slope_test=slope, prefactor_test=pref, slope_train=slope_tr,
            ntk_mean_final_acc=float(self.ntk_mean_acc[-1]), ntk_inf_acc=self.ntk_inf_acc,
            nngp_acc=self.nngp_acc, widths=self.by_width(), seconds=self.seconds,
            kernel_seconds=self.kernel_seconds,
        )


def fit_power_law(x, y) -> tuple[float, float]:
    """(slope, prefactor) of the least-squares line through (log x, log y)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(np.exp(intercept))


def checkpoint_steps(steps: int, n: int) -> np.ndarray:
    """Unique integer steps 0 ≤ s ≤ steps, roughly log-spaced (0 and steps included)."""
    s = np.unique(np.round(np.geomspace(1, steps, max(n - 1, 1))).astype(int))
    return np.concatenate([[0], s])


def _rms(a: np.ndarray, axis=None) -> np.ndarray:
    return np.sqrt(np.mean(np.square(a), axis=axis))


def _accuracy(f: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy of argmax predictions; f is (..., m, 10)."""
    return np.mean(np.argmax(f, axis=-1) == labels, axis=-1)


def _loss(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """0.5·mean((f − y)²) over the last two axes."""
    return 0.5 * np.mean(np.square(f - y), axis=(-2, -1))


def _train_network(spec, seed: int, x_tr: torch.Tensor, y_tr: torch.Tensor,
                   x_te: torch.Tensor, lr: float, checkpoints: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch GD on 0.5·mean((f − y)²); outputs (train, test) at the checkpoints.

    Returns arrays (T, n_train, k) and (T, n_test, k).
    """
    net = spec.build(x_tr.shape[1], seed=seed, dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    f_tr, f_te = [], []
    want = set(int(c) for c in checkpoints)
    for step in range(int(checkpoints[-1]) + 1):
        out = net(x_tr)
        if step in want:
            f_tr.append(out.detach().numpy().copy())
            with torch.no_grad():
                f_te.append(net(x_te).numpy().copy())
        if step == checkpoints[-1]:
            break
        loss = 0.5 * torch.mean((out - y_tr) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return np.stack(f_tr), np.stack(f_te)


def _discrete_linear(lam: np.ndarray, v: np.ndarray, k_td: np.ndarray, y: np.ndarray,
                     f0: np.ndarray, f0_te: np.ndarray, lr: float, steps: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Outputs after each of ``steps`` (T,) GD steps of the linearized model, fixed kernel.

    The recursion f ← f − (η/N) K (f − y), with K = v diag(lam) vᵀ, summed in closed form
    per eigenmode: the residual shrinks by (1 − a)^S, a = ηλ/N, and the test outputs move
    by −K_*d v diag((1 − (1 − a)^S)/λ) vᵀ (f₀ − y) (→ S·η/N as λ → 0).

    Returns (T, n, k) train and (T, m, k) test outputs.
    """
    scale = lr / y.size
    a = np.clip(lam, 0.0, None) * scale
    s = np.asarray(steps, dtype=float)[:, None]
    decay = (1.0 - a) ** s  # (T, n)
    small = a < 1e-12
    g = np.where(small, s * scale, (1.0 - decay) / np.where(small, 1.0, lam))
    r0 = v.T @ (f0 - y)  # (n, k)
    f = y + np.einsum("ij,tj,jk->tik", v, decay, r0)
    ft = f0_te - np.einsum("mi,ij,tj,jk->tmk", k_td, v, g, r0, optimize=True)
    return f, ft


def run_demo_experiment(config: DemoConfig | None = None, *,
                        progress: ProgressFactory | None = None,
                        log: Callable[[str], None] | None = None) -> DemoResult:
    """Run the experiment described in the module docstring.

    Args:
      config: a `DemoConfig` (default: the full run).
      progress: optional tqdm-like factory ``progress(total=..., desc=..., unit=...)``
        returning a bar with ``update(k)``, ``set_postfix_str(s)`` and ``close()``.
      log: optional callable for one-line status messages.

    Returns:
      `DemoResult` with every measured curve and summary.
    """
    cfg = config or DemoConfig()
    with torch_threads(cfg.threads):
        return _run(cfg, progress, log or (lambda s: None))


def _run(cfg: DemoConfig, progress: ProgressFactory | None,
         say: Callable[[str], None]) -> DemoResult:
    t_start = time.perf_counter()
    x_tr, x_te, y_tr, y_te, l_tr, l_te = load_digits_split(cfg.n_train, cfg.n_test, cfg.seed)
    n_classes = y_tr.shape[1]

    def spec(width: int):
        return make_network(cfg.depth, cfg.activation, cfg.w_std, cfg.b_std, width=width,
                            out_features=n_classes)

    # ---- infinite width (the kernels do not depend on the width) ---------------------
    t0 = time.perf_counter()
    inf = spec(1)
    k_dd = inf.kernel(x_tr)
    k_td = inf.kernel(x_te, x_tr)
    kernel_seconds = time.perf_counter() - t0
    ntk, ntk_td = k_dd.ntk.numpy(), k_td.ntk.numpy()
    lam, vecs = np.linalg.eigh(ntk)
    lam_max = float(lam[-1])
    n_out = y_tr.size
    lr = cfg.lr_fraction * n_out / lam_max
    say(f"kernels of {cfg.n_train}+{cfg.n_test} digits in {kernel_seconds:.2f} s; "
        f"learning rate η = {lr:.3g} ({cfg.lr_fraction} · N / λ_max)")

    checkpoints = checkpoint_steps(cfg.steps, cfg.n_checkpoints)
    fn = gradient_descent_mse(ntk, y_tr, learning_rate=lr)
    curve_times = np.concatenate([[0.0], np.geomspace(0.5, cfg.steps, 120)])
    f_tr_mean, f_te_mean = fn(curve_times, 0.0, 0.0, ntk_td)
    ntk_mean_acc = _accuracy(f_te_mean.numpy(), l_te)
    ntk_mean_loss = _loss(f_tr_mean.numpy(), y_tr)
    _, f_te_inf = fn(None, None, None, ntk_td)
    gp = gp_inference(k_dd.nngp, y_tr)
    nngp_mean = gp("nngp", k_td.nngp).numpy()

    order = np.argsort(l_tr, kind="stable")
    result = DemoResult(
        config=cfg, learning_rate=lr, lambda_max=lam_max, checkpoints=checkpoints,
        curve_times=curve_times, ntk_mean_acc=ntk_mean_acc, ntk_mean_loss=ntk_mean_loss,
        ntk_inf_acc=float(_accuracy(f_te_inf.numpy(), l_te)),
        nngp_acc=float(_accuracy(nngp_mean, l_te)),
        kernel_ntk=ntk[np.ix_(order, order)], kernel_nngp=k_dd.nngp.numpy()[np.ix_(order, order)],
        sorted_labels=l_tr[order], kernel_seconds=kernel_seconds)

    # ---- finite widths ---------------------------------------------------------------
    xt_tr, xt_te = torch.from_numpy(x_tr), torch.from_numpy(x_te)
    yt_tr = torch.from_numpy(y_tr)
    jobs = [(m, j) for m in cfg.widths for j in range(cfg.seeds_for(m))]
    # Cost of a run is about proportional to its width: weight the bar by it.
    bar = None if progress is None else progress(total=sum(m for m, _ in jobs),
                                                 desc="training networks", unit="width")
    try:
        for m, j in jobs:
            t0 = time.perf_counter()
            seed = cfg.seed * 1000 + j
            f_net_tr, f_net_te = _train_network(spec(m), seed, xt_tr, yt_tr, xt_te, lr,
                                                checkpoints)
            f0_tr, f0_te = f_net_tr[0], f_net_te[0]
            p_tr, p_te = fn(checkpoints.astype(float), f0_tr, f0_te, ntk_td)
            p_tr, p_te = p_tr.numpy(), p_te.numpy()
            _, d_te = _discrete_linear(lam, vecs, ntk_td, y_tr, f0_tr, f0_te, lr, checkpoints)
            floor_t = _rms(d_te - p_te, axis=(1, 2))
            gap_te_t = _rms(f_net_te - p_te, axis=(1, 2))
            gap_tr_t = _rms(f_net_tr - p_tr, axis=(1, 2))
            keep = j == 0  # one network per width for the scatter figure
            result.runs.append(NetRun(
                width=m, seed=seed, train_loss=_loss(f_net_tr, y_tr),
                test_acc=_accuracy(f_net_te, l_te), ntk_train_loss=_loss(p_tr, y_tr),
                ntk_test_acc=_accuracy(p_te, l_te), gap_test_t=gap_te_t, gap_train_t=gap_tr_t,
                gap_test=float(gap_te_t[-1]), gap_train=float(gap_tr_t[-1]),
                rel_gap_test=float(gap_te_t[-1] / _rms(p_te[-1] - f0_te)),
                floor_test=float(floor_t[-1]), floor_test_t=floor_t,
                seconds=time.perf_counter() - t0,
                final_test_net=f_net_te[-1] if keep else None,
                final_test_ntk=p_te[-1] if keep else None))
            if bar is not None:
                bar.update(m)
                bar.set_postfix_str(f"width {m}, seed {j}: gap {gap_te_t[-1]:.3g}")
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - t_start
    return result

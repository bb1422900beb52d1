"""Random feature maps φ: R^d → R^m with E[φ(x)·φ(y)] = k(x, y) (or → k as m → ∞).

Every map here shares one API:

- ``phi = sampler(x)``: (n, n_features) features of a batch x: (n, d);
- ``sampler.gram(x, y=None)``: (n1, n2) random-features kernel φ(x)·φ(y);
- ``sampler.exact_kernel(x, y=None)``: (n1, n2) kernel that the features estimate.

The random parameters are drawn once, at construction, from ``torch.Generator`` seeded
with ``seed``; the same seed gives the same map. Features are computed in ``dtype``
(float64 by default).

Kinds (see `make_features`):

- 'fourier_gaussian', 'fourier_laplacian', 'fourier_cauchy': random Fourier features
  (Rahimi & Recht 2007) drawn from the kernel's spectral density, `RandomFourierFeatures`.
  φ(x)·φ(y) is unbiased for k(x, y).
- 'relu', 'step': random arc-cosine features (Cho & Saul 2009), `ArcCosineFeatures`;
  unbiased for the arc-cosine kernels of degree 1 and 0.
- 'ntk': Jacobian features of a random two-layer network, `NTKFeatures`; their Gram is
  the network's empirical NTK, which converges to the analytic two-layer NTK.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ntkit.engine.inputs import as_batch
from ntkit.features import kernels as K

__all__ = [
    "FOURIER_VARIANTS",
    "KINDS",
    "ArcCosineFeatures",
    "NTKFeatures",
    "RandomFeatureMap",
    "RandomFourierFeatures",
    "TwoLayerNet",
    "exact_kernel",
    "make_features",
]

KINDS = ("fourier_gaussian", "fourier_laplacian", "fourier_cauchy", "relu", "step", "ntk")
FOURIER_VARIANTS = ("cos_sin", "cos")


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        gen.manual_seed(seed)
    return gen


class RandomFeatureMap:
    """Base class: a fixed random map x ↦ φ(x) ∈ R^{n_features} (see module docstring).

    Attributes:
      in_features: d, the input dimension.
      n_features: m, the output dimension of φ.
      dtype: compute dtype of the features.
    """

    kind: str = ""

    def __init__(self, in_features: int, n_features: int, seed: int | None,
                 dtype: torch.dtype):
        self.in_features = _check_count("in_features", in_features)
        self.n_features = _check_count("n_features", n_features)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.dtype = dtype
        self.seed = seed

    def _input(self, x, name: str = "x") -> Tensor:
        x = as_batch(x, name, self.dtype)
        if x.shape[1] != self.in_features:
            raise ValueError(f"{name} has {x.shape[1]} features but this {type(self).__name__} "
                             f"was built for in_features={self.in_features}")
        return x

    def features(self, x: Tensor) -> Tensor:  # x already validated
        raise NotImplementedError

    def __call__(self, x: Any) -> Tensor:
        """φ(x): (n, n_features) for x: (n, in_features)."""
        return self.features(self._input(x))

    def gram(self, x: Any, y: Any = None) -> Tensor:
        """Random-features kernel φ(x)·φ(y)ᵀ: (n1, n2); y=None means y = x."""
        px = self(x)
        return px @ px.T if y is None else px @ self(y).T

    def exact_kernel(self, x: Any, y: Any = None) -> Tensor:
        """The kernel k(x, y) that φ(x)·φ(y) estimates: (n1, n2)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(kind={self.kind!r}, in_features={self.in_features}, "
                f"n_features={self.n_features}, seed={self.seed!r})")


class RandomFourierFeatures(RandomFeatureMap):
    """Random Fourier features of a shift-invariant kernel (Bochner: k(δ) = E_ω[cos(ω·δ)]).

    Kernels and spectral densities (γ = ``gamma``; the kernel conventions are those of
    `ntkit.features.kernels`, each with k(0) = 1):

    ============  ================================  ==========================================
    kind          k(x, y), δ = x − y                frequencies ω ∈ R^d (i.i.d. coordinates)
    ============  ================================  ==========================================
    'gaussian'    exp(−γ ‖δ‖₂²)                     ω ~ N(0, 2γ I)
    'laplacian'   exp(−γ ‖δ‖₁)                      ω_i ~ Cauchy(0, γ): p = γ / (π(γ² + ω²))
    'cauchy'      Π_i 1 / (1 + γ² δ_i²)             ω_i ~ Laplace(0, γ): p = e^{−|ω|/γ} / (2γ)
    ============  ================================  ==========================================

    Variants (m = ``n_features``):

    - 'cos_sin' (default): m/2 frequencies, φ(x) = √(2/m) [cos(Ωx), sin(Ωx)]; m must be even.
      Each pair contributes cos(ω·δ) exactly, so Var = ((1 + k(2δ))/2 − k(δ)²) / (m/2).
    - 'cos': m frequencies and phases b ~ U[0, 2π), φ(x) = √(2/m) cos(Ωx + b);
      Var = (1 + k(2δ)/2 − k(δ)²) / m.

    Both are unbiased: E[φ(x)·φ(y)] = k(x, y).

    Args:
      kind: 'gaussian', 'laplacian' or 'cauchy' (a 'fourier_' prefix is accepted).
      in_features: input dimension d.
      n_features: feature count m.
      gamma: γ > 0.
      seed: int seed of the frequencies (None: nondeterministic).
      variant: 'cos_sin' or 'cos'.
      dtype: compute dtype (float64 default).
    """

    def __init__(self, kind: str, in_features: int, n_features: int, gamma: float = 1.0,
                 seed: int | None = 0, *, variant: str = "cos_sin",
                 dtype: torch.dtype = torch.float64):
        super().__init__(in_features, n_features, seed, dtype)
        base = kind[len("fourier_"):] if isinstance(kind, str) and kind.startswith("fourier_") \
            else kind
        if base not in K.FOURIER_KINDS:
            raise ValueError(f"unknown Fourier kernel {kind!r}; expected one of "
                             f"{K.FOURIER_KINDS} (optionally prefixed 'fourier_')")
        if variant not in FOURIER_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {FOURIER_VARIANTS}")
        if variant == "cos_sin" and n_features % 2:
            raise ValueError(f"variant 'cos_sin' needs an even n_features, got {n_features}")
        self.kind = "fourier_" + base
        self.base_kind = base
        self.gamma = K.check_gamma(gamma)
        self.variant = variant
        gen = _generator(seed)
        n_freq = n_features // 2 if variant == "cos_sin" else n_features
        shape = (n_freq, in_features)
        # Sampled in float64 whatever the compute dtype, so float32 features use the same
        # frequencies as float64 ones.
        f64 = torch.float64
        if base == "gaussian":
            omega = torch.randn(shape, generator=gen, dtype=f64) * math.sqrt(2.0 * self.gamma)
        elif base == "laplacian":
            u = torch.rand(shape, generator=gen, dtype=f64)
            omega = self.gamma * torch.tan(math.pi * (u - 0.5))  # inverse CDF of Cauchy
        else:
            # Laplace = random sign × exponential; 1 − U ∈ (0, 1] keeps the log finite.
            u = torch.rand(shape, generator=gen, dtype=f64)
            sign = torch.where(torch.rand(shape, generator=gen, dtype=f64) < 0.5, -1.0, 1.0)
            omega = -self.gamma * sign * torch.log1p(-u)
        self.omega = omega.to(dtype)  # (n_freq, d)
        self.phase = None
        if variant == "cos":
            self.phase = (2 * math.pi * torch.rand(n_freq, generator=gen, dtype=f64)).to(dtype)

    def features(self, x: Tensor) -> Tensor:
        proj = x @ self.omega.T
        scale = math.sqrt(2.0 / self.n_features)
        if self.variant == "cos":
            return scale * torch.cos(proj + self.phase)
        return scale * torch.cat([torch.cos(proj), torch.sin(proj)], dim=1)

    def exact_kernel(self, x: Any, y: Any = None) -> Tensor:
        x = self._input(x)
        y = None if y is None else self._input(y, "y")
        return K.fourier_kernel(self.base_kind, x, y, self.gamma, dtype=self.dtype)


class ArcCosineFeatures(RandomFeatureMap):
    """Random step (degree 0) or ReLU (degree 1) features, unbiased for arc-cosine kernels.

    φ_j(x) = √(2/m) Θ(w_j·x̃) (w_j·x̃)ⁿ with w_j ~ N(0, I_d) and x̃ = √γ x, so that

      E[φ(x)·φ(y)] = k_n(x̃, ỹ) = (1/π) ‖x̃‖ⁿ‖ỹ‖ⁿ J_n(θ)    (`kernels.arccos_kernel`),

    i.e. k_1 = γ k_1(x, y) (ReLU: k_1(x, x) = γ‖x‖², "He" normalization) and k_0 = 1 − θ/π
    (step; independent of γ). The step function is Θ(t) = [t > 0] (Θ(0) = 0, as torch's
    ``x > 0`` and `ntkit.dual`), which only matters for a zero input, where the kernel uses
    the same convention (k_0(0, y) = 0).
    Per pair, Var[φ(x)·φ(y)] = (2 k_{2n}(x̃, ỹ) − k_n(x̃, ỹ)²)/m for n = 1, (2k_0 − k_0²)/m for n = 0.

    Args:
      degree: 0 (step) or 1 (ReLU); in_features, n_features, gamma (> 0), seed, dtype as in
      `RandomFourierFeatures`.
    """

    def __init__(self, degree: int, in_features: int, n_features: int, gamma: float = 1.0,
                 seed: int | None = 0, *, dtype: torch.dtype = torch.float64):
        super().__init__(in_features, n_features, seed, dtype)
        if degree not in (0, 1) or isinstance(degree, bool):
            raise ValueError(f"ArcCosineFeatures degree must be 0 (step) or 1 (ReLU), "
                             f"got {degree!r}")
        self.degree = degree
        self.kind = "relu" if degree == 1 else "step"
        self.gamma = K.check_gamma(gamma)
        gen = _generator(seed)
        w = torch.randn(n_features, in_features, generator=gen, dtype=torch.float64)
        self.weight = (w * math.sqrt(self.gamma)).to(dtype)  # rows: √γ w_j

    def features(self, x: Tensor) -> Tensor:
        pre = x @ self.weight.T
        scale = math.sqrt(2.0 / self.n_features)
        if self.degree == 1:
            return scale * torch.relu(pre)
        return scale * (pre > 0).to(pre.dtype)

    def exact_kernel(self, x: Any, y: Any = None) -> Tensor:
        x = self._input(x) * math.sqrt(self.gamma)
        y = None if y is None else self._input(y, "y") * math.sqrt(self.gamma)
        return K.arccos_kernel(x, y, self.degree, dtype=self.dtype)


class TwoLayerNet(nn.Module):
    """f(x) = (1/√m) Σ_j a_j σ(w_j·x̃), x̃ = √γ x: the network behind `NTKFeatures`.

    Parameters ``weight`` (m, d) and ``output`` (m,) are standard normal (NTK
    parameterization); ``forward`` maps (n, d) → (n,).
    """

    def __init__(self, weight: Tensor, output: Tensor, gamma: float, act: Any):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.output = nn.Parameter(output.clone())
        self.gamma = gamma
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        pre = (x * math.sqrt(self.gamma)) @ self.weight.T
        return self.act(pre) @ self.output / math.sqrt(self.weight.shape[0])


class NTKFeatures(RandomFeatureMap):
    """Jacobian (NTK) features of a random two-layer network.

    Network: f(x) = (1/√m) Σ_{j=1}^m a_j σ(w_j·x̃), x̃ = √γ x, with w_j ~ N(0, I_d) and
    a_j ~ N(0, 1) (m = ``width``). The features are the parameter gradient

      φ(x) = [∂f/∂W, ∂f/∂a] = [(1/√m) a_j σ'(w_j·x̃) x̃ (m·d entries, j-major),
                               (1/√m) σ(w_j·x̃) (m entries, if ``train_output``)],

    so φ(x)·φ(y) is the network's empirical NTK exactly, and it converges as m → ∞ to

      Θ(x, y) = (x̃·ỹ) E[σ'(u)σ'(v)] + E[σ(u)σ(v)],  (u, v) ~ N(0, [[‖x̃‖², x̃·ỹ], [·, ‖ỹ‖²]]).

    ``n_features`` is m·d (+ m with ``train_output``); `gram` avoids forming them.

    Args:
      in_features: d.
      width: hidden width m.
      gamma: input scale γ > 0 (equivalently, first-layer weight variance).
      seed: int seed (None: nondeterministic).
      activation: 'relu' (closed-form kernel) or an ntkit `Activation` spec (its ``fn`` for
        the network and its ``dual`` for the kernel). σ' is torch's autograd derivative
        (ReLU'(0) = 0), so the features match torch.func's empirical NTK exactly.
      train_output: include the output-layer gradient ∂f/∂a.
      dtype: compute dtype.
    """

    kind = "ntk"

    def __init__(self, in_features: int, width: int, gamma: float = 1.0,
                 seed: int | None = 0, *, activation: Any = "relu", train_output: bool = True,
                 dtype: torch.dtype = torch.float64):
        width = _check_count("width", width)
        in_features = _check_count("in_features", in_features)
        n_features = width * in_features + (width if train_output else 0)
        super().__init__(in_features, n_features, seed, dtype)
        self.width = width
        self.gamma = K.check_gamma(gamma)
        self.train_output = bool(train_output)
        if isinstance(activation, str):
            if activation != "relu":
                raise ValueError(f"unknown activation {activation!r}; use 'relu' or an ntkit "
                                 "Activation spec")
            self._fn = torch.relu
        elif hasattr(activation, "fn") and hasattr(activation, "dual"):
            self._fn = activation.fn
        else:
            raise TypeError(f"activation must be 'relu' or an ntkit Activation, got "
                            f"{type(activation).__name__}")
        self.activation = activation
        gen = _generator(seed)
        self.weight = torch.randn(width, in_features, generator=gen,
                                  dtype=torch.float64).to(dtype)
        self.output = torch.randn(width, generator=gen, dtype=torch.float64).to(dtype)

    def network(self) -> TwoLayerNet:
        """The finite network (an ``nn.Module`` with these parameters) whose NTK φ·φ is."""
        return TwoLayerNet(self.weight, self.output, self.gamma, self._fn)

    def _act_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """σ(w·x̃), σ'(w·x̃): each (n, m)."""
        pre = (x * math.sqrt(self.gamma)) @ self.weight.T
        with torch.enable_grad():
            p = pre.detach().requires_grad_(True)
            out = self._fn(p)
            (dact,) = torch.autograd.grad(out.sum(), p)
        return out.detach(), dact

    def features(self, x: Tensor) -> Tensor:
        act, dact = self._act_and_grad(x)
        scale = 1.0 / math.sqrt(self.width)
        xt = x * math.sqrt(self.gamma)
        jw = (scale * self.output * dact)[:, :, None] * xt[:, None, :]  # (n, m, d)
        parts = [jw.reshape(x.shape[0], -1)]
        if self.train_output:
            parts.append(scale * act)
        return torch.cat(parts, dim=1)

    def gram(self, x: Any, y: Any = None) -> Tensor:
        """Empirical NTK φ(x)·φ(y) without forming φ: (n1, n2)."""
        x = self._input(x)
        yv = x if y is None else self._input(y, "y")
        ax, dx = self._act_and_grad(x)
        ay, dy = (ax, dx) if y is None else self._act_and_grad(yv)
        a2 = self.output * self.output
        g = ((dx * a2) @ dy.T) * ((x @ yv.T) * (self.gamma / self.width))
        if self.train_output:
            g = g + (ax @ ay.T) / self.width
        return g

    def exact_kernel(self, x: Any, y: Any = None) -> Tensor:
        x = self._input(x) * math.sqrt(self.gamma)
        y = None if y is None else self._input(y, "y") * math.sqrt(self.gamma)
        if isinstance(self.activation, str):
            return K.relu_ntk_two_layer(x, y, train_output=self.train_output, dtype=self.dtype)
        return K.activation_ntk_two_layer(self.activation, x, y,
                                          train_output=self.train_output, dtype=self.dtype)

    def __repr__(self) -> str:
        return (f"NTKFeatures(in_features={self.in_features}, width={self.width}, "
                f"gamma={self.gamma}, activation={self.activation!r}, "
                f"train_output={self.train_output}, seed={self.seed!r})")


def make_features(kind: str, in_features: int, n_features: int, gamma: float = 1.0,
                  seed: int | None = 0, *, dtype: torch.dtype = torch.float64,
                  **options: Any) -> RandomFeatureMap:
    """A random feature map of the given kind (one of `KINDS`).

    For 'ntk', ``n_features`` is the hidden width m (the map has m·d + m features);
    ``options`` go to the class (``variant`` for Fourier kinds; ``activation``,
    ``train_output`` for 'ntk').
    """
    if kind in ("fourier_gaussian", "fourier_laplacian", "fourier_cauchy"):
        return RandomFourierFeatures(kind, in_features, n_features, gamma, seed, dtype=dtype,
                                     **options)
    if kind in ("relu", "step"):
        if options:
            raise TypeError(f"unexpected options for kind {kind!r}: {sorted(options)}")
        return ArcCosineFeatures(1 if kind == "relu" else 0, in_features, n_features, gamma,
                                 seed, dtype=dtype)
    if kind == "ntk":
        return NTKFeatures(in_features, n_features, gamma, seed, dtype=dtype, **options)
    raise ValueError(f"unknown random-features kind {kind!r}; expected one of {KINDS}")


def exact_kernel(kind: str, x: Any, y: Any = None, gamma: float = 1.0, *,
                 dtype: torch.dtype = torch.float64) -> Tensor:
    """Closed-form kernel of ``kind`` (one of `KINDS`) between x (n1, d) and y (n2, d).

    Same conventions as the feature maps: Fourier kinds as in `RandomFourierFeatures`;
    'relu'/'step' are arc-cosine kernels of √γ x; 'ntk' is the two-layer ReLU NTK (with the
    output layer trained) of √γ x.
    """
    if kind in ("fourier_gaussian", "fourier_laplacian", "fourier_cauchy"):
        return K.fourier_kernel(kind[len("fourier_"):], x, y, gamma, dtype=dtype)
    if kind not in KINDS:
        raise ValueError(f"unknown random-features kind {kind!r}; expected one of {KINDS}")
    s = math.sqrt(K.check_gamma(gamma))
    x = as_batch(x, "x", dtype) * s
    y = None if y is None else as_batch(y, "y", dtype) * s
    if kind == "ntk":
        return K.relu_ntk_two_layer(x, y, dtype=dtype)
    return K.arccos_kernel(x, y, 1 if kind == "relu" else 0, dtype=dtype)

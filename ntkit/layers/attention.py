"""Global scaled dot-product self-attention: `GlobalSelfAttention`.

Infinite-width kernel of Hron, Bahri, Sohl-Dickstein & Novak (2020), "Infinite attention:
NNGP and NTK for deep attention networks", with neural-tangents 0.6.5's conventions and
parameterization (every sub-layer in NTK parameterization). Positions are flattened:
with P = |S| positions, the input's nngp is read as (n1, n2, P, P) and each example's own
covariance cov1 as (n1, P, P), so the layer needs full position-pair storage (like
pooling). Kernel maps, with K the input kernel and R the positional-embedding covariance:

- interpolation: K̃ = a·K + c·R, with (a, c) = (1, w_pos_emb_std²) for "sum",
  (C/(C+Cₑ), w_pos_emb_std²·Cₑ/(C+Cₑ)) for "concat" (C input, Cₑ embedding channels),
  K̃ = K for "none"; values see K̃ only when ``val_pos_emb``;
- linear scaling (keys and queries tied, logits scaled by 1/n_chan_key): each example's
  attention weights converge to G = mech(w_q·w_k · K̃(x, x)) (softmax over the attended
  position), and nngp' = (w_o·w_v)²·G₁ V G₂ᵀ + b², ntk' = (w_o·w_v)²·G₁ (Θ + 2V) G₂ᵀ + b²
  (V, Θ: the value-side nngp/ntk);
- square-root scaling: only the "identity" mechanism has a closed form (neural-tangents'
  formula, quoted in `_sqrt_identity`); the others raise, as there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ntkit.kernel import Kernel, Storage
from ntkit.layers.base import ExampleShape, Layer, check_std, is_streams, std_value

MECHANISMS = ("softmax", "identity", "abs", "relu")
POS_EMB_TYPES = ("none", "sum", "concat")


def _mechanism(name: str, g: Tensor) -> Tensor:
    if name == "softmax":
        return torch.softmax(g, dim=-1)
    if name == "abs":
        return g.abs()
    if name == "relu":
        return g.clamp_min(0.0)
    return g


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"GlobalSelfAttention {name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"GlobalSelfAttention {name} must be >= 1, got {value}")
    return value


def pos_emb_covariance(spatial: tuple[int, ...], p_norm: float,
                       decay_fn: Callable[[Tensor], Tensor] | None,
                       dtype: torch.dtype = torch.float64) -> Tensor:
    """(P, P) covariance of the positional embeddings over the P = |spatial| positions
    (row-major): the identity when ``decay_fn`` is None, else
    decay_fn(Σ_axis |p_axis − q_axis|^p_norm) (neural-tangents' `_pos_emb_pdist`).

    Example: ``pos_emb_covariance((3,), 1, lambda d: torch.exp(-d))`` is
    [[1, e⁻¹, e⁻²], [e⁻¹, 1, e⁻¹], [e⁻², e⁻¹, 1]].
    """
    P = math.prod(spatial)
    if decay_fn is None:
        return torch.eye(P, dtype=dtype)
    grids = torch.meshgrid(*[torch.arange(s, dtype=dtype) for s in spatial], indexing="ij")
    coords = torch.stack([g.reshape(-1) for g in grids], dim=1)  # (P, d)
    dist = (coords[:, None, :] - coords[None, :, :]).abs().pow(p_norm).sum(-1)
    R = decay_fn(dist)
    if not isinstance(R, Tensor) or R.shape != (P, P):
        raise ValueError("pos_emb_decay_fn must map a tensor of distances to a tensor of the "
                         "same shape (use torch functions, e.g. lambda d: torch.exp(-d))")
    return R.to(dtype)


def _position_masks(k: Kernel, P: int) -> tuple[Tensor | None, Tensor | None]:
    """The (n, P) bool masks of absent positions of the two inputs (True: absent), read
    from the Kernel's ``mask1``/``mask2`` fields ((n, *S) bool, or None; see
    neural-tangents' ``mask_constant`` and `ntkit.layers.masking`)."""
    m1, m2 = k.mask1, k.mask2
    if m2 is None and k.x1_is_x2:
        m2 = m1
    flat = [None if m is None else m.reshape(m.shape[0], P).to(torch.bool) for m in (m1, m2)]
    return flat[0], flat[1]


class _PairMasks:
    """Zeroes the entries of position pairs with an absent position, per field:
    "11" (n1, P, P), "12" (n1, n2, P, P), "22" (n2, P, P)."""

    def __init__(self, m1: Tensor | None, m2: Tensor | None):
        self.m1, self.m2 = m1, m2

    def pairs(self, which: str) -> Tensor | None:
        if which == "11":
            m = self.m1
            return None if m is None else m[:, :, None] | m[:, None, :]
        if which == "22":
            m = self.m2
            return None if m is None else m[:, :, None] | m[:, None, :]
        if self.m1 is None and self.m2 is None:
            return None
        a = self.m1 if self.m1 is not None else torch.zeros_like(self.m2[:1]).expand(1, -1)
        b = self.m2 if self.m2 is not None else torch.zeros_like(self.m1[:1]).expand(1, -1)
        return a[:, None, :, None] | b[None, :, None, :]

    def apply(self, t: Tensor, which: str) -> Tensor:
        m = self.pairs(which)
        return t if m is None else t.masked_fill(m, 0.0)


def pair_sandwich(ga: Tensor, fields: list[Tensor], gb: Tensor) -> list[Tensor]:
    """[ga[a] · t[a, b] · gb[b]ᵀ for t in fields]: ga (n1, P, P), gb (n2, P, P), each field
    (n1, n2, P, P); the results may be non-contiguous views.

    Broadcasting ga and gb over the pairs (a, b) would copy them n2 (n1) times and run
    n1·n2 tiny products; instead the fields are laid out once as [a, j, (field, b, k)], so
    the left product is n1 wide matrix products, and the right one is n2 batched
    products over the rows (field, a, i).
    """
    n1, n2, P = fields[0].shape[0], fields[0].shape[1], fields[0].shape[-1]
    m = len(fields)
    buf = fields[0].new_empty((n1, P, m, n2, P))
    for f, t in enumerate(fields):
        buf[:, :, f].copy_(t.transpose(1, 2))
    u = torch.matmul(ga, buf.view(n1, P, m * n2 * P)).view(n1, P, m, n2, P)
    out = torch.einsum("aifbk,blk->fabil", u, gb)
    return list(out.unbind(0))


class GlobalSelfAttentionModule(nn.Module):
    """Finite attention layer, neural-tangents' ``apply_fn`` channels first: (n, C, *S) ->
    (n, n_chan_out, *S), or (n, C) -> (n, n_chan_out) (one position). All weights are
    N(0, 1), scaled in the forward pass (NTK parameterization)."""

    def __init__(self, spec: GlobalSelfAttention, channels: int, spatial: tuple[int, ...],
                 generator: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.spec, self.channels, self.spatial = spec, channels, spatial
        P = math.prod(spatial)
        s = spec
        c_keys = c_vals = channels
        self.n_pe = 0
        if s.pos_emb_type != "none":
            self.n_pe = s.pos_emb_channels(channels)
            if s.pos_emb_type == "concat":
                c_keys += self.n_pe
                if s.val_pos_emb:
                    c_vals += self.n_pe

        def randn(*shape):
            return nn.Parameter(torch.randn(*shape, generator=generator, dtype=dtype))

        self.key = randn(s.n_heads, c_keys, s.n_chan_key)
        self.query = None if s.linear_scaling else randn(s.n_heads, c_keys, s.n_chan_key)
        self.value = randn(s.n_heads, c_vals, s.n_chan_val)
        self.out = randn(s.n_chan_val * s.n_heads, s.n_chan_out)
        self.bias = None if s.b_std is None else randn(s.n_chan_out)
        self.pos_emb = randn(P, self.n_pe) if self.n_pe else None
        if self.n_pe and s.pos_emb_decay_fn is not None:
            R = pos_emb_covariance(spatial, s.pos_emb_p_norm, s.pos_emb_decay_fn, dtype)
            L, info = torch.linalg.cholesky_ex(R)
            if int(info) != 0:
                raise ValueError("pos_emb_decay_fn gives a positional covariance that is not "
                                 "positive definite, so no finite embedding has it; use a "
                                 "positive-definite decay (e.g. torch.exp(-d / l))")
            self.register_buffer("chol", L)
        else:
            self.chol = None
        self.qk = std_value(s.w_query_std) * std_value(s.w_key_std)
        self.ov = std_value(s.w_out_std) * std_value(s.w_value_std)

    def masked_forward(self, x: Tensor, mask: Tensor):
        """Masked inputs from a network's ``mask_constant`` (`ntkit.layers.masking`): no
        position attends to absent ones, and outputs at absent positions are zeroed (the
        kernel's remasking)."""
        pm = mask.all(1)
        m = pm.unsqueeze(1)
        return self(x, pm).masked_fill(m, 0.0), m

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (n, C, *S); mask: None or (n, *S) bool, True at absent positions (as
        neural-tangents' ``apply_fn(mask=...)``: their embeddings are zeroed and no
        position attends to them; outputs there are meaningless and left as computed)."""
        s = self.spec
        n = x.shape[0]
        xs = x.reshape(n, self.channels, -1).transpose(1, 2)  # (n, P, C)
        if mask is not None and tuple(mask.shape) != (n, *self.spatial):
            raise ValueError(f"mask has shape {tuple(mask.shape)}; it must be (n, *S) = "
                             f"{(n, *self.spatial)}, one bool per example and position "
                             "(True: absent)")
        m = None if mask is None else mask.reshape(n, -1).to(torch.bool)
        vals = None
        if self.pos_emb is not None:
            pe = self.pos_emb if self.chol is None else self.chol @ self.pos_emb
            pe = pe * std_value(s.w_pos_emb_std)
            if m is not None:
                pe = pe.masked_fill(m[:, :, None], 0.0)  # (n, P, Cₑ)
            vals = None if s.val_pos_emb else xs
            if s.pos_emb_type == "sum":
                xs = xs + pe
            else:
                xs = torch.cat([xs, pe.expand(n, -1, -1)], dim=-1)
        vals = xs if vals is None else vals
        keys = torch.einsum("npc,hcd->hnpd", xs, self.key)
        queries = keys if self.query is None else torch.einsum("npc,hcd->hnpd", xs, self.query)
        norm = xs.shape[-1] * s.n_chan_key ** (1.0 if s.linear_scaling else 0.5)
        g = queries @ keys.transpose(-1, -2) * (self.qk / norm)
        if m is not None:
            g = g.masked_fill(m[None, :, None, :], -1e20 if s.attention_mechanism == "softmax"
                              else 0.0)
        g = _mechanism(s.attention_mechanism, g)
        heads = g @ torch.einsum("npc,hcd->hnpd", vals, self.value)  # (h, n, P, dv)
        heads = heads.permute(1, 2, 3, 0).reshape(n, heads.shape[2], -1)
        out = heads @ self.out * (self.ov / math.sqrt(s.n_chan_val * s.n_heads * vals.shape[-1]))
        if self.bias is not None:
            out = out + std_value(s.b_std) * self.bias
        return out.transpose(1, 2).reshape(n, s.n_chan_out, *self.spatial)


class GlobalSelfAttention(Layer):
    """Multi-head self-attention over all positions, (n, C, *S) -> (n, n_chan_out, *S).

    neural-tangents' ``stax.GlobalSelfAttention`` (its argument names in snake case),
    channels first; the kernel is the limit of infinitely many heads and key/value/output
    channels (see the module docstring for the maps). Its kernel map needs the full
    position-pair covariance of its input (``requires_full``), which the engine then
    provides for the whole network before it. Masked inputs (``net.kernel(...,
    mask_constant=c)``, `ntkit.layers.masking`): no position attends to an absent one,
    and covariances at absent positions are 0 (a fully masked example gives 0).

    Args:
      n_chan_out, n_chan_key, n_chan_val, n_heads: widths of the finite network (>= 1).
      linear_scaling: True: keys and queries tied, logits scaled by 1/n_chan_key (closed
        forms for every mechanism); False: independent queries, 1/√n_chan_key (the
        finite network works for every mechanism, the kernel only for "identity").
      w_key_std, w_value_std, w_query_std, w_out_std: weight stds (>= 0); the kernel
        depends on w_query_std·w_key_std and w_out_std·w_value_std.
      b_std: bias std, or None for no bias.
      attention_mechanism: "softmax", "identity", "abs" or "relu" (applied to the logits).
      pos_emb_type: "none", "sum" (added to the inputs) or "concat" (appended channels).
      pos_emb_p_norm: p of the distance Σ|Δ|^p that ``pos_emb_decay_fn`` receives.
      pos_emb_decay_fn: torch function of the distance tensor giving the embeddings'
        covariance (e.g. ``lambda d: torch.exp(-d / 4)``); None: independent positions.
      n_chan_pos_emb: embedding channels (None: as many as the input; with "sum" it must
        be None or equal the input channels).
      w_pos_emb_std: embedding std.
      val_pos_emb: also feed the embeddings to the values (not only keys and queries).

    Example:
      >>> import torch, ntkit.layers as nl
      >>> net = nl.serial(nl.Conv(8, (3,), padding="SAME"),
      ...                 nl.GlobalSelfAttention(8, 8, 8, n_heads=2), nl.ReLU(),
      ...                 nl.GlobalAvgPool(), nl.Dense(1))
      >>> net.kernel(torch.randn(5, 3, 7, dtype=torch.float64), get="ntk").shape
      torch.Size([5, 5])
    """

    def __init__(self, n_chan_out: int, n_chan_key: int, n_chan_val: int, n_heads: int,
                 linear_scaling: bool = True, w_key_std: float = 1.0, w_value_std: float = 1.0,
                 w_query_std: float = 1.0, w_out_std: float = 1.0, b_std: float | None = None,
                 attention_mechanism: str = "softmax", pos_emb_type: str = "none",
                 pos_emb_p_norm: float = 2, pos_emb_decay_fn: Callable | None = None,
                 n_chan_pos_emb: int | None = None, w_pos_emb_std: float = 1.0,
                 val_pos_emb: bool = False):
        self.n_chan_out = _positive_int("n_chan_out", n_chan_out)
        self.n_chan_key = _positive_int("n_chan_key", n_chan_key)
        self.n_chan_val = _positive_int("n_chan_val", n_chan_val)
        self.n_heads = _positive_int("n_heads", n_heads)
        if not isinstance(linear_scaling, bool):
            raise TypeError(f"linear_scaling must be a bool, got {linear_scaling!r}")
        self.linear_scaling = linear_scaling
        self.w_key_std = check_std("w_key_std", w_key_std)
        self.w_value_std = check_std("w_value_std", w_value_std)
        self.w_query_std = check_std("w_query_std", w_query_std)
        self.w_out_std = check_std("w_out_std", w_out_std)
        self.b_std = check_std("b_std", b_std, allow_none=True)
        mech = attention_mechanism.lower() if isinstance(attention_mechanism, str) else None
        if mech not in MECHANISMS:
            raise ValueError(f"unknown attention_mechanism {attention_mechanism!r}; expected "
                             f"one of {MECHANISMS}")
        self.attention_mechanism = mech
        pe = pos_emb_type.lower() if isinstance(pos_emb_type, str) else None
        if pe not in POS_EMB_TYPES:
            raise ValueError(f"unknown pos_emb_type {pos_emb_type!r}; expected one of "
                             f"{POS_EMB_TYPES}")
        self.pos_emb_type = pe
        if isinstance(pos_emb_p_norm, bool) or not isinstance(pos_emb_p_norm, (int, float)) \
                or not pos_emb_p_norm > 0:
            raise ValueError(f"pos_emb_p_norm must be a positive number, got {pos_emb_p_norm!r}")
        self.pos_emb_p_norm = float(pos_emb_p_norm)
        if pos_emb_decay_fn is not None and not callable(pos_emb_decay_fn):
            raise TypeError("pos_emb_decay_fn must be None or a function of a distance tensor")
        self.pos_emb_decay_fn = pos_emb_decay_fn
        if n_chan_pos_emb is not None:
            _positive_int("n_chan_pos_emb", n_chan_pos_emb)
        self.n_chan_pos_emb = n_chan_pos_emb
        self.w_pos_emb_std = check_std("w_pos_emb_std", w_pos_emb_std)
        self.val_pos_emb = bool(val_pos_emb)

    def pos_emb_channels(self, channels: int) -> int:
        """Embedding channels for an input with ``channels`` channels."""
        if self.n_chan_pos_emb is None:
            return channels
        if self.pos_emb_type == "sum" and self.n_chan_pos_emb != channels:
            raise ValueError(f"pos_emb_type='sum' adds the embeddings to the inputs, so "
                             f"n_chan_pos_emb must be None or the input channel count "
                             f"{channels}, got {self.n_chan_pos_emb}")
        return self.n_chan_pos_emb

    def requires_full(self, full_after):
        return Storage(full=True)

    # ---- kernel map ------------------------------------------------------------------

    def _weights(self, channels: int) -> tuple[float, float]:
        """(input weight a, embedding weight c) of the interpolation K̃ = a·K + c·R."""
        pw = self.w_pos_emb_std**2
        if self.pos_emb_type != "none":
            self.pos_emb_channels(channels)  # refuses a "sum" width mismatch
        if self.pos_emb_type != "concat":
            return 1.0, pw
        ce = self.pos_emb_channels(channels)
        return channels / (channels + ce), pw * ce / (channels + ce)

    def kernel_map(self, k: Kernel) -> Kernel:
        if isinstance(k, tuple):
            raise ValueError(f"GlobalSelfAttention got {len(k)} parallel branches; combine "
                             "them first with FanInSum() or FanInConcat()")
        if k.is_spatial and not k.full:
            raise ValueError("GlobalSelfAttention needs the full position-pair covariances of "
                             "its input (full=True storage), got only their diagonal (as in "
                             "neural-tangents, which refuses diagonal_spatial inputs)")
        if not self.linear_scaling and self.attention_mechanism != "identity":
            raise ValueError(
                f"no closed-form kernel for linear_scaling=False with attention_mechanism="
                f"{self.attention_mechanism!r} (neural-tangents has none either): use "
                "linear_scaling=True, or the 'identity' mechanism")
        n1, n2 = k.nngp.shape[:2]
        S = k.spatial
        P = math.prod(S)
        cov1, cov2 = self._own_covariances(k)
        sq = (P, P)
        nngp = k.nngp.reshape(n1, n2, *sq)
        ntk = None if k.ntk is None else k.ntk.reshape(n1, n2, *sq)
        c1 = cov1.reshape(cov1.shape[0], *sq)
        c2 = None if cov2 is None else cov2.reshape(cov2.shape[0], *sq)
        a, c = self._weights(k.channels)
        m1, m2 = _position_masks(k, P)
        pair = _PairMasks(m1, m2)
        R = None
        if self.pos_emb_type != "none":
            R = pos_emb_covariance(S, self.pos_emb_p_norm, self.pos_emb_decay_fn,
                                   k.nngp.dtype).to(k.nngp.device)

        def interp(t, which):
            # K̃ = a·K + c·R, R zeroed at pairs with a masked position (neural-tangents
            # masks the embedding covariance as it masks the inputs).
            if t is None or R is None:
                return t
            return a * t + c * pair.apply(R.expand(t.shape), which)

        if self.linear_scaling:
            out = self._linear(interp, c1, c2, nngp, ntk, pair)
        else:
            out = self._sqrt_identity(interp, c1, c2, nngp, ntk)
        nngp_o, ntk_o, fn_cov = out
        shape = (n1, n2, *S, *S) if S else (n1, n2)
        # Outputs at masked positions are absent: their covariances are 0 (the remasking
        # of neural-tangents; a fully masked example gives exactly 0).
        nngp_o = pair.apply(nngp_o, "12").reshape(shape)
        ntk_o = None if ntk_o is None else pair.apply(ntk_o, "12").reshape(shape)

        def cov_map(t, side):
            which = "11" if side == 1 or c2 is None else "22"
            return pair.apply(fn_cov(t, side).reshape(-1, P, P), which).reshape(
                self._cov_shape(k, t))

        cov1_o, cov2_o = k.map_covs(lambda t: cov_map(t, 1), nngp_o,
                                    fn2=lambda t: cov_map(t, 2))
        return k.fresh_affine(self.n_chan_out, nngp=nngp_o, ntk=ntk_o, cov1=cov1_o,
                              cov2=cov2_o)

    def _own_covariances(self, k: Kernel) -> tuple[Tensor, Tensor | None]:
        """Each example's full (n, *S, *S) covariance of this layer's input.

        Under a `CovTrace` the engine replays per-position variances into its tiles, and
        this layer needs the whole matrices (they set the attention weights): when the
        trace records, the layer appends its input's full covariances as one extra step
        (so the engine's memory pricing of the trace counts them), and when it replays,
        it reads them back from that step.
        """
        tr = k.trace
        if tr is None:
            return k.cov1, k.cov2
        if tr.replaying:
            rows, cols = tr.next()
            return rows, cols
        tr.steps.append(k.cov1.detach().clone())
        return k.cov1, k.cov2

    def _linear(self, interp, c1, c2, nngp, ntk, pair):
        mech = self.attention_mechanism
        qk = self.w_query_std * self.w_key_std
        ov2 = (self.w_out_std * self.w_value_std) ** 2
        b2 = 0.0 if self.b_std is None else self.b_std**2

        def weights(cov, m):
            g = qk * cov
            if m is not None:
                # Masked keys: no attention (a -1e20 logit, neural-tangents' constant, so a
                # fully masked example attends uniformly instead of 0/0; its output is
                # masked anyway); for the other mechanisms a zero weight.
                fill = -1e20 if mech == "softmax" else 0.0
                g = g.masked_fill(m[:, None, :], fill)
            return _mechanism(mech, g)

        G1 = weights(interp(c1, "11"), pair.m1)
        G2 = G1 if c2 is None else weights(interp(c2, "22"), pair.m2)

        def vals(t, which):
            return interp(t, which) if self.val_pos_emb else t

        def sandwich(ga, t, gb):  # ga t gbᵀ over positions, batched
            return ga @ t @ gb.transpose(-1, -2)

        # ntk' = ov2·G₁(Θ + 2V)G₂ᵀ + b² = S(Θ) + 2·S(V) + b² with S = ov2·G₁(·)G₂ᵀ: both
        # sandwiches in one pass (ov2 folded into G₂).
        fields = [vals(nngp, "12")] + ([] if ntk is None else [vals(ntk, "12")])
        s_v, *s_t = pair_sandwich(G1, fields, G2 if ov2 == 1.0 else ov2 * G2)
        # Contiguous copies, then in-place updates (out= would refuse autograd).
        nngp_o = s_v.clone(memory_format=torch.contiguous_format).add_(b2)
        ntk_o = None
        if ntk is not None:
            ntk_o = s_t[0].clone(memory_format=torch.contiguous_format)
            ntk_o.add_(s_v, alpha=2).add_(b2)

        def fn_cov(t, side):
            G, which = (G1, "11") if side == 1 or c2 is None else (G2, "22")
            return ov2 * sandwich(G, vals(t.reshape(G.shape), which), G) + b2

        return nngp_o, ntk_o, fn_cov

    def _sqrt_identity(self, interp, c1, c2, nngp, ntk):
        """neural-tangents' square-root-scaling identity kernel (its formula verbatim):
        with ⟨A, B⟩ the sum over all position pairs and std = w_q·w_k·w_o·w_v,
        dot12 = ⟨K̃, V⟩ (V = K̃ if val_pos_emb else K), nngp' = std²·dot12·K̃ + b², and
        ntk' = std²·(Θ·K̃ + dot12·(Θ̃ + 4K̃)) + b² with Θ = 2⟨K̃, Θ̃⟩ (val_pos_emb or no
        embedding) or ⟨K̃, Θ⟩ + ⟨K, Θ̃⟩ (otherwise)."""
        std2 = (self.w_query_std * self.w_key_std * self.w_out_std * self.w_value_std) ** 2
        b2 = 0.0 if self.b_std is None else self.b_std**2
        def vals(t, which):
            return interp(t, which) if self.val_pos_emb else t

        def dot(a, b):
            return (a * b).sum((-2, -1), keepdim=True)

        n_i = interp(nngp, "12")
        dot12 = dot(n_i, vals(nngp, "12"))
        nngp_o = std2 * dot12 * n_i + b2
        ntk_o = None
        if ntk is not None:
            t_i = interp(ntk, "12")
            if self.val_pos_emb or self.pos_emb_type == "none":
                th = 2 * dot(n_i, t_i)
            else:
                th = dot(n_i, ntk) + dot(nngp, t_i)
            ntk_o = std2 * (th * n_i + dot12 * (t_i + 4 * n_i)) + b2

        def fn_cov(t, side):
            P = nngp.shape[-1]
            which = "11" if side == 1 or c2 is None else "22"
            t = t.reshape(t.shape[0], P, P)
            t_i = interp(t, which)
            return std2 * dot(t_i, vals(t, which)) * t_i + b2

        return nngp_o, ntk_o, fn_cov

    @staticmethod
    def _cov_shape(k: Kernel, t: Tensor) -> tuple[int, ...]:
        S = k.spatial
        return (t.shape[0], *S, *S) if S else (t.shape[0],)

    def make_module(self, in_features, generator, dtype):
        if is_streams(in_features):
            raise ValueError("GlobalSelfAttention got parallel branches; combine them first "
                             "with FanInSum() or FanInConcat()")
        if isinstance(in_features, ExampleShape):
            channels, spatial = in_features.channels, in_features.spatial
            width = ExampleShape((self.n_chan_out, *spatial))
        else:
            channels, spatial, width = in_features, (), self.n_chan_out
        return GlobalSelfAttentionModule(self, channels, spatial, generator, dtype), width

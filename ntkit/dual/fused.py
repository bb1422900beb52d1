"""Fused elementwise duals: each dual's elementwise chain in one loop, on by default.

Eagerly, a dual such as ReLU's makes about a dozen passes over a (tile, tile) array (or
(H·W)² per example pair on full spatial storage). Fused, it is one pass per entry.

Backends (`set_backend`):

- None (default): `ntkit.dual.native`, C kernels for the float64 closed-form duals on
  the CPU (ReLU, LeakyReLU/|x| family, sign, erf, GELU, exp, Gaussian, sin, RBF), built
  once with the system C compiler (about a second with an empty cache; a one-line
  message says so) and loaded from disk in later processes. One library serves every
  activation, n, depth and network: nothing is compiled again. Other duals, float32 and
  GPUs run eagerly.
- "inductor" (``NTKIT_FUSED=inductor``), another ``torch.compile`` backend name, or a
  callable backend: each dual's eager chain through ``torch.compile`` with dynamic
  shapes, keyed by activation (and its constants), dtype, device type, ``need_dot`` and
  the broadcast pattern of (var1, cov, var2) (so a new n, tile, depth or network reuses
  it; `stats` counts compilations). It covers every dtype and device torch compiles for,
  but a cold compile costs 13-35 s per activation family on a 2-core CPU, and a warm
  cache's first call seconds.

On/off: on by default. ``NTKIT_FUSED=0`` in the environment, or ``net.kernel(...,
compile=False)``, turns it off; `enabled` turns it on or off for a block (the engine
wraps each kernel evaluation in it, from ``net.kernel(..., compile=...)``). It only
applies to tiles of at least ``min_numel`` entries, outside autograd (the out-of-place
autograd path of each dual runs eagerly, so kernel gradients are unchanged) and outside
another ``torch.compile`` trace (the whole-network mode traces the eager chain itself).

Fallback: if the build or a compilation fails (no C compiler, no libmvec, old torch,
any error), a warning is issued once and the duals run eagerly from then on; values are
the same either way (to an ulp of atan2/exp; exact diagonals stay exact).

On-disk caches: `ntkit.dual.native.cache_dir` for the C library; for inductor, its FX
graph cache in a directory keyed by the torch version, the CPU capability ATen
dispatches to (``torch.backends.cpu.get_cpu_capability()``, which
``ATEN_CPU_CAPABILITY`` changes) and the CPU's ISA flags: code generated for AVX-512 is
never reused under AVX2 (a shared ``/tmp/torchinductor_*`` did exactly that and returned
wrong values). `cache_dir` gives the directory; ``NTKIT_CACHE_DIR`` moves the base of
both.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

import ntkit.dual.native as native

__all__ = ["MIN_NUMEL", "MIN_NUMEL_COMPILED", "cache_dir", "enabled", "is_enabled",
           "parse_environment", "run", "run_dense", "set_backend", "set_min_numel", "stats",
           "wants"]

MIN_NUMEL = 1
"""Default smallest fused tile (entries of cov) with the C kernels: every call. A C call
costs tens of microseconds of Python, an eager dual's dozen torch calls more; and one
implementation for every tile size keeps identical example pairs bitwise equal to the
example diagonal whatever tile they fall in (the C loops and ATen's portable kernels
round exp/erf differently by an ulp)."""
MIN_NUMEL_COMPILED = 1 << 16
"""The same with a ``torch.compile`` backend (256 × 256): small shapes would only add
compilations."""


def parse_environment(value: str | None) -> tuple[bool, str | None]:
    """(on, backend) for a value of ``NTKIT_FUSED``: unset, "1", "on", ...: on with the
    default backend; "0", "false", "off", "no": off; "inductor": on with
    ``torch.compile``. Read once, at import. Example: ``parse_environment("0")`` is
    ``(False, None)``."""
    v = "1" if value is None else value.strip().lower()
    return v not in ("0", "false", "off", "no"), ("inductor" if v == "inductor" else None)


_ENV = parse_environment(os.environ.get("NTKIT_FUSED"))
_STATE = {"on": _ENV[0], "min_numel": MIN_NUMEL, "backend": _ENV[1],
          "warned": False, "announced": False, "cache_set": False, "native_failed": False}
_STATS = {"compiles": 0, "calls": 0, "fallbacks": 0}
_KERNELS: dict = {}  # key -> compiled function, or None after a failure
_LOCK = threading.Lock()
_LOCAL = threading.local()
_USER_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # as the user set it, at import


def is_enabled() -> bool:
    """True when duals fuse their elementwise work in this thread (see the module
    docstring): the innermost `enabled` block of this thread, else ``NTKIT_FUSED``."""
    on = getattr(_LOCAL, "on", None)
    return bool(_STATE["on"] if on is None else on)


@contextlib.contextmanager
def enabled(on: bool | None = True, *, min_numel: int | None = None) -> Iterator[None]:
    """Turn fusion on or off (None: the process default) in this thread for a block.

    ``min_numel`` sets the smallest fused tile (entries of cov) in the block. Thread-local,
    so concurrent kernel evaluations with different settings do not interfere (the
    engine enters it in each tile's thread). Example::

        with ntkit.dual.fused.enabled(False):
            t, tdot = relu_dual(var1, cov, var2, True)   # eager
    """
    old = (getattr(_LOCAL, "on", None), getattr(_LOCAL, "min_numel", None))
    _LOCAL.on = old[0] if on is None else bool(on)
    if min_numel is not None:
        _LOCAL.min_numel = int(min_numel)
    try:
        yield
    finally:
        _LOCAL.on, _LOCAL.min_numel = old


def set_backend(backend: Callable | str | None) -> Callable | str | None:
    """Use ``backend`` for new kernels; returns the previous one.

    None: the C kernels of `ntkit.dual.native` (the default); a string or a callable:
    ``torch.compile`` with that backend ("inductor", or a backend that raises to
    simulate a failed compilation in tests). Already compiled kernels are dropped, a
    failed C build is tried again, and a failure warns again.
    """
    with _LOCK:
        old = _STATE["backend"]
        _STATE["backend"] = backend
        _STATE["native_failed"] = _STATE["warned"] = False  # the new backend warns anew
        _KERNELS.clear()
    return old


def set_min_numel(numel: int | None) -> int | None:
    """Set the process-wide smallest fused tile (entries of cov; None: the backend's
    default, `MIN_NUMEL` or `MIN_NUMEL_COMPILED`); returns the previous setting."""
    if numel is not None and (isinstance(numel, bool) or not isinstance(numel, int)
                              or numel < 0):
        raise ValueError(f"numel must be an int >= 0 or None, got {numel!r}")
    old, _STATE["min_numel"] = _STATE["min_numel"], numel
    return old


def stats() -> dict:
    """Counts since import: ``compiles`` (C library builds and graphs handed to
    ``torch.compile``), ``calls`` (fused calls), ``fallbacks`` (kernels that failed to
    build or compile and run eagerly), and the on-disk caches' ``cache_hits`` (C library
    loaded, FX graphs loaded) / ``cache_misses`` (C library built, FX graphs compiled)."""
    out = dict(_STATS)
    built = native.stats()
    out["compiles"] += built["builds"]
    out["cache_hits"], out["cache_misses"] = built["loads"], built["builds"]
    if "torch._dynamo" in sys.modules:  # inductor's counters, without importing dynamo
        counters = sys.modules["torch._dynamo"].utils.counters["inductor"]
        out["cache_hits"] += int(counters["fxgraph_cache_hit"])
        out["cache_misses"] += int(counters["fxgraph_cache_miss"])
    return out


def _isa_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cache_dir(capability: str | None = None) -> str:
    """The inductor cache directory for this torch, CPU capability and ISA.

    Args:
      capability: ATen's CPU capability (default: the current one, e.g. "AVX512").

    Example: ``cache_dir("AVX2") != cache_dir("AVX512")``.
    """
    cap = capability if capability is not None else torch.backends.cpu.get_cpu_capability()
    ident = "|".join((torch.__version__, str(cap).upper(), platform.machine(), _isa_flags(),
                      f"py{sys.version_info[0]}.{sys.version_info[1]}"))
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    base = os.environ.get("NTKIT_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "ntkit")
    return os.path.join(base, f"inductor-{key}")


def _use_cache_dir() -> None:
    # Process-wide: inductor reads TORCHINDUCTOR_CACHE_DIR when it compiles. A directory
    # the user chose is kept, but still keyed (a subdirectory per capability and ISA).
    if _STATE["cache_set"]:
        return
    user = _USER_CACHE  # torch sets its own default in the environment once it loads
    path = cache_dir()
    if user and not os.path.basename(user.rstrip("/")).startswith("inductor-"):
        path = os.path.join(user, os.path.basename(path))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    _STATE["cache_set"] = True


def _is_compiling() -> bool:
    fn = getattr(torch.compiler, "is_compiling", None)
    return bool(fn()) if fn is not None else False


def wants(*tensors: Tensor) -> bool:
    """True when a dual should send these inputs through `run`: fusion is on, the
    broadcast result has at least ``min_numel`` entries, nothing needs grad, and no
    other trace is running."""
    if not is_enabled() or _is_compiling():
        return False
    if not all(isinstance(t, Tensor) for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    shape = native.broadcast_shape(*(t.shape for t in tensors))
    if shape is None:
        return False  # the eager chain raises torch's error
    numel = 1
    for size in shape:
        numel *= size
    least = getattr(_LOCAL, "min_numel", None)
    if least is None:
        least = _STATE["min_numel"]
    if least is None:
        least = MIN_NUMEL if _STATE["backend"] is None else MIN_NUMEL_COMPILED
    return numel >= least


def _backend(gm, example_inputs):
    _STATS["compiles"] += 1
    backend = _STATE["backend"]
    if backend is None:
        from torch._inductor.compile_fx import compile_fx  # heavy; only when compiling

        return compile_fx(gm, example_inputs)
    if isinstance(backend, str):
        from torch._dynamo import lookup_backend  # only when a named backend is asked for

        return lookup_backend(backend)(gm, example_inputs)
    return backend(gm, example_inputs)


def _own_code(fn):
    # dynamo keeps its cache and recompile limit per code object: one per kernel key.
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                              fn.__defaults__, fn.__closure__)


def run(key: tuple, fn: Callable, *tensors: Tensor):
    """``fn(*tensors)`` through the compiled kernel for ``key`` (eager if it failed).

    ``key`` names the activation and every Python constant ``fn`` closes over (e.g.
    ``("abrelu", a, b, need_dot)``); dtype, device type and broadcast pattern are added
    here. ``fn`` must be the dual's plain eager chain (it is also the fallback).
    """
    # Views would make dynamo guard on their bases' sizes (e.g. var1 = v[:, None] and
    # var2 = w[None, :] guard len(v) == len(w)): pass owned tensors (var1 and var2 are
    # vectors; cov is normally a fresh tensor already).
    if _STATE["backend"] is None:
        out = _run_native(key, tensors)
        return fn(*tensors) if out is None else out
    tensors = tuple(t.clone() if t._base is not None else t for t in tensors)
    full_key = key + tuple((t.dtype, t.device.type, tuple(s == 1 for s in t.shape))
                           for t in tensors)
    cfn = _KERNELS.get(full_key, False)
    if cfn is None:
        return fn(*tensors)
    if cfn is False:
        with _LOCK:  # one thread compiles; the others wait for the kernel
            cfn = _KERNELS.get(full_key, False)
            if cfn is False:
                return _first_call(full_key, fn, tensors)
    if cfn is None:
        return fn(*tensors)
    _STATS["calls"] += 1
    return cfn(*tensors)


def _announce(where: str) -> None:
    if not _STATE["announced"]:
        _STATE["announced"] = True
        print(f"ntkit: compiling fused dual kernels (one time; cached in {where}; "
              "compile=False or NTKIT_FUSED=0 turns this off)", file=sys.stderr)


def _warn_fallback(exc: Exception) -> None:
    _STATS["fallbacks"] += 1
    if not _STATE["warned"]:
        _STATE["warned"] = True
        warnings.warn(f"ntkit: compiling a fused dual failed ({type(exc).__name__}: "
                      f"{exc}); using eager duals (same values, slower)", RuntimeWarning,
                      stacklevel=4)


def _run_native(key: tuple, tensors):
    """The C kernel's (T, Tdot), or None: no kernel for this dual or layout, or the
    library failed to build (warned once)."""
    if (_STATE["native_failed"] or len(tensors) != 3 or not native.handles(key, *tensors)
            or not _native_library()):
        return None
    out = native.run(key, *tensors)
    if out is not None:
        _STATS["calls"] += 1
    return out


def _native_library() -> bool:
    """Whether the C library is loaded (built first if its cache is empty); a failed
    build warns once and turns the C kernels off for the process."""
    try:
        native.library(announce=_announce)
    except Exception as exc:  # compilation is an optimization, never a requirement
        if not _STATE["native_failed"]:
            _STATE["native_failed"] = True
            _warn_fallback(exc)
        return False
    return True


def run_dense(key: tuple, var1: Tensor, cov: Tensor, var2: Tensor, ntk: Tensor | None,
              affine: tuple[float, float, bool, float, float]):
    """A Dense layer and the dual ``key`` after it in one C pass
    (`ntkit.dual.native.run_dense`: arguments and result there), or None when fusion is
    off in this thread, the backend is not the C one, something needs grad, another trace
    runs, the dual or layout has no C kernel, or the library failed to build (warned
    once); the caller then maps the two layers one after the other."""
    tensors = (var1, cov, var2) if ntk is None else (var1, cov, var2, ntk)
    if (_STATE["backend"] is not None or _STATE["native_failed"] or cov.dim() != 2
            or not wants(var1.unsqueeze(1), cov, var2.unsqueeze(0))):
        return None
    if ntk is not None and torch.is_grad_enabled() and ntk.requires_grad:
        return None
    if not native.handles(key, *tensors) or not _native_library():
        return None
    out = native.run_dense(key, var1, cov, var2, ntk, affine)
    if out is not None:
        _STATS["calls"] += 1
    return out


def _trace_config():
    # Dynamic shapes give equal sizes one symbol ("duck shaping"): a square first tile
    # would then guard n1 == n2 and recompile for the first rectangular one.
    try:
        from torch.fx.experimental import _config as fx_config  # only when compiling
    except ImportError:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    if hasattr(fx_config, "use_duck_shape"):
        stack.enter_context(fx_config.patch(use_duck_shape=False))
    # The activation's constants (a, b, ...) are part of the kernel's key: trace them as
    # numbers, not symbolic floats (dynamic=True would make them inputs).
    dynamo_config = sys.modules["torch._dynamo"].config
    if hasattr(dynamo_config, "specialize_float"):
        stack.enter_context(dynamo_config.patch(specialize_float=True))
    return stack


def _first_call(full_key, fn, tensors):
    _use_cache_dir()
    _announce(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    try:
        cfn = torch.compile(_own_code(fn), dynamic=True, backend=_backend)
        with _trace_config():
            out = cfn(*tensors)
    except Exception as exc:  # compilation is an optimization, never a requirement
        _KERNELS[full_key] = None
        _warn_fallback(exc)
        return fn(*tensors)
    _KERNELS[full_key] = cfn
    _STATS["calls"] += 1
    return out

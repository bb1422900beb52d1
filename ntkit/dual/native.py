"""Fused float64 duals in C: one vectorized pass per dual, built once with the system
compiler and loaded with ctypes (the default backend of `ntkit.dual.fused`).

The C source (``native_src.c`` beside this file) repeats each dual's eager chain
operation by operation, so the values match eager to an ulp of atan2/exp (glibc's
vector math library, libmvec, against ATen's) and exact diagonals stay bitwise exact.
It includes no torch header: the build takes about 1.5 s of CPU, against 13-35 s for one
inductor kernel, and it needs only a C compiler and glibc ≥ 2.35 on x86-64 (libmvec's
atan2). Without them (or on any build error) `library` raises and `ntkit.dual.fused`
warns once and runs eagerly.

Covered (float64, CPU): ReLU, the a·min(x,0) + b·max(x,0) family (LeakyReLU, |x|, with
the zero-variance rule), sign, erf, GELU, exp, the Gaussian a·exp(b x²), sin/cos and the
RBF activation. Others (ReLU^n, polynomials, quadrature, float32, GPUs) run eagerly.

The library is cached in ``cache_dir()``, keyed by the source, the flags and the CPU's
ISA (it is built with ``-march=native``), so a second process only loads it.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["FAMILIES", "broadcast_shape", "cache_dir", "elementwise_floor", "handles",
           "library", "run", "run_dense", "set_compiler", "stats", "transpose_into", "within"]

SOURCE = Path(__file__).with_name("native_src.c")
FLAGS = ("-O2", "-march=native", "-fopenmp-simd", "-ffp-contract=off", "-fno-math-errno",
         "-fPIC", "-shared")
LIBS = ("-lmvec", "-lm")
NPARAM = 8  # NPARAM in native_src.c
_TWO_PI = 2.0 * math.pi

FAMILIES = ("relu", "abrelu", "sign", "erf", "gelu", "exp", "gaussian", "sin", "rbf")
"""The first element of the `ntkit.dual.fused.run` keys that have a C kernel."""

_STATE: dict = {"lib": None, "compiler": os.environ.get("CC") or "cc", "pool": None,
          "pool_size": 0}
_STATS = {"builds": 0, "loads": 0, "build_s": 0.0}
_LOCK = threading.Lock()


def stats() -> dict:
    """``builds`` (compiler runs), ``loads`` (libraries loaded from the cache) and
    ``build_s`` (seconds spent compiling) in this process."""
    return dict(_STATS)


def set_compiler(cc: str) -> str:
    """Use the C compiler ``cc`` (default ``$CC`` or ``cc``) for the next build; drops the
    loaded library (a later call builds or loads it again). Returns the previous one."""
    with _LOCK:
        old, _STATE["compiler"] = _STATE["compiler"], cc
        _STATE["lib"] = None
    return old


def _cpu_id() -> str:
    keys = ("flags", "Features", "model name")
    found = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(keys):
                    found.append(line.split(":", 1)[1].strip())
                    if len(found) == 2:
                        break
    except OSError:
        pass
    return "|".join(found) or platform.processor()


def cache_dir() -> str:
    """The directory of the built library: ``$NTKIT_CACHE_DIR`` (default
    ``~/.cache/ntkit``) / ``native-<key>``, the key hashing the C source, the flags and
    the CPU (a library built with ``-march=native`` is never loaded on another ISA)."""
    ident = b"|".join((SOURCE.read_bytes(), " ".join(FLAGS + LIBS).encode(),
                       platform.machine().encode(), _cpu_id().encode()))
    base = os.environ.get("NTKIT_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "ntkit")
    return os.path.join(base, "native-" + hashlib.sha256(ident).hexdigest()[:16])


def _declare(lib) -> None:
    L, P, I = ctypes.c_long, ctypes.c_void_p, ctypes.c_int  # noqa: N806
    for name in FAMILIES:
        fn = getattr(lib, f"ntkit_{name}")
        fn.restype = None
        fn.argtypes = [L, L, P, P, P, P, P, P, P, I, L, L]
        fn = getattr(lib, f"ntkit_dense_{name}")
        fn.restype = None
        fn.argtypes = [L, P, P, P, P, L, P, P, P, I, P, L, L]
    lib.ntkit_floor.restype = None
    lib.ntkit_floor.argtypes = [L, P, P, P]
    lib.ntkit_allpos.restype = I
    lib.ntkit_allpos.argtypes = [L, P, L]
    lib.ntkit_transpose.restype = None
    lib.ntkit_transpose.argtypes = [L, L, P, L, P, L]
    lib.ntkit_within.restype = I
    lib.ntkit_within.argtypes = [L, P, L, ctypes.c_double, ctypes.c_double]


def library(announce=None):
    """The loaded C library, building it first if the cache has none.

    ``announce(path)`` is called before a build (the one-line message). Raises
    RuntimeError (with the compiler's message) if it cannot be built or loaded.
    """
    lib = _STATE["lib"]
    if lib is not None:
        return lib
    with _LOCK:
        if _STATE["lib"] is not None:
            return _STATE["lib"]
        if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
            raise RuntimeError(f"no fused C duals for {sys.platform}/{platform.machine()} "
                               "(they need glibc's x86-64 vector math library)")
        folder = cache_dir()
        path = os.path.join(folder, "duals.so")
        if not os.path.exists(path):
            if announce is not None:
                announce(folder)
            _build(folder, path)
        else:
            _STATS["loads"] += 1
        try:
            lib = ctypes.CDLL(path)
            _declare(lib)
        except (OSError, AttributeError) as exc:
            raise RuntimeError(f"loading {path} failed: {exc}") from exc
        _STATE["lib"] = lib
        return lib


def _build(folder: str, path: str) -> None:
    os.makedirs(folder, exist_ok=True)
    # Build beside the target and rename: concurrent processes never load half a file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    cmd = [_STATE["compiler"], *FLAGS, str(SOURCE), "-o", tmp, *LIBS]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        os.unlink(tmp)
        raise RuntimeError(f"running the C compiler failed: {exc}") from exc
    _STATS["builds"] += 1
    _STATS["build_s"] += time.perf_counter() - start
    if proc.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    os.replace(tmp, path)


_LONGS = ctypes.c_long * 9
_DOUBLES = ctypes.c_double * NPARAM
_PARAMS: dict = {}  # key -> (C name, constants as a ctypes array, need_dot)


def _cached_params(key: tuple):
    got = _PARAMS.get(key)
    if got is None:
        name, prm, need_dot = _params(key)
        got = _PARAMS[key] = (name, _DOUBLES(*prm, *[0.0] * (NPARAM - len(prm))), need_dot)
    return got


def _params(key: tuple) -> tuple[str, list[float], bool] | None:
    """(C name, constants, need_dot) for a dual's key, computed as its eager code does."""
    fam = key[0]
    if fam == "relu":
        return "relu", [1 / _TWO_PI], key[1]
    if fam == "abrelu":
        a, b, need_dot, d0 = key[1:5]
        mean = (a + b) / 2
        rule = d0 is not None and (d0 * mean != a * b or d0**2 != a * b)
        return "abrelu", [(a - b) ** 2 / _TWO_PI, (a * a + b * b) / 2, float(rule), mean,
                          float(d0 or 0.0)], need_dot
    if fam == "sign":
        return "sign", [2 / math.pi], key[1]
    if fam == "erf":
        a, b, c, need_dot = key[1:5]
        b2 = b * b
        return "erf", [4 * b2 * b2, 2 * b2, a * a * 2 / math.pi, c * c, float(bool(c)),
                       a * a * 4 * b2 / math.pi], need_dot
    if fam == "gelu":
        return "gelu", [2 * math.pi], key[1]
    if fam == "exp":
        a, b, need_dot = key[1:4]
        return "exp", [a * a, 0.5 * b * b, b * b], need_dot
    if fam == "gaussian":
        a, b, need_dot = key[1:4]
        if a == 0:
            return None  # zeros: eager needs no transcendental
        return "gaussian", [a * a, 2 * b, 4 * b * b, 4 * a * a * b * b, float(b > 0)], need_dot
    if fam == "sin":
        a, b, c, need_dot = key[1:5]
        b2 = b * b
        return "sin", [-0.5 * b2, math.cos(2 * c), 0.5 * a * a, 0.5 * a * a * b2], need_dot
    if fam == "rbf":
        gamma, need_dot = key[1:3]
        return "rbf", [-gamma, 2 * gamma], need_dot
    return None


def handles(key: tuple, *tensors: Tensor) -> bool:
    """True when a C kernel computes this dual on these (var1, cov, var2)."""
    return (key[0] in FAMILIES and all(t.dtype == torch.float64 and t.device.type == "cpu"
                                       for t in tensors)
            and _params(key) is not None)


def broadcast_shape(*shapes) -> tuple[int, ...] | None:
    """The broadcast of ``shapes``, or None if they do not broadcast; a plain-Python
    `torch.broadcast_shapes` (that one costs tens of microseconds per call, and this
    runs for every dual of every tile)."""
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for s in shapes:
        off = ndim - len(s)
        for k, size in enumerate(s):
            cur = out[off + k]
            if size != cur:
                if cur == 1:
                    out[off + k] = size
                elif size != 1:
                    return None
    return tuple(out)


def _layout(shape, tensors):
    """Coalesced (sizes, strides per tensor), innermost last; None if over 3 dims."""
    strides = []
    for t in tensors:  # the strides of t.expand(shape), without building the view
        off = len(shape) - t.dim()
        tsh, tst = t.shape, t.stride()
        strides.append([0 if k < off or tsh[k - off] == 1 else tst[k - off]
                        for k in range(len(shape))])
    sizes: list[int] = []
    st: list[list[int]] = [[] for _ in tensors]
    for k in range(len(shape) - 1, -1, -1):
        if shape[k] == 1:
            continue
        if sizes and all(s[k] == cur[0] * sizes[0] for s, cur in zip(strides, st, strict=True)):
            sizes[0] *= shape[k]  # dimension k continues the one inside it
            continue
        sizes.insert(0, shape[k])
        for s, cur in zip(strides, st, strict=True):
            cur.insert(0, s[k])
    if len(sizes) > 3:
        return None
    pad = 3 - len(sizes)
    return [1] * pad + sizes, [[0] * pad + cur for cur in st]


def run(key: tuple, var1: Tensor, cov: Tensor, var2: Tensor):
    """(T, Tdot or None) of the dual named by ``key`` (see `handles`), or None when the
    layout is not one the kernels take (the caller then runs eagerly)."""
    name, params, need_dot = _cached_params(key)
    shape = broadcast_shape(var1.shape, cov.shape, var2.shape)
    if shape is None:
        return None
    tensors = [var1, cov, var2]
    for _ in range(2):
        lay = _layout(shape, tensors)
        if lay is None:
            return None
        sizes, (s1, sc, s2) = lay
        if sc[2] == 1 and s1[2] in (0, 1) and s2[2] in (0, 1):
            break
        tensors = [t.contiguous() for t in tensors]  # then a second try
    else:
        return None
    lib = library()
    v1, c, v2 = tensors
    allpos = 1
    if name in ("relu", "abrelu", "sign"):  # angle(): the zero-variance mask is needed
        allpos = int(_all_positive(lib, var1) and _all_positive(lib, var2))
    t = torch.empty(shape, dtype=cov.dtype)
    d = torch.empty(shape, dtype=cov.dtype) if need_dot else None
    n0, n1, n2 = sizes
    st = _LONGS(*s1, *sc, *s2)
    fn = getattr(lib, f"ntkit_{name}")
    args = (n1, n2, st, v1.data_ptr(), c.data_ptr(), v2.data_ptr(), t.data_ptr(),
            0 if d is None else d.data_ptr(), params, allpos)
    _run_rows(fn, args, n0 * n1, n2)
    return t, d


def _run_rows(fn, args: tuple, rows: int, n2: int) -> None:
    """``fn(*args, r0, r1)`` over the rows [0, rows) of n2 entries each, split over
    threads only from the main thread: the engine's tile workers already hold one core
    each (ctypes releases the GIL during the call)."""
    workers = torch.get_num_threads()
    if (workers > 1 and rows > 1 and rows * n2 >= 1 << 16
            and threading.current_thread() is threading.main_thread()):
        pool = _pool(workers)
        cuts = [rows * i // workers for i in range(workers + 1)]
        list(pool.map(lambda i: fn(*args, cuts[i], cuts[i + 1]), range(workers)))
    else:
        fn(*args, 0, rows)


def run_dense(key: tuple, var1: Tensor, cov: Tensor, var2: Tensor, ntk: Tensor | None,
              affine: tuple[float, float, bool, float, float]):
    """A Dense layer and the dual named by ``key`` after it, in one pass (see
    ``DENSE_ROWS`` in native_src.c): (T, ntk · Tdot or None) of fully connected kernels.

    cov, ntk: the Dense layer's input nngp and NTK, (n1, n2); var1 (n1,), var2 (n2,): the
    variances after the Dense layer. ``affine`` = (w_std², b_std², standard
    parameterization?, input channels, 1 if 'standard' with a bias else 0). The key's
    ``need_dot`` must be ``ntk is not None``. Returns None for a layout the kernels do
    not take (then run the two layers one after the other).
    """
    if cov.dim() != 2 or var1.dim() != 1 or var2.dim() != 1:
        return None
    n1, n2 = cov.shape
    if var1.shape[0] != n1 or var2.shape[0] != n2 or (ntk is not None and ntk.shape != cov.shape):
        return None
    name, params, _ = _cached_params(key)
    lib = library()
    cov = cov if cov.stride(1) == 1 else cov.contiguous()
    if ntk is not None and (ntk.stride(1) != 1 or ntk.stride(0) != cov.stride(0)):
        ntk, cov = ntk.contiguous(), cov.contiguous()
    v1, v2 = var1.contiguous(), var2.contiguous()
    allpos = 1
    if name in ("relu", "abrelu", "sign"):  # angle(): the zero-variance mask is needed
        allpos = int(_all_positive(lib, v1) and _all_positive(lib, v2))
    t = torch.empty((n1, n2), dtype=cov.dtype)
    nko = None if ntk is None else torch.empty((n1, n2), dtype=cov.dtype)
    fn = getattr(lib, f"ntkit_dense_{name}")
    prm = _DOUBLES(*[float(a) for a in affine], *[0.0] * (NPARAM - len(affine)))
    args = (n2, v1.data_ptr(), v2.data_ptr(), cov.data_ptr(),
            0 if ntk is None else ntk.data_ptr(), cov.stride(0), t.data_ptr(),
            0 if nko is None else nko.data_ptr(), params, allpos, prm)
    _run_rows(fn, args, n1, n2)
    return t, nko


def transpose_into(src: Tensor, dst: Tensor) -> bool:
    """``dst.copy_(src.T)`` by blocks, for float64 CPU matrices with unit column stride
    (``dst`` may be a view into a larger matrix); False, copying nothing, when the
    loaded library cannot take them (the caller then copies with torch)."""
    lib = _STATE["lib"]
    if (lib is None or src.dim() != 2 or dst.dim() != 2 or src.dtype != torch.float64
            or dst.dtype != torch.float64 or src.device.type != "cpu"
            or dst.device.type != "cpu" or tuple(dst.shape) != tuple(src.shape[::-1])
            or src.stride(1) != 1 or dst.stride(1) != 1 or src.requires_grad):
        return False
    lib.ntkit_transpose(src.shape[0], src.shape[1], src.data_ptr(), src.stride(0),
                        dst.data_ptr(), dst.stride(0))
    return True


def within(v: Tensor, lo: float, hi: float) -> bool | None:
    """Whether every nonzero |v| lies strictly between ``lo`` and ``hi`` (NaN ignored),
    by one C scan; None when the loaded library cannot take ``v`` (not a float64 CPU
    vector with one stride, or no library loaded yet: the caller then uses torch)."""
    lib = _STATE["lib"]
    if lib is None or v.dtype != torch.float64 or v.device.type != "cpu":
        return None
    stride = _one_stride(v)
    if stride is None:
        return None
    return bool(lib.ntkit_within(v.numel(), v.data_ptr(), stride, lo, hi))


def _one_stride(v: Tensor) -> int | None:
    """The one stride that walks every entry of ``v`` (a variance vector, (n, 1), a
    scalar, or contiguous per-position variances (n, 1, *S)), or None."""
    dims = [st for size, st in zip(v.shape, v.stride(), strict=True) if size != 1]
    if len(dims) <= 1:
        return dims[0] if dims else 0
    return 1 if v.is_contiguous() else None


def _all_positive(lib, v: Tensor) -> bool:
    stride = _one_stride(v)
    if stride is None:
        return bool((v > 0).all())
    return bool(lib.ntkit_allpos(v.numel(), v.data_ptr(), stride))


def _pool(workers: int) -> ThreadPoolExecutor:
    if _STATE["pool"] is None or _STATE["pool_size"] != workers:
        _STATE["pool"] = ThreadPoolExecutor(workers, thread_name_prefix="ntkit-dual")
        _STATE["pool_size"] = workers
    return _STATE["pool"]


def elementwise_floor(x: Tensor, y: Tensor, out: Tensor) -> Tensor:
    """``out = atan2(sqrt(x), y)`` in one vectorized pass (float64, contiguous, CPU).

    The benchmarks' "elementwise floor": the transcendental work of one arc-cosine or
    erf dual (a square root and an arctangent per entry), with no other arithmetic.
    Example: ``elementwise_floor(torch.ones(4, dtype=torch.float64),
    torch.ones(4, dtype=torch.float64), torch.empty(4, dtype=torch.float64))`` is π/4.
    """
    for name, v in (("x", x), ("y", y), ("out", out)):
        if v.dtype != torch.float64 or not v.is_contiguous() or v.device.type != "cpu":
            raise ValueError(f"{name} must be a contiguous float64 CPU tensor")
        if v.numel() != out.numel():
            raise ValueError(f"{name} must have out's {out.numel()} entries")
    library().ntkit_floor(out.numel(), x.data_ptr(), y.data_ptr(), out.data_ptr())
    return out

"""engine.allocator: the scope is re-entrant, restores once, and changes no values.

(Its effect, fewer page faults, is a performance property: benchmarks/bench_conv.py
reports the system time it saves; tests assert correctness only.)"""

import pytest
import torch
from kernel_compare import assert_kernels_close

from ntkit.engine import allocator
from ntkit.engine.allocator import retain_freed_memory

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc's mallopt")


@glibc
def test_nesting_and_threads_restore_once():
    with retain_freed_memory():
        with retain_freed_memory():
            assert allocator._depth == 2
        assert allocator._depth == 1
    assert allocator._depth == 0


def test_disabled_is_a_no_op():
    with retain_freed_memory(enabled=False):
        assert allocator._depth == 0


def test_kernel_values_unchanged_by_the_allocator_scope():
    # The scope only changes where memory comes from: a spatial kernel computed in it
    # (the engine enters it on the CPU) equals one computed tile by tile without it.
    from ntkit import layers as nl

    net = nl.serial(nl.Conv(4, (3, 3), padding="SAME"), nl.ReLU(), nl.AvgPool((2, 2)),
                    nl.Conv(4, (3, 3)), nl.ReLU(), nl.GlobalAvgPool(), nl.Dense(1))
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # Disjoint batches, so both go through the same cross-kernel path.
    k = net.kernel(x[:2], x[2:], get="ntk", tile=2)
    rows = torch.cat([net.kernel(x[i:i + 1], x[2:], get="ntk", tile=1) for i in range(2)])
    assert_kernels_close(k, rows, name="row by row")

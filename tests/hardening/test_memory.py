"""Peak memory under ``memory_budget``: in a fresh process, the peak RSS of a kernel call
stays below the RSS before it + memory_budget + the output + a stated constant, for
fully-connected, convolutional and empirical kernels, at two budgets each.

The constant, fixed before measuring: 96 MiB (torch's allocator caches, thread stacks,
the autograd graph of the empirical kernel's small model, per-layer temporaries that the
planner does not count). The peak is VmHWM, reset before each run
(Linux' /proc/self/clear_refs), so imports and the other budget's run do not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CONSTANT = 96 * 2**20
BUDGETS = (32 * 2**20, 128 * 2**20)

SCRIPT = r"""
import json, resource, sys
import torch
from ntkit import layers as nl
import ntkit

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def reset_peak():
    # Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS, so
    # each run's peak is its own, not that of imports or an earlier run.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

def peak():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

kind, budgets = sys.argv[1], json.loads(sys.argv[2])
torch.manual_seed(0)
if kind == "fc":
    net = nl.serial(nl.Dense(64, 1.3, 0.1), nl.ReLU(), nl.Dense(64, 1.3, 0.1), nl.ReLU(),
                    nl.Dense(1))
    x = torch.randn(2500, 16, dtype=torch.float64)
    run = lambda b: net.kernel(x, get="ntk", memory_budget=b)
elif kind == "cnn":
    net = nl.serial(nl.Conv(8, (3, 3), padding="SAME"), nl.ReLU(),
                    nl.Conv(8, (3, 3), padding="SAME"), nl.ReLU(), nl.GlobalAvgPool(),
                    nl.Dense(1))
    x = torch.randn(120, 1, 8, 8, dtype=torch.float64)
    run = lambda b: net.kernel(x, get="ntk", memory_budget=b)
else:
    model = torch.nn.Sequential(torch.nn.Linear(16, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 4)).double()
    x = torch.randn(1500, 16, dtype=torch.float64)
    run = lambda b: ntkit.empirical_ntk(model, x, memory_budget=b)
run(2**20) if kind != "cnn" else net.kernel(x[:4], get="ntk")  # load code paths
out = []
for b in budgets:
    reset_peak()
    before = rss()
    k = run(b)
    out.append({"budget": b, "before": before, "peak": peak(),
                "output": k.numel() * k.element_size()})
    del k
print(json.dumps(out))
"""


# A fresh interpreter each (~15 s on a loaded 2-core machine): FC by default, the
# others under the slow marker.
@pytest.mark.parametrize("kind", ["fc", pytest.param("cnn", marks=pytest.mark.slow),
                                  pytest.param("empirical", marks=pytest.mark.slow)])
def test_peak_rss_under_budget(kind):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", SCRIPT, kind, json.dumps(BUDGETS)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    for row in rows:
        growth = row["peak"] - row["before"]
        limit = row["budget"] + row["output"] + CONSTANT
        print(f"{kind}: budget {row['budget'] >> 20} MiB, output {row['output'] >> 20} MiB, "
              f"peak growth {growth / 2**20:.1f} MiB (limit {limit >> 20} MiB)")
        assert growth <= limit, (kind, row)

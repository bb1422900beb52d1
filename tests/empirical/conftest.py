"""The empirical-kernel tests use tiny tensors: one thread avoids OpenMP wake-up costs
that dominate them on a shared machine (restored afterwards)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

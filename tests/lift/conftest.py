"""Lifted torch modules are built in float64 here (torch's default is float32); the
default dtype is restored after each test so that other test modules are unaffected."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)

"""Test-wide settings: never touch the network, never open a window, one torch thread."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Every test module runs torch on one thread: the tiny test models are faster so, and immune to other jobs'
    OpenMP threads on shared cores. A module that changes the count (the benchmarks' --threads) is set back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Test-wide settings: never touch the network, never open a window, one torch thread; the slowest modules first."""

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


#: The costliest modules (the full default simulation, the demo, distillation, evaluation), handed out first: under
#: ``-n 2 --dist loadfile`` a long module that starts last finishes the run alone on one worker.
SLOW_FIRST = ("test_simulated_dataset.py", "test_demo.py", "test_distill.py", "test_evaluate.py")


def pytest_configure(config):
    # pytest-xdist hands out modules by their number of tests, most first; ours go in the order set below
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: modules stay whole, in order

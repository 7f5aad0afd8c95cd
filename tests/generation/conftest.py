"""Decode tests run single-threaded: their matrices are tiny, and on a shared machine
idle OpenMP threads spinning for a busy core made each step ~100x slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

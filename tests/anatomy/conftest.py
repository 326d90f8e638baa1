"""Anatomy tests run torch single-threaded: the tiny models are too small to gain from threads, and
on a shared 2-core CI machine oversubscribed threads slow them down many times over."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="package")
def _single_thread_torch():
    try:
        import torch
    except ImportError:  # the [ml] extra is absent: torch tests skip themselves
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

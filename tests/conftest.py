from __future__ import annotations

from collections.abc import Iterator

import pytest
from _helpers import live_children, wait_until

import raylite


@pytest.fixture
def rl() -> Iterator[object]:
    """A fresh local runtime with 2 CPUs; checks that shutdown leaves no process behind."""
    raylite.init(num_cpus=2)
    try:
        yield raylite
    finally:
        raylite.shutdown()
        wait_until(lambda: not live_children(), 10, "worker processes to exit after shutdown")


@pytest.fixture(autouse=True)
def _no_session_leaks() -> Iterator[None]:
    yield
    if raylite.is_initialized():
        raylite.shutdown()
        pytest.fail("the test left raylite initialized")

"""Options objects made by ``.options(...)``: each call runs with its own, and none is kept
alive by the runtime once its calls are done (nothing is cached by ``id()``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

import raylite

pytestmark = pytest.mark.local_only("counts the local runtime's options objects")


@raylite.remote
def my_name() -> str | None:
    return raylite.get_runtime_context().get_task_name()


@raylite.remote
def my_gpus() -> list[int]:
    return raylite.get_gpu_ids()


@raylite.remote
def children_with_their_own_options(n: int) -> list[list[int]]:
    """Submits ``n`` children, each through a short-lived ``.options()`` variant asking for
    a GPU or not, in turn."""
    return raylite.get([my_gpus.options(num_gpus=i % 2).remote() for i in range(n)])


@pytest.fixture
def one_gpu() -> Iterator[None]:
    raylite.init(num_cpus=2, num_gpus=1)  # the GPU is bookkeeping: none is touched
    try:
        yield
    finally:
        raylite.shutdown()


def test_each_nested_options_call_runs_with_its_own_options(one_gpu):
    got = raylite.get(children_with_their_own_options.remote(40), timeout=60)
    wrong = [i for i, gpus in enumerate(got) if bool(gpus) != bool(i % 2)]
    assert not wrong, f"{len(wrong)} of 40 children ran with another call's options: {wrong}"


def test_each_driver_options_call_runs_with_its_own_options(rl):
    refs = [my_name.options(name=f"top-{i}").remote() for i in range(40)]
    assert raylite.get(refs, timeout=60) == [f"top-{i}" for i in range(40)]


def test_the_runtime_keeps_no_options_object_alive_after_its_calls(rl):
    @raylite.remote
    def one() -> int:
        return 1

    variants = [one.options(num_cpus=0.5, name=f"v{i}") for i in range(200)]
    assert sum(raylite.get([v.remote() for v in variants], timeout=60)) == 200
    alive = [weakref.ref(v._options) for v in variants]
    del variants
    gc.collect()
    kept = sum(r() is not None for r in alive)
    assert kept == 0, f"{kept} of 200 options objects are still alive after their tasks"

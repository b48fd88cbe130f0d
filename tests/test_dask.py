"""``raylite.util.dask.raylite_dask_get``: Dask graphs run as raylite tasks.

Each result is checked against Dask's own threaded scheduler on the same collection:
arrays, dataframes, ``dask.delayed`` with nested outputs. Also: the tasks run in raylite's
workers, a whole graph is submitted before its first task ends (dependencies travel as
ObjectRefs, not through the driver), errors keep their type, and Ray's keywords work.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import raylite
from raylite.exceptions import PendingTaskWarning, TaskUnschedulableError
from raylite.util.dask import ray_dask_get, raylite_dask_get
from raylite.util.state import list_tasks, list_workers

GATE_TIMEOUT = 60.0


@pytest.fixture
def two_cpus() -> Iterator[None]:
    raylite.init(num_cpus=2)
    try:
        yield
    finally:
        raylite.shutdown()


def test_arrays_match_the_threaded_scheduler(two_cpus: None) -> None:
    x = da.random.RandomState(0).random((600, 600), chunks=(150, 200))
    exprs = [
        (x + x.T).mean(axis=0),
        x.dot(x.T)[::7, 3:50].sum(axis=1),
        da.concatenate([x, x * 2], axis=0).std(),
        (x > 0.5).astype(int).cumsum(axis=1)[-1],
    ]
    ours = dask.compute(*exprs, scheduler=raylite_dask_get)
    reference = dask.compute(*exprs, scheduler="threads")
    for a, b in zip(ours, reference, strict=True):
        np.testing.assert_allclose(a, b)


def test_dataframes_match_the_threaded_scheduler(two_cpus: None) -> None:
    rng = np.random.default_rng(0)
    left = pd.DataFrame({"k": rng.integers(0, 20, 2000), "v": rng.random(2000)})
    right = pd.DataFrame({"k": np.arange(20), "w": np.arange(20.0) * 10})
    ddf = dd.from_pandas(left, npartitions=5)
    grouped = ddf.groupby("k").v.agg(["sum", "count", "mean"])
    merged = ddf.merge(dd.from_pandas(right, npartitions=2), on="k")
    filtered = ddf[ddf.v > 0.3].v.describe()
    for frame in (grouped, merged.w.sum(), filtered):
        ours = frame.compute(scheduler=raylite_dask_get)
        reference = frame.compute(scheduler="threads")
        if isinstance(ours, pd.DataFrame | pd.Series):
            pd.testing.assert_frame_equal(
                pd.DataFrame(ours).sort_index(), pd.DataFrame(reference).sort_index()
            )
        else:
            assert ours == pytest.approx(reference)


@dask.delayed
def inc(i: int) -> int:
    return i + 1


@dask.delayed
def add(a: int, b: int) -> int:
    return a + b


@dask.delayed
def pid() -> int:
    return os.getpid()


@dask.delayed
def divide(a: int, b: int) -> float:
    return a / b


def test_delayed_with_nested_outputs_and_rays_name(two_cpus: None) -> None:
    total = add(inc(1), inc(2))
    parts = {"a": inc(10), "b": [add(total, 1), inc(0)]}
    expected = dask.compute(total, parts, scheduler="threads")
    assert dask.compute(total, parts, scheduler=raylite_dask_get) == expected
    assert dask.compute(total, parts, scheduler=ray_dask_get) == expected
    with dask.config.set(scheduler=raylite_dask_get):
        assert dask.compute(total, parts) == expected


def test_tasks_run_in_raylite_workers(two_cpus: None) -> None:
    pids = dask.compute(*[pid() for _ in range(6)], scheduler=raylite_dask_get)
    workers = {w.pid for w in list_workers() if w.worker_type != "DRIVER"}
    assert set(pids) <= workers and os.getpid() not in pids


@dask.delayed
def wait_for_gate(path: str) -> np.ndarray:
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.005)
    return np.ones(1000)


@dask.delayed
def double(a: np.ndarray) -> np.ndarray:
    return a * 2


def test_the_whole_graph_is_submitted_before_its_first_task_ends(
    two_cpus: None, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    result = double(double(double(wait_for_gate(str(gate)))))
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(result.compute(scheduler=raylite_dask_get)))
    thread.start()
    try:
        deadline = time.monotonic() + GATE_TIMEOUT
        while len(list_tasks(limit=10_000)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        states = [t.state for t in list_tasks(limit=10_000)]
        assert len(states) == 4 and "FINISHED" not in states  # all four, none done yet
    finally:
        gate.touch()
        thread.join(GATE_TIMEOUT)
    np.testing.assert_array_equal(out[0], np.full(1000, 8.0))


def test_errors_keep_their_type(two_cpus: None) -> None:
    with pytest.raises(ZeroDivisionError):
        dask.compute(add(divide(1, 0), inc(1)), scheduler=raylite_dask_get)
    assert dask.compute(inc(1), scheduler=raylite_dask_get) == (2,)


def test_ray_keywords(two_cpus: None) -> None:
    (ref,) = dask.compute(add(inc(1), inc(2)), scheduler=raylite_dask_get, ray_persist=True)
    assert isinstance(ref, raylite.ObjectRef) and raylite.get(ref) == 5
    with pytest.warns(PendingTaskWarning), pytest.raises(TaskUnschedulableError):
        dask.compute(inc(1), scheduler=raylite_dask_get, ray_remote_args={"num_cpus": 64})
    with pytest.raises(TypeError, match="unknown keyword"):
        dask.compute(inc(1), scheduler=raylite_dask_get, colour="blue")


def test_every_runtime(rl: object) -> None:
    """The same scheduler on the local runtime and, through init(address=...), on Ray."""
    x = da.arange(100, chunks=10)
    assert int((x * 2).sum().compute(scheduler=raylite_dask_get)) == 9900
    assert dask.compute(add(inc(1), inc(2)), scheduler=raylite_dask_get) == (5,)

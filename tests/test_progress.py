"""raylite.util.as_completed (Ray's: batches, completion order, per-step timeouts) and
raylite.util.progress (get with a tqdm bar: values in order, the bar's count, timeouts).

Both use only the public API, so every test runs on both runtimes. Tasks that must finish
in an order the test chooses wait for a file the test creates (a gate any process sees).
"""

from __future__ import annotations

import inspect
import io
import os
import time
from pathlib import Path

import pytest

import raylite
import raylite.util
from raylite.exceptions import GetTimeoutError
from raylite.util import as_completed, progress


@raylite.remote
def when_file_exists(path: str, value: object) -> object:
    """Returns ``value`` once ``path`` exists (30 s at most): a gate the test opens."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never created")
        time.sleep(0.005)
    return value


@raylite.remote
def square(x: int) -> int:
    return x * x


@raylite.remote
def fail(message: str) -> None:
    raise ValueError(message)


@pytest.fixture
def gates(tmp_path: Path):
    """``gates(name)`` -> the gate's path; every gate opens at the end, so no task lingers."""
    made: list[Path] = []

    def gate(name: str) -> str:
        made.append(tmp_path / name)
        return str(made[-1])

    yield gate
    for path in made:
        path.touch()


def test_as_completed_with_chunk_size_1_yields_in_completion_order(rl, gates):
    first, second = gates("first"), gates("second")
    refs = [
        when_file_exists.remote(second, "opened second"),
        when_file_exists.remote(first, "opened first"),
        raylite.put("ready at once"),
    ]
    results = as_completed(refs, chunk_size=1)
    assert next(results) == "ready at once"  # listed last, ready first
    Path(first).touch()
    assert next(results) == "opened first"
    Path(second).touch()
    assert next(results) == "opened second"
    assert list(results) == []


def test_as_completed_yields_every_value_or_ref(rl):
    refs = [square.remote(i) for i in range(25)]
    assert sorted(as_completed(refs)) == [i * i for i in range(25)]
    # One batch of all 25: in the order of refs (which 10 of 25 ready refs make a batch of
    # 10 is up to the runtime: Ray does not take the first ones).
    assert list(as_completed(refs, chunk_size=25)) == [i * i for i in range(25)]
    assert sorted(as_completed(refs, yield_obj_refs=True), key=refs.index) == refs
    assert list(as_completed([])) == []


def test_as_completed_timeout_yields_a_partial_batch_and_goes_on(rl, gates):
    gate = gates("gate")
    refs = [raylite.put("early"), when_file_exists.remote(gate, "late")]
    results = as_completed(refs, chunk_size=2, timeout=0.2)
    start = time.monotonic()
    assert next(results) == "early"  # the step timed out with 1 of its 2 ready
    assert time.monotonic() - start >= 0.15
    Path(gate).touch()
    assert next(results) == "late"  # a timeout does not end the iteration


def test_as_completed_raises_a_failed_task_error(rl):
    with pytest.raises(ValueError, match="bad input 7"):
        list(as_completed([square.remote(2), fail.remote("bad input 7")]))


def test_as_completed_refuses_bad_arguments(rl):
    refs = [square.remote(1)]
    with pytest.raises(ValueError, match="chunk_size=0.*at least 1"):
        next(as_completed(refs, chunk_size=0))
    with pytest.raises(ValueError, match="chunk_size, not num_returns"):
        next(as_completed(refs, num_returns=1))
    with pytest.raises(TypeError, match="unexpected keyword argument.*timout.*timeout"):
        next(as_completed(refs, timout=1))
    with pytest.raises(TypeError, match=r"Wrap a single ref in a list: as_completed\(\[ref\]\)"):
        next(as_completed(refs[0]))  # type: ignore[arg-type]


def test_progress_returns_values_in_order_and_the_bar_counts_them_all(rl):
    refs = [square.remote(i) for i in range(40)]
    bar = io.StringIO()
    assert progress(refs + refs[:2], desc="squares", file=bar) == (
        [i * i for i in range(40)] + [0, 1]
    )
    final = bar.getvalue().split("\r")[-1]  # tqdm redraws its line with \r
    assert final.startswith("squares: 100%")
    assert "42/42" in final and "task/s" in final


def test_progress_draws_on_stderr_unless_disabled(rl, capsys):
    refs = [square.remote(i) for i in range(5)]
    assert progress(refs) == [0, 1, 4, 9, 16]
    assert "5/5" in capsys.readouterr().err
    assert progress(refs, disable=True) == [0, 1, 4, 9, 16]
    assert progress(refs, disable=None) == [0, 1, 4, 9, 16]  # stderr is no terminal here
    assert capsys.readouterr() == ("", "")
    assert progress([], desc="nothing", file=io.StringIO()) == []


def test_progress_times_out_with_the_count_left(rl, gates):
    gate = gates("gate")
    refs = [square.remote(3), when_file_exists.remote(gate, "late")]
    bar = io.StringIO()
    start = time.monotonic()
    with pytest.raises(GetTimeoutError, match=r"1 of 2 refs not ready after 0.3 s"):
        progress(refs, timeout=0.3, file=bar)
    assert 0.25 <= time.monotonic() - start < 5
    assert "1/2" in bar.getvalue().split("\r")[-1]  # the bar stops where it was


def test_progress_refuses_a_single_ref(rl):
    with pytest.raises(TypeError, match=r"progress\(\[ref\]\)"):
        progress(square.remote(2))  # type: ignore[arg-type]


def test_names_and_signature_follow_ray_util():
    assert {"as_completed", "progress", "ActorPool"} <= set(raylite.util.__all__)
    params = inspect.signature(raylite.util.as_completed).parameters
    assert list(params) == ["refs", "chunk_size", "yield_obj_refs", "kwargs"]  # Ray's
    assert (params["chunk_size"].default, params["yield_obj_refs"].default) == (10, False)

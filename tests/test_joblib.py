"""``raylite.util.joblib``: joblib's ``Parallel`` and scikit-learn's ``n_jobs`` on raylite.

A grid search gives the same result as on joblib's default backend (loky); the work runs in
raylite's worker processes; a big array argument is put in the store once per ``Parallel``
call however many tasks take it; errors keep their type; ``n_jobs=-1`` means raylite's CPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from joblib import Parallel, delayed

import raylite
from raylite.util.joblib import register_ray, register_raylite
from raylite.util.state import list_objects, list_workers

GATE_TIMEOUT = 60.0


@pytest.fixture
def two_cpus() -> Iterator[None]:
    raylite.init(num_cpus=2)
    register_raylite()
    try:
        yield
    finally:
        raylite.shutdown()


def pid_and_sum(a: np.ndarray) -> tuple[int, float]:
    return os.getpid(), float(a.sum())


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise KeyError(f"item {x}")
    return x


def sum_when_open(a: np.ndarray, gate: str) -> tuple[float, bool]:
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.005)
    return float(a.sum()), bool(a.flags.writeable)


def grid_search() -> tuple[Any, Any, Any]:
    """A small grid search (not fitted yet) and its data."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV
    from sklearn.tree import DecisionTreeClassifier

    X, y = make_classification(n_samples=200, n_features=8, random_state=0)
    grid = {"max_depth": [2, 3, 5], "min_samples_leaf": [1, 5]}
    return GridSearchCV(DecisionTreeClassifier(random_state=0), grid, cv=3, n_jobs=2), X, y


def fitted_summary() -> str:
    """Fits ``grid_search()`` on the active joblib backend; its outcome as JSON."""
    search, X, y = grid_search()
    search.fit(X, y)
    scores = [float(s) for s in search.cv_results_["mean_test_score"]]
    return json.dumps([search.best_params_, scores, search.predict(X).tolist()])


def test_grid_search_gives_the_default_backends_result(two_cpus: None) -> None:
    # The reference runs on joblib's default backend (loky) in a process of its own: loky
    # leaves helper processes (resource trackers) behind for the rest of a process's life.
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    code += "from test_joblib import fitted_summary; print(fitted_summary())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    with joblib.parallel_backend("raylite"):
        ours = fitted_summary()
    assert json.loads(ours) == json.loads(done.stdout.strip().splitlines()[-1])


def test_tasks_run_in_raylite_workers_under_both_names(two_cpus: None) -> None:
    register_ray()
    a = np.arange(10.0)
    for name in ("raylite", "ray"):
        with joblib.parallel_backend(name, n_jobs=2), Parallel() as parallel:
            out = parallel(delayed(pid_and_sum)(a) for _ in range(10))
            workers = {w.pid for w in list_workers() if w.worker_type != "DRIVER"}
        assert {pid for pid, _ in out} <= workers
        assert os.getpid() not in {pid for pid, _ in out}
        assert [s for _, s in out] == [45.0] * 10


def test_a_big_array_goes_through_the_store_once(two_cpus: None, tmp_path: Path) -> None:
    big = np.ones(2**20)  # 8 MiB, over joblib's default max_nbytes of 1 MB
    gate = tmp_path / "gate"
    out: list[object] = []

    def run() -> None:
        with joblib.parallel_backend("raylite", n_jobs=2):
            out.extend(
                Parallel(batch_size=1)(delayed(sum_when_open)(big, str(gate)) for _ in range(8))
            )

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + GATE_TIMEOUT
        while True:  # wait for the tasks to be submitted (they block on the gate)
            stored = [o for o in list_objects(limit=10_000) if o.object_size >= big.nbytes]
            if stored or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert len(stored) == 1 and stored[0].in_shared_memory
    finally:
        gate.touch()
        thread.join(GATE_TIMEOUT)
    assert out == [(float(2**20), False)] * 8  # read-only views of the stored array


def test_small_arrays_and_max_nbytes_none_travel_with_the_task(two_cpus: None) -> None:
    a = np.ones(2**20)
    with joblib.parallel_backend("raylite", n_jobs=2, max_nbytes=None):
        out = Parallel()(delayed(pid_and_sum)(a) for _ in range(4))
    assert [s for _, s in out] == [float(2**20)] * 4


def test_errors_keep_their_type(two_cpus: None) -> None:
    with joblib.parallel_backend("raylite", n_jobs=2):
        with pytest.raises(KeyError, match="item 3"):
            Parallel()(delayed(fail_on)(i, 3) for i in range(10))
        assert Parallel()(delayed(fail_on)(i, -1) for i in range(5)) == list(range(5))


def test_generator_output(two_cpus: None) -> None:
    with joblib.parallel_backend("raylite", n_jobs=2):
        gen = Parallel(return_as="generator")(delayed(fail_on)(i, -1) for i in range(20))
        assert list(gen) == list(range(20))


def test_n_jobs_minus_one_is_raylites_cpus() -> None:
    raylite.init(num_cpus=3)
    register_raylite()
    try:
        with joblib.parallel_backend("raylite"):
            assert joblib.effective_n_jobs(-1) == 3
            assert joblib.effective_n_jobs(-2) == 2
    finally:
        raylite.shutdown()

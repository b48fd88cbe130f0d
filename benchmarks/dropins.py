"""The drop-ins against the libraries they stand in for, on this machine, 2 processes each.

- ``pool``: ``raylite.util.multiprocessing.Pool(2)`` vs ``multiprocessing.Pool(2)`` (fork),
  both started once: ``map`` of a no-op over 1,000 / 10,000 / 100,000 items (a list) and
  over ``range(1_000_000)``, automatic ``chunksize``; ``imap`` of 10,000 (``chunksize=1``);
  and a cold ``with Pool(2) as p: p.map(noop, range(10_000))`` (process start included;
  raylite itself is initialized once, as a program does).
- ``joblib``: ``parallel_backend("raylite")`` vs joblib's default (loky), ``n_jobs=2``:
  64 tasks each summing a slice of one 64 MB array passed to every task (joblib memory-maps
  it, raylite puts it in its store; both once per call), 10,000 no-op tasks (automatic
  batching), and a ``GridSearchCV`` (decision tree, 12 candidates x 3 folds, 2,000 x 20).
- ``dask``: ``scheduler=raylite_dask_get`` vs Dask's ``"threads"`` and ``"processes"``:
  an array expression (2000 x 2000, 8 chunks), a ``dask.delayed`` tree of 511 small
  tasks, 16 pure-Python tasks that hold the GIL, and a dataframe group-by (1,000,000
  rows, 8 partitions).

How: within one process per group, every case runs each contender once per round, after
one untimed warm-up each; the order alternates between rounds (A B, then B A, ...) so that
drift in the machine's load hits both alike. The table shows the median per contender and
``baseline / raylite`` (> 1: raylite is faster; against the best baseline where there are
two). Each result is checked against the baseline's. The load average is printed before
and after: other work on the machine slows everyone, unevenly.

Usage:
    python benchmarks/dropins.py                  # all groups, 7 rounds
    python benchmarks/dropins.py --only pool --rounds 11 --json pool.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_tasks, run alone or not
from bench_tasks import noop, slice_sum  # noqa: E402

SUBJECT = "raylite"


def spin(n: int) -> int:
    """Pure-Python work that holds the GIL (threads cannot run two at once)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


@dataclass
class Case:
    """One row: the same work done by each contender (``{name: run}``), checked alike."""

    group: str
    name: str
    runs: dict[str, Callable[[], Any]]
    check: Callable[[Any, Any], None] = lambda ours, theirs: _equal(ours, theirs)
    times: dict[str, list[float]] = field(default_factory=dict)

    def median(self, who: str) -> float:
        return statistics.median(self.times[who])

    def ratio(self) -> tuple[float, str]:
        """``best baseline median / raylite median`` and that baseline's name."""
        peers = [n for n in self.runs if n != SUBJECT]
        best = min(peers, key=self.median)
        return self.median(best) / self.median(SUBJECT), best


def _equal(ours: Any, theirs: Any) -> None:
    if ours != theirs:
        raise AssertionError(f"results differ: {str(ours)[:80]} != {str(theirs)[:80]}")


def measure(case: Case, rounds: int) -> None:
    """Warm-up, then ``rounds`` interleaved timed runs of every contender."""
    names = list(case.runs)
    results = {n: case.runs[n]() for n in names}  # warm-up, also the results checked
    for n in names:
        if n != SUBJECT:
            case.check(results[SUBJECT], results[n])
    case.times = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            case.runs[n]()
            case.times[n].append(time.perf_counter() - start)


# -- groups: each yields its cases with the pools up, and closes them afterwards ----------


@contextmanager
def pool_cases() -> Iterator[list[Case]]:
    from raylite.util.multiprocessing import Pool

    mp = multiprocessing.get_context("fork").Pool(2)
    ours = Pool(2)
    lists = {n: list(range(n)) for n in (1_000, 10_000, 100_000)}

    try:
        cases = [
            Case("pool", f"map(noop, list of {n:,})", {
                SUBJECT: lambda items=items: ours.map(noop, items),
                "multiprocessing": lambda items=items: mp.map(noop, items),
            })
            for n, items in lists.items()
        ]  # fmt: skip
        cases.append(Case("pool", "map(noop, range(1,000,000))", {
            SUBJECT: lambda: ours.map(noop, range(1_000_000)),
            "multiprocessing": lambda: mp.map(noop, range(1_000_000)),
        }))  # fmt: skip
        cases.append(Case("pool", "list(imap(noop, range(10,000)))", {
            SUBJECT: lambda: list(ours.imap(noop, range(10_000))),
            "multiprocessing": lambda: list(mp.imap(noop, range(10_000))),
        }))  # fmt: skip
        yield cases
    finally:
        ours.terminate()
        mp.terminate()
        mp.join()


@contextmanager
def pool_start_cases() -> Iterator[list[Case]]:
    """A pool started for one ``map`` (no other pool open: raylite's processes hold a CPU)."""
    from raylite.util.multiprocessing import Pool

    def cold(cls: Callable[[int], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with cls(2) as pool:
                return pool.map(noop, range(10_000))

        return run

    yield [
        Case("pool", "cold: with Pool(2) as p: p.map(noop, range(10,000))", {
            SUBJECT: cold(Pool),
            "multiprocessing": cold(multiprocessing.get_context("fork").Pool),
        })
    ]  # fmt: skip


@contextmanager
def joblib_cases() -> Iterator[list[Case]]:
    import joblib
    import numpy as np
    from joblib import Parallel, delayed
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV
    from sklearn.tree import DecisionTreeClassifier

    from raylite.util.joblib import register_raylite

    register_raylite()
    arr = np.arange(64 * 2**20 // 8, dtype=np.float64)
    bounds = [(i * len(arr) // 64, (i + 1) * len(arr) // 64) for i in range(64)]
    X, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    grid = {"max_depth": [2, 4, 6, 8], "min_samples_leaf": [1, 5, 20]}

    def on(backend: str | None, work: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            if backend is None:
                return work()
            with joblib.parallel_backend(backend):
                return work()

        return run

    def fanout() -> Any:
        return Parallel(n_jobs=2)(delayed(slice_sum)(arr, lo, hi) for lo, hi in bounds)

    def tiny() -> Any:
        return Parallel(n_jobs=2)(delayed(noop)(i) for i in range(10_000))

    def search() -> Any:
        fitted = GridSearchCV(DecisionTreeClassifier(random_state=0), grid, cv=3, n_jobs=2)
        fitted.fit(X, y)
        return fitted.best_params_, list(fitted.cv_results_["mean_test_score"])

    yield [
        Case("joblib", f"Parallel: {name}", {SUBJECT: on("raylite", work), "loky": on(None, work)})
        for name, work in (
            ("64 tasks over one 64 MB array", fanout),
            ("10,000 no-op tasks", tiny),
            ("GridSearchCV, 36 fits", search),
        )
    ]


@contextmanager
def dask_cases() -> Iterator[list[Case]]:
    import dask
    import dask.array as da
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    from raylite.util.dask import raylite_dask_get

    x = da.random.RandomState(0).random((2000, 2000), chunks=(500, 1000))
    array_expr = (x + x.T).mean(axis=0)
    inc = dask.delayed(lambda i: i + 1, pure=True)
    add = dask.delayed(lambda a, b: a + b, pure=True)
    level = [inc(i) for i in range(256)]
    while len(level) > 1:
        level = [add(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    tree = level[0]
    spun = dask.delayed(sum)([dask.delayed(spin, pure=True)(300_000 + i) for i in range(16)])
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"k": rng.integers(0, 100, 1_000_000), "v": rng.random(1_000_000)})
    grouped = dd.from_pandas(frame, npartitions=8).groupby("k").v.mean()

    def close(ours: Any, theirs: Any) -> None:
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs))

    def same_frame(ours: Any, theirs: Any) -> None:
        pd.testing.assert_series_equal(ours.sort_index(), theirs.sort_index())

    def runs(collection: Any) -> dict[str, Callable[[], Any]]:
        return {
            SUBJECT: lambda: collection.compute(scheduler=raylite_dask_get),
            "threads": lambda: collection.compute(scheduler="threads"),
            "processes": lambda: collection.compute(scheduler="processes", num_workers=2),
        }

    yield [
        Case("dask", "array: (x + x.T).mean(axis=0), 2000x2000, 8 chunks", runs(array_expr), close),
        Case("dask", "delayed: tree of 511 small tasks", runs(tree)),
        Case("dask", "delayed: 16 pure-Python (GIL-bound) tasks of ~30 ms", runs(spun)),
        Case("dask", "dataframe: groupby mean, 1M rows, 8 partitions", runs(grouped), same_frame),
    ]


GROUPS: dict[str, Callable[[], AbstractContextManager[list[Case]]]] = {
    "pool": pool_cases,
    "pool-start": pool_start_cases,
    "joblib": joblib_cases,
    "dask": dask_cases,
}


_LIBRARIES = ("joblib", "sklearn.model_selection", "sklearn.tree", "dask.array", "dask.dataframe")


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run(groups: list[str], rounds: int) -> dict[str, Any]:
    """Measures the groups; returns ``{"load_before", "load_after", "rounds", "cases"}``."""
    import raylite

    load_before = _load()
    for name in _LIBRARIES:  # imported before init, as a program's imports are: the
        with suppress(ImportError):  # workers, forked from then, have them already
            importlib.import_module(name)
    raylite.init(num_cpus=2)
    cases: list[Case] = []
    skipped: dict[str, str] = {}
    try:
        for group in groups:
            with ExitStack() as stack:
                try:
                    group_cases = stack.enter_context(GROUPS[group]())
                except ImportError as exc:  # an optional library is not installed
                    skipped[group] = f"{exc}; pip install 'raylite[bench]'"
                    continue
                for case in group_cases:
                    measure(case, rounds)
                    cases.append(case)
    finally:
        raylite.shutdown()
    return {
        "load_before": load_before,
        "load_after": _load(),
        "rounds": rounds,
        "skipped": skipped,
        "cases": [
            {
                "group": c.group,
                "case": c.name,
                "median_ms": {n: c.median(n) * 1e3 for n in c.runs},
                "ratio": c.ratio()[0],
                "vs": c.ratio()[1],
            }
            for c in cases
        ],
    }


def report(results: dict[str, Any]) -> str:
    """The table: one row per case, medians in ms, and baseline/raylite."""
    rows = [["group", "case", "raylite ms", "baseline ms", "baseline/raylite"]]
    for c in results["cases"]:
        peers = ", ".join(f"{n} {ms:,.1f}" for n, ms in c["median_ms"].items() if n != SUBJECT)
        ours = c["median_ms"][SUBJECT]
        rows.append(
            [c["group"], c["case"], f"{ours:,.1f}", peers, f"{c['ratio']:.2f}x vs {c['vs']}"]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"Drop-ins, medians of {results['rounds']} interleaved rounds, 2 processes each; "
        f"load average (1/5/15 min) {results['load_before']} before, "
        f"{results['load_after']} after; {os.cpu_count()} cores.",
        "",
    ]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", "baseline/raylite > 1 means raylite is faster (vs the best baseline)."]
    lines += [f"{group}: skipped ({why})" for group, why in results["skipped"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="GROUP,...", help=f"groups ({','.join(GROUPS)})")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    groups = [g.strip() for g in args.only.split(",")] if args.only else list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or args.rounds < 1:
        parser.error(f"unknown group(s) {unknown}" if unknown else "--rounds must be >= 1")
    results = run(groups, args.rounds)
    print(report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

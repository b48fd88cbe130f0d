"""The shared benchmark harness: registry, timing helpers, subprocesses, medians (the table
and the JSON are ``report.py``'s).

A *contender* (raylite, ray, multiprocessing, ...) is registered once with
:func:`add_contender`: how to start its pool, get a first result and stop it. A *benchmark*
is a :class:`Metric` in :data:`METRICS` plus, per contender, one function registered with
:func:`bench`: ``fn(handle, n) -> value``, where ``handle`` is what the contender's ``start``
returned and ``n`` the operation count. ``init_to_first_result`` is measured by the harness
itself from ``start`` and ``first_result``.

To add a benchmark: append a :class:`Metric` to :data:`METRICS`, then write one ``@bench``
function in each contender module that supports it (contenders without one show "-").
Benchmark functions run in :data:`METRICS` order, in one process per contender that starts
the pool once; a function that measures a companion row as well (a baseline taken in the same
breath) :func:`stash`-es it, and the companion's own ``@bench`` returns :func:`stashed`.

Each (contender, repeat) runs in a fresh subprocess (``run.py --child NAME``), one at a
time; the child appends one JSON line per measurement to a result file, so what it measured
before a crash or a timeout is kept.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
SUBJECT = "raylite"
"""The contender the "vs best peer" column compares against all others."""

BenchFn = Callable[[Any, int], float]


@dataclass(frozen=True)
class Metric:
    """One row of the table.

    Attributes:
        name: Row name, also the key in the JSON output.
        unit: Unit of the value, shown in the row label.
        higher_is_better: True for rates, False for times.
        count: Default operation count passed to each ``@bench`` function (None: not used).
        what: One line saying what is measured.
        compare: False for a row the "vs best peer" column must not rank (a baseline, a
            ratio to one, a value near zero, a total over a count some peer scales down); it
            shows "n/a" there.
        scaled: What the notes say about the value when a slow peer runs fewer than
            ``count`` operations.
        counted: What ``count`` counts, for those notes.
    """

    name: str
    unit: str
    higher_is_better: bool
    count: int | None
    what: str
    compare: bool = True
    scaled: str = "the value is still per task / per call"
    counted: str = "operations"


INIT = "init_to_first_result"
DRIVER_CPU = "driver_cpu_us_per_tiny_task"
"""Companion of ``tiny_tasks_per_s``, measured in the same batch (:func:`throughput`)."""
INIT_FAILED = "init failed"  # the error of metrics not run because the pool did not start
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(INIT, "s", False, None, "import, then init()/pool creation, until f(1)'s result is in hand"),
        Metric(
            "tiny_tasks_per_s",
            "tasks/s",
            True,
            20_000,
            "submit n no-op tasks asynchronously, then get all results; n / elapsed",
        ),
        Metric(
            DRIVER_CPU,
            "us",
            False,
            None,
            "CPU time of the driver process, all its threads (os.times user + system), over "
            "the tiny-task batch, / n (Ray: its driver only, not raylet or GCS; "
            "multiprocessing: the parent process)",
        ),
        Metric(
            "sync_round_trip_us",
            "us",
            False,
            2_000,
            "get(f.remote(i)) in a loop, n calls; mean microseconds per call",
        ),
        # Actors (issue 4): default actors (no resources reserved), called from the driver.
        # They run before the object store's rows, so that the memory baseline holds no freed
        # object still mapped by a worker, and the 1,000-actor rows before the ping rows. A
        # benchmark kills its actors at its end (and, in Ray, waits for their processes to
        # exit). Slow peers create fewer actors (Ray: 20): their totals are not ranked, the
        # per-actor rows are.
        Metric(
            "actors_1000_create_call_twice_s",
            "s",
            False,
            1_000,
            "create n actors (a class with a counter), get n first calls (one per actor), "
            "then n second calls; wall time",
            compare=False,
            scaled=(
                "the value is the total for that many actors, not ranked; "
                "compare actor_create_call_twice_ms_per_actor"
            ),
            counted="actors",
        ),
        Metric(
            "actor_create_call_twice_ms_per_actor",
            "ms",
            False,
            1_000,
            "the same wall time / n",
            scaled="the value is still per actor (over fewer actors)",
            counted="actors",
        ),
        Metric(
            "actors_1000_worker_processes",
            "processes",
            False,
            1_000,
            "the library's worker processes alive with the n actors, task workers included "
            "(raylite: the driver's live descendants except its one child, the zygote; "
            "Ray: live descendants titled ray::*, except ray::DashboardAgent and "
            "ray::RuntimeEnvAgent)",
            compare=False,
            scaled="the value is the count with that many actors, not ranked",
            counted="actors",
        ),
        Metric(
            "actors_memory_mb",
            "MB",
            False,
            1_000,
            "total PSS (psutil; shared pages split among their users) of the driver's live "
            "descendant processes with the n actors alive (Ray: gcs_server, raylet, "
            "dashboard, agents and workers)",
            compare=False,
            scaled="the value is the total with that many actors, not ranked",
            counted="actors",
        ),
        Metric(
            "actor_memory_mb_per_actor",
            "MB",
            False,
            1_000,
            "growth of that total from just before the n actors were created, / n",
            scaled="the value is still per actor (over fewer actors)",
            counted="actors",
        ),
        Metric(
            "async_actor_calls_per_s",
            "calls/s",
            True,
            20_000,
            "one async actor (async def ping(self): return None); after a warm-up of 5%, "
            "submit n calls, then get all; n / elapsed",
            counted="calls",
        ),
        Metric(
            "sync_actor_call_us",
            "us",
            False,
            2_000,
            "get(a.ping.remote()) in a loop on a plain actor (def ping(self): return None), "
            "n calls after a warm-up of 5%; mean microseconds per call",
            counted="calls",
        ),
        # The object store (issue 3). 1 MB = 2**20 bytes; the arrays are float64, built
        # before the clock; n is the number of repeats in one process, the value their median.
        Metric(
            "put_100mb_ms",
            "ms",
            False,
            10,
            "put(100 MB array), then del the ref (freed by ref counting); median of n "
            "(repeats reuse freed memory; the first, into fresh pages, is slower everywhere)",
        ),
        Metric(
            "numpy_copy_100mb_ms",
            "ms",
            False,
            None,
            "baseline: arr.copy() of the same array, timed just before each put, same process",
            compare=False,
        ),
        Metric(
            "put_over_numpy_copy",
            "x",
            False,
            None,
            "median put / median numpy copy in the same process (issue 3 target: <= 1.5)",
            compare=False,
        ),
        Metric(
            "get_100mb_in_worker_us",
            "us",
            False,
            10,
            "a task times get(refs[0]) of a fresh put(100 MB array) (ref inside a list, so "
            "unresolved at task start); median of n",
        ),
        Metric(
            "fanout_64_tasks_200mb_ms",
            "ms",
            False,
            5,
            "200 MB array shared once (untimed), then 64 tasks each summing a 1/64 slice, "
            "get all; wall time, median of n after one warm-up round",
        ),
        Metric(
            "worker_uss_growth_mb",
            "MB",
            False,
            5,
            "a task's USS (psutil) after get + sum() of a fresh 100 MB object minus before; "
            "median of n",
            compare=False,
        ),
        Metric(
            "worker_anon_growth_mb",
            "MB",
            False,
            None,
            "same tasks: growth of anonymous memory (smaps_rollup), i.e. what a private copy "
            "would add; shared pages mapped by one process only count in USS but not here",
            compare=False,
        ),
    )
}


@dataclass(frozen=True)
class Contender:
    """One column of the table: a way to run tasks on 2 worker processes.

    Attributes:
        name: Column name and ``--only`` key.
        api: One line naming the API used, for the legend.
        start: Creates the pool (``init`` and the like); returns the handle benchmarks get.
        first_result: Runs ``noop(1)`` on the pool and returns its result.
        stop: Shuts the pool down.
        modules: Imported before the clock starts (import time is not measured).
        optional: If a module is missing, skip the contender with a note instead of an error.
        counts: Per-metric operation counts overriding :attr:`Metric.count` (slow peers).
        packages: Distributions whose versions are printed with the machine.
    """

    name: str
    api: str
    start: Callable[[], Any]
    first_result: Callable[[Any], Any]
    stop: Callable[[Any], None]
    modules: tuple[str, ...] = ()
    optional: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    packages: tuple[str, ...] = ()


CONTENDERS: dict[str, Contender] = {}
BENCHMARKS: dict[str, dict[str, BenchFn]] = {name: {} for name in METRICS if name != INIT}


def add_contender(contender: Contender) -> Contender:
    """Registers a contender (a column); returns it."""
    if contender.name in CONTENDERS:
        raise ValueError(f"contender {contender.name!r} is registered twice")
    unknown = set(contender.counts) - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"{contender.name}: counts for unknown benchmarks {sorted(unknown)}")
    CONTENDERS[contender.name] = contender
    return contender


def bench(metric: str, contender: str) -> Callable[[BenchFn], BenchFn]:
    """Decorator registering ``fn(handle, n) -> value`` as ``contender``'s ``metric``."""
    if metric not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {metric!r}; add a Metric to harness.METRICS first")

    def register(fn: BenchFn) -> BenchFn:
        if contender in BENCHMARKS[metric]:
            raise ValueError(f"{metric}/{contender} is registered twice")
        BENCHMARKS[metric][contender] = fn
        return fn

    return register


# ---------------------------------------------------------------------------------------------
# Timing helpers used by the @bench functions


def warmup_count(n: int) -> int:
    """Untimed operations run before a measurement of ``n``: 5% (1,000 for 20,000)."""
    return max(10, n // 20)


def _process_cpu() -> float:
    """CPU seconds this process has used so far, all its threads (not its children)."""
    times = os.times()
    return times.user + times.system


def throughput(
    run_batch: Callable[[int], Sequence[Any]],
    n: int,
    *,
    returns_none: bool = False,
    cpu_as: str | None = None,
) -> float:
    """Operations per second of ``run_batch(n)``, after a warm-up batch.

    Args:
        run_batch: Submits ``noop(i)`` for ``i in range(k)`` and returns all ``k`` results.
        n: Number of tasks in the timed batch.
        returns_none: The operations take no argument and return None (actor pings).
        cpu_as: If set, also :func:`stash` this process's CPU microseconds per operation
            during the timed batch under this metric (a companion row).
    """
    _check(run_batch(warmup_count(n)), warmup_count(n), returns_none)
    cpu = _process_cpu()
    start = time.perf_counter()
    results = run_batch(n)
    elapsed = time.perf_counter() - start
    cpu = _process_cpu() - cpu
    _check(results, n, returns_none)
    if cpu_as is not None:
        stash(cpu_as, cpu / n * 1e6)
    return n / elapsed


def stashed_driver_cpu(_: Any, n: int) -> float:
    """The ``@bench`` of :data:`DRIVER_CPU` for any contender whose ``tiny_tasks_per_s`` calls
    ``throughput(..., cpu_as=DRIVER_CPU)``: register it with
    ``bench(DRIVER_CPU, name)(stashed_driver_cpu)``."""
    return stashed(DRIVER_CPU)


def round_trip_us(call: Callable[[int], Any], n: int, *, returns_none: bool = False) -> float:
    """Mean microseconds of ``call(i)`` over ``n`` sequential calls, after a warm-up.

    Args:
        call: Runs ``noop(i)`` remotely and waits for its result, which it returns.
        n: Number of timed calls.
        returns_none: ``call`` ignores ``i`` and its result is None (actor pings).
    """
    for i in range(warmup_count(n)):
        call(i)
    last: Any = None
    start = time.perf_counter()
    for i in range(n):
        last = call(i)
    elapsed = time.perf_counter() - start
    expected = None if returns_none else n - 1
    if last != expected:
        raise AssertionError(f"the last call returned {last!r}, not {expected!r}")
    return elapsed / n * 1e6


def _check(results: Sequence[Any], n: int, returns_none: bool = False) -> None:
    expected = [None] * n if returns_none else list(range(n))
    if list(results) != expected:
        raise AssertionError(f"wrong results for {n} no-op calls: {list(results)[:5]!r}...")


MB = 2**20


def float_array(mb: int) -> Any:
    """A float64 numpy array of ``mb`` MB holding 0, 1, 2, ... (its slice sums are exact)."""
    import numpy as np

    return np.arange(mb * MB // 8, dtype=np.float64)


def slices(length: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(lo, hi)`` bounds covering ``range(length)``."""
    return [(i * length // parts, (i + 1) * length // parts) for i in range(parts)]


def check_sums(results: Sequence[float], arr: Any, bounds: Sequence[tuple[int, int]]) -> None:
    """Raises unless ``results[i] == arr[lo:hi].sum()`` for every slice (computed here)."""
    expected = [float(arr[lo:hi].sum()) for lo, hi in bounds]
    if [float(r) for r in results] != expected:
        raise AssertionError(f"wrong slice sums: {list(results)[:3]!r}... != {expected[:3]!r}...")


def timed_rounds(run_round: Callable[[], Any], n: int, *, warmup: int = 1) -> tuple[float, Any]:
    """Median milliseconds of ``run_round()`` over ``n`` calls after ``warmup`` untimed ones.

    Returns:
        The median, and the last round's result (check it outside the clock).
    """
    for _ in range(warmup):
        run_round()
    times, last = [], None
    for _ in range(n):
        start = time.perf_counter()
        last = run_round()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, last


_STASH: dict[str, float] = {}


def stash(metric: str, value: float) -> None:
    """Keeps a companion row's value, measured by another metric's function, for
    :func:`stashed`."""
    if metric not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {metric!r}")
    _STASH[metric] = value


def stashed(metric: str) -> float:
    """The value :func:`stash`-ed for ``metric`` in this process; raises if none was."""
    if metric not in _STASH:
        raise RuntimeError(f"not measured (the benchmark that measures {metric} failed)")
    return _STASH.pop(metric)


# ---------------------------------------------------------------------------------------------
# Inside the child process


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip().rstrip(":")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so `finally: stop(handle)` runs when the parent times out


def child_main(name: str, result_file: Path) -> int:
    """Measures every benchmark of one contender once; appends JSON lines to ``result_file``.

    Returns 0 once its errors are recorded; another exit code means the child crashed.
    """
    contender = CONTENDERS[name]
    signal.signal(signal.SIGTERM, _on_sigterm)
    with result_file.open("a", buffering=1) as out:

        def emit(**record: Any) -> None:
            out.write(json.dumps(record) + "\n")

        # The clock starts before the import: a library may defer its imports to init()
        # (raylite does, so that `import raylite` stays cheap), and what a program pays to
        # get going is the import and the init together.
        start = time.perf_counter()
        try:
            for module in contender.modules:
                importlib.import_module(module)
        except ImportError as error:
            if contender.optional:
                emit(skip=_reason(error))
                return 0
            emit(metric=INIT, error=_reason(error))
            return 0
        try:
            handle = contender.start()
            first = contender.first_result(handle)
            if first != 1:
                raise AssertionError(f"noop(1) returned {first!r}")
        except Exception as error:
            traceback.print_exc()
            emit(metric=INIT, error=_reason(error))
            return 0
        emit(metric=INIT, value=time.perf_counter() - start)
        try:
            for metric, impls in BENCHMARKS.items():
                if name not in impls:
                    continue
                count = contender.counts.get(metric, METRICS[metric].count) or 0
                try:
                    emit(metric=metric, value=impls[name](handle, count), n=count)
                except Exception as error:
                    traceback.print_exc()
                    emit(metric=metric, error=_reason(error))
        finally:
            try:
                contender.stop(handle)
            except Exception as error:
                traceback.print_exc()
                emit(stop_error=_reason(error))
    return 0


# ---------------------------------------------------------------------------------------------
# In the parent: run the children, collect, aggregate


@dataclass
class Cell:
    """What the runs of one contender measured for one metric."""

    values: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)  # the round (1, 2, ...) of each value
    errors: list[str] = field(default_factory=list)
    n: int | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


@dataclass
class Results:
    """Everything one ``run.py`` invocation measured."""

    contenders: list[str]
    repeats: int
    cells: dict[str, dict[str, Cell]]  # contender -> metric -> cell
    skipped: dict[str, str] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)  # failures after every measurement


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Workers of every library (Ray's and dask's included) must import bench_tasks by name.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "")


def run_child(name: str, workdir: Path, timeout: float) -> tuple[list[dict[str, Any]], str | None]:
    """Runs one contender once in a fresh process.

    Returns:
        The JSON records it wrote, and why it failed as a whole (timeout, crash) or None.
    """
    result_file = workdir / f"{name}.jsonl"
    log_file = workdir / f"{name}.log"
    result_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(BENCH_DIR / "run.py"),
        "--child",
        name,
        "--result-file",
        str(result_file),
    ]
    failure: str | None = None
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            command,
            cwd=BENCH_DIR.parent,
            env=_child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
            if rc != 0:
                failure = f"exit code {rc}: {_last_line(log_file)}"[:300]
        except subprocess.TimeoutExpired:
            failure = f"timeout after {timeout:g} s"
            _kill_group(proc)
    records = []
    if result_file.exists():
        records = [json.loads(line) for line in result_file.read_text().splitlines() if line]
    return records, failure


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_all(names: list[str], repeats: int, timeout: float) -> Results:
    """Runs each contender ``repeats`` times, sequentially, interleaving contenders per round."""
    results = Results(names, repeats, {n: {m: Cell() for m in METRICS} for n in names})
    with tempfile.TemporaryDirectory(prefix="raylite-bench-") as tmp:
        for repeat in range(1, repeats + 1):
            for name in names:
                if name in results.skipped:
                    continue
                began = time.perf_counter()
                records, failure = run_child(name, Path(tmp), timeout)
                _collect(results, name, records, failure, repeat)
                errors = sum("error" in record for record in records)
                status = (
                    "skipped"
                    if name in results.skipped
                    else failure or (f"{errors} error(s)" if errors else "ok")
                )
                print(
                    f"[run {repeat}/{repeats}] {name:<16} {time.perf_counter() - began:6.1f} s"
                    f"  {status}",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(0.5)  # let the last pool's processes finish exiting
    return results


def _collect(
    results: Results, name: str, records: list[dict[str, Any]], failure: str | None, run: int
) -> None:
    cells = results.cells[name]
    seen: set[str] = set()
    init_ok = False
    for record in records:
        if "skip" in record:
            results.skipped[name] = record["skip"]
            return
        if "stop_error" in record:
            results.incidents.append(
                f"{name}: shutdown failed in run {run}: {record['stop_error']}"
            )
            continue
        metric = record["metric"]
        seen.add(metric)
        if "error" in record:
            cells[metric].errors.append(record["error"])
        else:
            cells[metric].values.append(float(record["value"]))
            cells[metric].rounds.append(run)
            cells[metric].n = record.get("n")
            init_ok = init_ok or metric == INIT
    unseen = [m for m in METRICS if m not in seen and runs(name, m)]
    if failure and not unseen:
        results.incidents.append(f"{name}: run {run} failed after its measurements: {failure}")
    for metric in unseen:
        if INIT in seen and not init_ok:
            reason = INIT_FAILED
        else:
            reason = failure or "no result recorded"
        cells[metric].errors.append(reason)


def runs(contender: str, metric: str) -> bool:
    """Whether ``contender`` measures ``metric`` (every contender measures init)."""
    return metric == INIT or contender in BENCHMARKS[metric]

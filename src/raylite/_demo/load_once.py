"""The load-once section: a table of a few hundred MB, loaded once from a real database and
shared with every worker through ``put``, against loading it in every task and against
passing it as an argument each time.

The data source is SQLite (the standard library's ``sqlite3``): a table ``embeddings(id,
vec)`` of float32 vectors, made on the demo's first run in the cache folder (see
``DemoConfig.cache``) and reused after. Loading goes through :class:`Source`, two methods
any client can provide, so a search engine's scroll API or a Postgres cursor drops in::

    driver:  SQLiteSource.batches() ─> load_table() ─> numpy array ─> raylite.put ─┐
                                                                    one segment │
    workers: score(table_ref, queries) <─ a read-only view of that segment ─────┘

Each task reports how much its worker's private memory grew while it holds the table (its
anonymous memory: a copy of its own counts, a view of the shared segment does not), so the
table shows memory as well as time.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from .common import (
    NOISY,
    DemoConfig,
    Run,
    bar,
    format_table,
    get_with_bar,
    noisy,
    plural,
    repeat_ways,
    step,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Source", "SQLiteSource", "load_once_section", "load_table", "make_database"]

# The table: _ROWS * scale vectors of _DIM float32s (512 bytes each: ~205 MB at scale 1).
_ROWS = 400_000
_DIM = 128
_BATCH = 10_000  # rows per INSERT / fetch: big enough to amortize, small enough for a bar
# Query vectors per task: few, so a task's time is mostly getting at the table (~50 ms of
# arithmetic against ~0.1 s for a copy of the table and ~1 s to load it, on 2 cores).
_QUERIES = 2
_MAX_CPUS = 4  # "load in every task" holds a copy per running task: cap the copies at once


class Source(Protocol):
    """Where the table comes from: any client that can count rows and hand them in batches.

    A Postgres source is the same as :class:`SQLiteSource` with ``psycopg.connect(dsn)`` in
    place of ``sqlite3.connect`` (both are DB-API cursors); a search-engine source pages
    through the index with its scroll/search-after API and stacks each page's vectors.
    """

    def count(self) -> int:
        """How many rows the table has."""
        ...

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """The rows in order, as float32 arrays of shape ``(at most size, dim)``."""
        ...


@dataclass(frozen=True, slots=True)
class SQLiteSource:
    """The demo's table in a SQLite file (read-only).

    Attributes:
        path: The database file :func:`make_database` made.
    """

    path: Path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)

    def count(self) -> int:
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def batches(self, size: int) -> Iterator[np.ndarray]:
        import numpy as np

        with closing(self._connect()) as db:
            cursor = db.execute("SELECT vec FROM embeddings ORDER BY id")
            while rows := cursor.fetchmany(size):
                yield np.frombuffer(b"".join(row[0] for row in rows), dtype=np.float32).reshape(
                    len(rows), -1
                )


def make_database(path: Path, rows: int, dim: int = _DIM) -> None:
    """Writes ``rows`` random float32 vectors of ``dim`` into a new SQLite file at ``path``.

    Written to a temporary file first and renamed at the end, so an interrupted run leaves
    no half-made table behind. ~300 MB/s here: no journal, no fsync until the end.
    """
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    rng = np.random.default_rng(0)
    try:
        with closing(sqlite3.connect(partial)) as db:
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute("CREATE TABLE embeddings (id INTEGER PRIMARY KEY, vec BLOB NOT NULL)")
            starts = range(0, rows, _BATCH)
            for start in bar(starts, "making the table", len(starts)):
                block = rng.random((min(_BATCH, rows - start), dim), dtype=np.float32)
                db.executemany(
                    "INSERT INTO embeddings VALUES (?, ?)",
                    ((start + i, vec.tobytes()) for i, vec in enumerate(block)),
                )
            db.commit()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_table(source: Source, dim: int = _DIM) -> np.ndarray:
    """Reads every row of ``source`` into one float32 array of shape ``(rows, dim)``."""
    import numpy as np

    table = np.empty((source.count(), dim), dtype=np.float32)
    filled = 0
    batches = source.batches(_BATCH)
    for batch in bar(batches, "loading", -(-len(table) // _BATCH)):
        table[filled : filled + len(batch)] = batch
        filled += len(batch)
    return table


def _own_memory() -> int:
    """This process's private memory in bytes: its anonymous pages on Linux.

    Not USS: a shared segment that only this worker maps at the moment (the driver writes
    ``put`` data with ``pwrite`` and keeps no mapping) counts as "unique" there although it
    is no copy. Elsewhere, USS (psutil) is the closest measure there is.
    """
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.Process().memory_full_info().uss)


def _best_rows(table: np.ndarray, queries: np.ndarray) -> int:
    """Each query's best row (largest dot product), summed: a checksum of the answers."""
    return int((table @ queries.T).argmax(axis=0).sum())


def _held(table: np.ndarray) -> int:
    """This process's private memory once it has read every page of ``table`` (a sum: no copy, no BLAS
    buffers, which a first matrix product in a process adds and keeps)."""
    table.sum()
    return _own_memory()


def score(table: np.ndarray, queries: np.ndarray) -> tuple[int, int]:
    """Scores ``queries`` against ``table``; returns the checksum and how much this
    process's private memory grew by reading the table: a view of shared pages that
    another process maps too adds nothing; a copy of its own adds the table's size."""
    before = _own_memory()
    grown = _held(table) - before
    return _best_rows(table, queries), grown


def load_and_score(source: Source, queries: np.ndarray) -> tuple[int, int]:
    """:func:`score` on a table this task loads itself, as a task without ``put`` must."""
    before = _own_memory()
    table = load_table(source)
    grown = _held(table) - before
    return _best_rows(table, queries), grown


@dataclass(frozen=True, slots=True)
class _Way:
    name: str
    why: str
    run: Callable[[], tuple[int, int]]  # -> (checksum, the most a worker's private memory grew)


class _Measured:
    """Runs a way once per call, timing it and keeping the most a worker's private memory grew in a
    task by getting at the table."""

    def __init__(self, run: Callable[[], tuple[int, int]]) -> None:
        self._run = run
        self.uss = 0

    def __call__(self) -> Run:
        start = time.perf_counter()
        answer, uss = self._run()
        self.uss = max(self.uss, uss)
        return Run(answer=answer, seconds=time.perf_counter() - start)


def load_once_section(config: DemoConfig, out: TextIO) -> None:
    """Loads the demo's SQLite table once (making it on the first run), then scores queries
    against it three ways on raylite tasks; prints time and worker memory for each.

    Args:
        config: CPUs (at most 4 used here), work scale (the table's rows), repeats and the
            cache folder.
        out: Where to print the table.

    Raises:
        DemoError: If the three ways do not find the same best rows.
    """
    import numpy as np

    import raylite  # lazily: the building blocks run without the runtime

    rows = max(1_000, round(_ROWS * config.scale))
    cpus = min(config.cpus, _MAX_CPUS)
    n_tasks = 2 * cpus
    size_mb = rows * _DIM * 4 / 1e6
    print(f"Load once, share with all: a {size_mb:,.0f} MB table from SQLite", file=out)
    path = config.cache() / f"demo-embeddings-{rows}x{_DIM}.sqlite"
    if path.exists():
        print(f"  the table: {path} (made on an earlier run; delete it to remake it)", file=out)
    else:
        step(out, f"making the table, once: {rows:,} rows into {path}")
        start = time.perf_counter()
        make_database(path, rows)
        print(f"    made in {time.perf_counter() - start:.1f} s", file=out)
    source = SQLiteSource(path)
    step(out, "loading it in the driver")
    start = time.perf_counter()
    table = load_table(source)
    load_seconds = time.perf_counter() - start
    rng = np.random.default_rng(1)
    queries = [rng.random((_QUERIES, _DIM), dtype=np.float32) for _ in range(n_tasks)]
    print(
        f"  {n_tasks} tasks on {plural(cpus, 'CPU')}, each scoring {_QUERIES} queries against "
        f"every row; each way {plural(config.repeats, 'time')}",
        file=out,
    )

    raylite.init(num_cpus=cpus)
    try:
        remote_score = raylite.remote(score)
        remote_load_and_score = raylite.remote(load_and_score)

        def run_refs(refs: list[Any], desc: str) -> tuple[int, int]:
            results = get_with_bar(refs, desc)
            return sum(r[0] for r in results), max(r[1] for r in results)

        def put_once() -> tuple[int, int]:
            ref = raylite.put(table)
            return run_refs([remote_score.remote(ref, q) for q in queries], "put once")

        def load_in_each() -> tuple[int, int]:
            refs = [remote_load_and_score.remote(source, q) for q in queries]
            return run_refs(refs, "load in every task")

        def as_argument() -> tuple[int, int]:
            refs = [remote_score.remote(table, q) for q in queries]
            return run_refs(refs, "argument each time")

        ways = [
            _Way("put once, share the ref", "one copy in shared memory, mapped by every "
                 "worker: nothing to load or copy per task", put_once),
            _Way("load in every task", f"each task reads {size_mb:,.0f} MB from SQLite and "
                 "holds its own copy", load_in_each),
            _Way("pass the array each time", f"a new {size_mb:,.0f} MB copy in shared memory "
                 "for every task, held by the worker that runs it", as_argument),
        ]  # fmt: skip
        # A fresh worker's first scoring pays one-time costs (imports, BLAS's thread
        # buffers) that would show up in the first way's time.
        step(out, "warming up the workers (not timed)")
        put_once()
        measured = {way.name: _Measured(way.run) for way in ways}
        timed = repeat_ways(dict(measured), config.repeats, out, work="scoring the queries")
        results = [(way, timed[way.name], measured[way.name].uss) for way in ways]
    finally:
        raylite.shutdown()
    baseline = results[0][1]
    table_rows = [
        ["load it in the driver, once", f"{load_seconds:.2f} s", "", "", "",
         "the one read of the database, before the ways below"],
    ]  # fmt: skip
    for way, runs, uss in results:
        table_rows.append([
            way.name, f"{runs.seconds:.2f} s", runs.spread(),
            f"{runs.seconds / baseline.seconds:.1f}x" if baseline.seconds > 0 else "-",
            f"{uss / 2**20:,.0f} MB", way.why,
        ])  # fmt: skip
    print(file=out)
    header = ["way", "wall (median)", "spread", "time vs put", "worker +memory", "why"]
    print(format_table(header, table_rows, "<>>>><"), file=out)
    print(file=out)
    print(
        "  worker +memory: the most a worker's private (anonymous) memory grew in a task to read the table",
        file=out,
    )
    if noisy(runs for _, runs, _ in results):
        print(NOISY, file=out)
    print(
        f"  answer: the same best rows all three ways ({len(queries) * _QUERIES} queries)",
        file=out,
    )

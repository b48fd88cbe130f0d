"""raylite's benchmark suite: raylite against Ray, multiprocessing, ProcessPoolExecutor,
joblib and dask, all on 2 worker processes.

Measured, per contender (see ``harness.METRICS``):

- ``init_to_first_result`` (s): from just before the library's import, through ``init()`` /
  pool creation, until the result of a trivial task ``noop(1)`` is in hand. Imports and worker
  start-up are included (raylite defers most of its imports to ``init``); interpreter
  start-up is not.
- ``tiny_tasks_per_s``: with the pool up, after a warm-up of 1,000 tasks, submit 20,000
  no-op tasks ``noop(i) -> i`` asynchronously, then get all results: 20,000 / elapsed.
- ``driver_cpu_us_per_tiny_task``: measured in the same timed batch, the driver process's
  CPU time (all its threads: ``os.times()`` user + system) over the batch, / 20,000. Ray: its
  driver process only (raylet, GCS and workers are other processes); multiprocessing: the
  parent process (its result and task handler threads included).
- ``sync_round_trip_us``: ``get(f.remote(i))`` (or the library's equivalent) in a loop,
  2,000 calls after a warm-up of 100: mean microseconds per call.

Slow peers run fewer operations (Ray: 2,000 tiny tasks and 200 sync calls; dask: 4,000 and
400; joblib: 400 sync calls); their values are still per task / per call. The notes under
the table say so.

Actors (issue 4), raylite and Ray only, default actors (no ``num_cpus``) called from the
driver; they run after the task rows and before the object store's:

- ``actors_1000_create_call_twice_s``: create 1,000 actors of a class with a counter, ``get``
  one call of each, then a second call of each; wall time. Ray creates 20 (each of its actors
  is a process: ~0.45 s and ~40 MB each here), so this total is not ranked; the companion
  ``actor_create_call_twice_ms_per_actor`` (the same time / actors) is.
- ``actors_1000_worker_processes``: worker processes alive right after (psutil, live
  descendants of the driver; task workers included). raylite: all but the zygote, the
  driver's only child (task workers and actor hosts; a worker's command line is the
  driver's). Ray: those titled ``ray::*`` except its two agents (``ray::IDLE`` workers and
  one ``ray::Counter`` per actor). Not ranked (Ray's is for 20 actors).
- ``actors_memory_mb``: total PSS of the driver's live descendants at the same moment (Ray:
  gcs_server, raylet, dashboard and agents too), not ranked; ``actor_memory_mb_per_actor``:
  its growth from just before the actors were created, per actor, ranked.
- ``async_actor_calls_per_s``: one async actor (``async def ping(self): return None``);
  after 1,000 warm-up calls, submit 20,000 calls, then get all (Ray: 2,000).
- ``sync_actor_call_us``: ``get(a.ping.remote())`` in a loop on a plain actor, 2,000 calls
  after 100 warm-up ones; mean microseconds per call (Ray: 500).

The object store (issue 3), on float64 arrays built before the clock (1 MB = 2**20 bytes),
raylite and Ray unless noted; each value is the median of repeats within one process, and
each object is freed (``del`` of its last ref) before the next:

- ``put_100mb_ms``: ``put`` of a 100 MB array, 10 repeats. Two companion rows come from the
  same loop: ``numpy_copy_100mb_ms``, ``arr.copy()`` of the same array timed just before each
  put (the baseline), and ``put_over_numpy_copy``, the ratio of the two medians (issue 3's
  target for raylite: <= 1.5). Both are per-process references, not ranked against peers.
- ``get_100mb_in_worker_us``: a task times ``get(refs[0])`` of a freshly put 100 MB array,
  the ref passed inside a list so the library does not resolve it first; 10 repeats.
- ``fanout_64_tasks_200mb_ms``: a 200 MB array shared once (untimed), then 64 tasks each
  summing a 1/64 slice, all results gathered; wall time, 5 rounds after one warm-up, sums
  checked afterwards. raylite/Ray: ``put`` then the ref as a top-level argument;
  multiprocessing: the array a module global before a fork ``Pool(2)`` starts, tasks get
  ``(lo, hi)``; joblib: the array passed to every task (joblib memory-maps it).
- ``worker_uss_growth_mb``: a task's USS (psutil) after ``get`` and ``sum()`` of a freshly put
  100 MB array, minus before; 5 repeats. Companion ``worker_anon_growth_mb``: the task's
  growth in anonymous memory, which is what a private copy would add. They differ when the
  task is the only process mapping the object's shared pages: the kernel counts such pages
  as private (so in USS) although they are not copies and outlive the task.

After the table, the ratios and their gate (``gate.py``). Per ranked figure and per
reference peer, ``multiprocessing.Pool`` and Ray (where the peer measures the figure),
raylite's ratio to the peer is computed *per round* (round i's raylite vs round i's peer;
>1 means raylite is better), giving a median, quartiles and a min-max range over the
rounds. The gate compares each with the last recorded ratio (``benchmarks/recorded.json``,
committed: per figure and peer the median, quartiles, min, max and rounds, plus the cores,
load average at start and end, date and commit of the run that made it):

- *noise* = twice the larger of the recorded run's spread and this run's, where a run's
  spread is half the interquartile range of its per-round ratios (robust to one round hit
  by a burst of load, which the min-max range is not). Each median may be off by its
  spread, the two in opposite directions (twice); a run of few rounds can measure too
  small a spread (the larger). At least 5% of the recorded median (``gate.MIN_NOISE``:
  rounds that happen to agree measure no spread).
- A ratio *fails* when its median is below the recorded median by more than the noise. The
  run then exits 1, naming each failing figure and peer with both ratios and the noise.
- A peer not installed or with no value is *skipped* with a note, never failed; a figure
  raylite failed to measure fails if the record has it. A ratio the record lacks is *new*.
  A record made on a machine with another number of cores is not compared (all new).
- The record is written when the gate passes (and the record, if any, came from a machine
  with as many cores): the measured ratios replace the recorded ones, others are kept.
  ``--no-record`` never writes it; ``--record`` writes it even if the gate failed or the
  record came from another machine (to accept a change or start a machine's record).

After the ratios, the drop-ins (``dropins.py``): raylite's ``multiprocessing.Pool``, joblib
backend and Dask scheduler against the libraries they stand in for, each pair interleaved
in one process (``--no-dropins`` skips them; ``python benchmarks/dropins.py`` runs them
alone).

How: each (contender, repeat) runs in its own fresh subprocess (``run.py --child NAME``),
sequentially, never two at once; repeats interleave the contenders (round 1: all of them,
round 2: all of them, ...) so machine noise spreads evenly. The table shows medians over
the repeats (default 5, ``--quick`` 2), and a "raylite vs best peer" ratio where >1 means
raylite is better (rates: raylite/peer; times: peer/raylite). A contender that raises or
runs past ``--timeout`` gets an ``error: ...`` cell and the run goes on; an optional one that
is not installed is skipped with a note.

Usage:
    python benchmarks/run.py                       # all contenders, 5 repeats
    python benchmarks/run.py --quick               # 2 repeats
    python benchmarks/run.py --only raylite,multiprocessing --json results.json
    python benchmarks/run.py --no-dropins          # the contenders' table and the gate only
    python benchmarks/run.py --no-record           # gate against the record, never update it

To add a benchmark, see ``harness.py``; contenders live in ``benchmarks/contenders/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import contenders
import gate
import harness
import report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="raylite vs its peers: task overheads, actors and the object store."
    )
    parser.add_argument("--quick", action="store_true", help="2 repeats instead of 5")
    parser.add_argument("--repeats", type=int, metavar="R", help="repeats per contender")
    parser.add_argument(
        "--only",
        metavar="NAME,...",
        help=f"contenders to run (default all: {','.join(contenders.ORDER)})",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds one contender's subprocess may run (default 300)",
    )
    parser.add_argument(
        "--no-dropins", action="store_true", help="skip the drop-in comparisons (dropins.py)"
    )
    record = parser.add_mutually_exclusive_group()
    record.add_argument(
        "--record",
        dest="record",
        action="store_const",
        const=True,
        default=None,
        help="write this run's ratios to benchmarks/recorded.json even if the gate fails or "
        "the record came from a machine with another number of cores (default: write them "
        "only when the gate passes on a machine like the record's)",
    )
    record.add_argument(
        "--no-record",
        dest="record",
        action="store_const",
        const=False,
        help="never write benchmarks/recorded.json",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return harness.child_main(args.child, args.result_file)
    known = [n for n in contenders.ORDER if n in harness.CONTENDERS]
    known += [n for n in harness.CONTENDERS if n not in known]
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else known
    unknown = [n for n in names if n not in harness.CONTENDERS]
    names = [n for n in known if n in names]  # the table's column order is always the same
    if unknown or not names:
        print(
            f"run.py: error: unknown contender(s) {unknown}; choose from {','.join(known)}",
            file=sys.stderr,
        )
        return 2
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        print("run.py: error: --repeats must be at least 1", file=sys.stderr)
        return 2
    load_at_start = os.getloadavg()[0]
    results = harness.run_all(names, repeats, args.timeout)
    machine = report.machine_info()
    print(report.format_report(results, machine))
    data = report.to_json(results, machine)
    failed = check_ratios(results, load_at_start, args.record, gate.RECORD, data)
    if not args.no_dropins:
        print()
        data["dropins"] = run_dropins(rounds=3 if args.quick else 7, timeout=args.timeout * 3)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if failed:
        print(f"\nrun.py: the ratio gate failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def check_ratios(
    results: harness.Results,
    load_at_start: float,
    choice: bool | None,
    record_path: Path,
    data: dict[str, object],
) -> list[str]:
    """Prints the ratio table and the gate's verdicts, updates the record at ``record_path``
    as ``choice`` says (see :func:`gate.decide_record`) and adds the verdicts to ``data``.

    Returns:
        ``"figure vs peer"`` for each ratio that failed the gate.
    """
    measured = gate.measure(results, gate.machine_facts(load_at_start))
    record = gate.load_record(record_path)
    verdicts = gate.judge(measured, record)
    print()
    print(gate.format_gate(verdicts, record))
    write, what = gate.decide_record(choice, record, measured, verdicts)
    if write:
        record_path.write_text(json.dumps(gate.updated(record, measured), indent=2) + "\n")
    print(what)
    data["gate"] = [
        {
            "figure": v.figure,
            "peer": v.peer,
            "status": v.status,
            "now": v.now.to_json() if v.now else None,
            "recorded": v.recorded.to_json() if v.recorded else None,
            "noise": v.noise,
            "note": v.note,
        }
        for v in verdicts
    ]
    return [f"{v.figure} vs {v.peer}" for v in gate.failures(verdicts)]


def run_dropins(rounds: int, timeout: float) -> dict[str, object] | None:
    """Runs ``dropins.py`` in a fresh subprocess, prints its table; its JSON, or None."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dropins.json"
        command = [sys.executable, str(harness.BENCH_DIR / "dropins.py")]
        command += ["--rounds", str(rounds), "--json", str(out)]
        try:
            subprocess.run(command, check=True, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"drop-ins: failed ({exc})")
            return None
        loaded: dict[str, object] = json.loads(out.read_text())
        return loaded


if __name__ == "__main__":
    sys.exit(main())

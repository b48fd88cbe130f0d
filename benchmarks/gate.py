"""The ratio gate of ``make bench``: raylite's ratio to each reference peer, per round, against
the last recorded ones.

::

    harness.Results (per contender, metric: values + their rounds)
        -> measure()       per (figure, peer): the ratio of each round -> Ratio (median, IQR)
        -> judge(record)   per (figure, peer): pass / fail / new / skipped, with the noise
        -> format_gate()   the ratio table and the verdicts (printed by run.py)
        -> updated(record) the new record (run.py writes it as decide_record() says)

A *ratio* is raylite's value over a peer's with >1 meaning raylite is better (rates:
raylite/peer, times: peer/raylite; :func:`report.advantage`). Rounds are interleaved (round
i runs every contender once, one after the other), so round i's raylite is divided by round
i's peer: the machine's slow minutes hit both sides of a ratio alike. Over the rounds where
both measured, a ratio has a median, a min-max range (shown) and a spread, half its
interquartile range (the noise the gate allows, see :meth:`Ratio.spread`).

The peers are :data:`PEERS` (``multiprocessing.Pool`` and Ray), on every ranked figure
(``Metric.compare``) the peer measures too. The record (:data:`RECORD`, committed) holds,
per figure and peer, the median, quartiles, min, max and rounds of the run that made it,
and that run's machine: cores, load average at its start and end, date and commit. Its
``ratios`` are keyed ``figure -> peer``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import BENCH_DIR, METRICS, SUBJECT, Results, runs
from report import advantage, fmt

PEERS: tuple[str, ...] = ("multiprocessing", "ray")
"""The peers every ranked figure is gated against (where they measure it)."""
RECORD = BENCH_DIR / "recorded.json"
"""The committed record of the last run that passed."""
MIN_NOISE = 0.05
"""The least noise a comparison allows, as a fraction of the recorded median: rounds that
happen to agree (or a single round) measure no spread, yet a rerun here moves by a few %."""

Key = tuple[str, str]  # (figure, peer)


@dataclass(frozen=True, kw_only=True)
class Ratio:
    """One (figure, peer) ratio over the rounds of a run.

    Attributes:
        median: Median over the rounds of round i's raylite vs round i's peer.
        low: Smallest of those per-round ratios.
        high: Largest.
        q1: Their first quartile (``statistics.quantiles``, inclusive).
        q3: Their third quartile.
        rounds: How many rounds had both values.
    """

    median: float
    low: float
    high: float
    q1: float
    q3: float
    rounds: int

    @property
    def spread(self) -> float:
        """Half the interquartile range over the rounds: how far a typical round strays from
        the median. Not the min-max range: one round hit by a burst of load would widen it
        to where the gate catches nothing (measured here: 0.49 on a ratio of 0.69 for tiny
        tasks vs Pool, where the quartiles give 0.14)."""
        return (self.q3 - self.q1) / 2

    @classmethod
    def of(cls, per_round: list[float]) -> Ratio:
        """The ratio of a run from its per-round ratios (at least one)."""
        q1, _, q3 = (
            statistics.quantiles(per_round, n=4, method="inclusive")
            if len(per_round) > 1
            else per_round * 3
        )
        return cls(
            median=statistics.median(per_round),
            low=min(per_round),
            high=max(per_round),
            q1=q1,
            q3=q3,
            rounds=len(per_round),
        )

    def to_json(self) -> dict[str, float]:
        """For the record: 4 significant digits, far finer than the noise here."""
        return {
            "median": _digits(self.median),
            "q1": _digits(self.q1),
            "q3": _digits(self.q3),
            "min": _digits(self.low),
            "max": _digits(self.high),
            "rounds": self.rounds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ratio:
        return cls(
            median=float(data["median"]),
            low=float(data["min"]),
            high=float(data["max"]),
            q1=float(data["q1"]),
            q3=float(data["q3"]),
            rounds=int(data["rounds"]),
        )

    def __str__(self) -> str:
        return f"{fmt(self.median)}x [{fmt(self.low)}-{fmt(self.high)}]"


def _digits(value: float) -> float:
    return float(f"{value:.4g}")


@dataclass
class Measured:
    """What one run gives the gate.

    Attributes:
        ratios: Per (figure, peer), the run's ratio.
        skipped: Per (figure, peer) with no ratio because of the peer (not installed, failed):
            why. A note, never a failure.
        broken: Per (figure, peer) with no ratio because raylite measured nothing: why.
            A failure where the record has that ratio.
        machine: ``cores``, ``usable_cores``, ``load`` ([1-minute load average at the start,
            at the end]), ``date`` (UTC), ``commit`` (of the code measured).
        repeats: Rounds of the run.
    """

    ratios: dict[Key, Ratio] = field(default_factory=dict)
    skipped: dict[Key, str] = field(default_factory=dict)
    broken: dict[Key, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    repeats: int = 0


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The gate's answer for one (figure, peer).

    Attributes:
        figure: Metric name.
        peer: Contender name.
        status: ``pass``, ``fail``, ``new`` (no recorded ratio yet) or ``skipped``.
        now: This run's ratio, if any.
        recorded: The record's ratio, if any.
        noise: The allowed drop: ``max(2 * max(recorded.spread, now.spread), MIN_NOISE *
            recorded.median)``, where both are known.
        note: Why it failed or was skipped, for the report.
    """

    figure: str
    peer: str
    status: str
    now: Ratio | None = None
    recorded: Ratio | None = None
    noise: float | None = None
    note: str = ""


def machine_facts(load_at_start: float) -> dict[str, Any]:
    """The machine facts a record keeps: call at the end of the run."""
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": _commit(),
    }


def _commit() -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it; ``unknown``
    outside a git checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def measure(results: Results, machine: dict[str, Any]) -> Measured:
    """Per ranked figure and peer of :data:`PEERS` in the run: the per-round ratios."""
    measured = Measured(machine=machine, repeats=results.repeats)
    if SUBJECT not in results.cells:
        return measured
    for figure, metric in METRICS.items():
        if not metric.compare:
            continue
        mine = results.cells[SUBJECT][figure]
        own = dict(zip(mine.rounds, mine.values, strict=True))
        for peer in PEERS:
            if peer not in results.contenders or not runs(peer, figure):
                continue
            key = (figure, peer)
            theirs = results.cells[peer][figure]
            if not (mine.values or mine.errors or theirs.values or theirs.errors):
                continue  # neither ran it (only in a partial set of results)
            if peer in results.skipped:
                measured.skipped[key] = f"{peer} skipped ({results.skipped[peer]})"
                continue
            if not own:
                why = mine.errors[0] if mine.errors else "no value"
                measured.broken[key] = f"{SUBJECT} measured nothing ({why})"
                continue
            per_round = [
                ratio
                for run, value in zip(theirs.rounds, theirs.values, strict=True)
                if run in own and (ratio := advantage(figure, own[run], value)) is not None
            ]
            if per_round:
                measured.ratios[key] = Ratio.of(per_round)
            else:
                why = theirs.errors[0] if theirs.errors else "no round where both measured"
                measured.skipped[key] = f"no {peer} value ({why})"
    return measured


def load_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None if there is none yet."""
    try:
        loaded = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise ValueError(
            f"{path} is not a bench record ({error}): restore it from git, or delete it and "
            "the next run that passes writes a new one"
        ) from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("ratios"), dict):
        raise ValueError(
            f"{path} is not a bench record (no 'ratios' object): restore it from git, or "
            "delete it and the next run that passes writes a new one"
        )
    return loaded


def comparable(record: Mapping[str, Any] | None, measured: Measured) -> str | None:
    """Why ``record`` cannot judge this run (made on another number of cores), or None."""
    if record is None:
        return None
    then, now = record.get("machine", {}).get("cores"), measured.machine.get("cores")
    if then != now:
        return (
            f"the record was made on {then} cores and this machine has {now}: ratios are "
            "not compared (run with --record to make this machine's record)"
        )
    return None


def judge(measured: Measured, record: Mapping[str, Any] | None) -> list[Verdict]:
    """Compares the run's ratios with the record's; one verdict per (figure, peer) of either.

    A ratio fails when its median is below the recorded median by more than the noise,
    ``max(2 * max(recorded spread, this run's spread), MIN_NOISE * recorded median)``
    (spread: half the interquartile range over a run's rounds). Each median may be off by
    its run's spread, the two in opposite directions: hence twice; and the larger of the
    two, because a run of few rounds (``--quick``: 2) can measure too small a spread. A peer with no value is skipped with a note; a
    figure raylite failed to measure fails if the record has it. Without a record (or one
    from a machine with another number of cores) every ratio is ``new``.
    """
    mismatch = comparable(record, measured)
    recorded: dict[Key, Ratio] = {}
    if record is not None and mismatch is None:
        for figure, peers in record.get("ratios", {}).items():
            for peer, data in peers.items():
                recorded[(figure, peer)] = Ratio.from_json(data)
    verdicts = []
    keys = [*measured.ratios, *measured.skipped, *measured.broken]
    keys += [key for key in recorded if key not in keys]
    for key in sorted(keys, key=_table_order):
        figure, peer = key
        then, now = recorded.get(key), measured.ratios.get(key)
        common: dict[str, Any] = {"figure": figure, "peer": peer, "now": now, "recorded": then}
        if key in measured.skipped:
            verdicts.append(Verdict(**common, status="skipped", note=measured.skipped[key]))
        elif key in measured.broken:
            status = "fail" if then is not None else "skipped"
            verdicts.append(Verdict(**common, status=status, note=measured.broken[key]))
        elif now is None:
            verdicts.append(Verdict(**common, status="skipped", note="not run this time"))
        elif then is None:
            verdicts.append(Verdict(**common, status="new", note=mismatch or ""))
        else:
            noise = max(2 * max(then.spread, now.spread), MIN_NOISE * then.median)
            drop = then.median - now.median
            if drop > noise:
                note = f"down {drop:.3g} from the record, more than the noise {noise:.3g}"
                verdicts.append(Verdict(**common, status="fail", noise=noise, note=note))
            else:
                verdicts.append(Verdict(**common, status="pass", noise=noise))
    return verdicts


def _table_order(key: Key) -> tuple[int, int]:
    figures, peers = list(METRICS), list(PEERS)
    figure, peer = key
    return (
        figures.index(figure) if figure in figures else len(figures),
        peers.index(peer) if peer in peers else len(peers),
    )


def failures(verdicts: list[Verdict]) -> list[Verdict]:
    """The verdicts that fail the run."""
    return [v for v in verdicts if v.status == "fail"]


def decide_record(
    choice: bool | None,
    record: Mapping[str, Any] | None,
    measured: Measured,
    verdicts: list[Verdict],
) -> tuple[bool, str]:
    """Whether to write the record after this run, and a line saying what happened to it.

    Args:
        choice: ``--record`` (True: write it even if the gate failed or the record came from
            a machine with another number of cores, to accept a change), ``--no-record``
            (False: never), or neither (None, the default: write it when the gate passed and
            the record, if any, came from a machine with as many cores).
        record: The record before this run.
        measured: This run's ratios.
        verdicts: The gate's verdicts on them.
    """
    if choice is False:
        return False, "record not updated (--no-record)"
    if not measured.ratios:
        return False, "record not updated: this run measured no ratio"
    if choice is None:
        if failures(verdicts):
            return False, (
                "record not updated: the gate failed (--record accepts this run as the new record)"
            )
        mismatch = comparable(record, measured)
        if mismatch is not None:
            return False, f"record not updated: {mismatch}"
    return True, "record updated with this run's ratios"


def updated(record: Mapping[str, Any] | None, measured: Measured) -> dict[str, Any]:
    """The record after this run: its ratios replace the recorded ones; ratios it did not
    measure (a peer not installed, ``--only``) stay as they were, unless the record was made
    on another number of cores (then it is replaced whole)."""
    ratios: dict[str, dict[str, Any]] = {}
    if record is not None and comparable(record, measured) is None:
        ratios = {figure: dict(peers) for figure, peers in record.get("ratios", {}).items()}
    for (figure, peer), ratio in sorted(measured.ratios.items(), key=lambda i: _table_order(i[0])):
        ratios.setdefault(figure, {})[peer] = ratio.to_json()
    return {
        "what": (
            "raylite's ratio to each peer (>1: raylite better), per round, over the rounds of "
            "the last `make bench` that passed the gate; see benchmarks/gate.py"
        ),
        "machine": measured.machine,
        "repeats": measured.repeats,
        "ratios": ratios,
    }


def format_gate(verdicts: list[Verdict], record: Mapping[str, Any] | None) -> str:
    """The ratio table with each verdict, then a line per failure."""
    if record is None:
        source = f"no record yet ({RECORD.name})"
    else:
        facts = record.get("machine", {})
        load = "/".join(str(x) for x in facts.get("load", []))
        source = (
            f"{RECORD.name} of {facts.get('date', '?')}, commit {facts.get('commit', '?')}, "
            f"{facts.get('cores', '?')} cores, load {load or '?'} (start/end)"
        )
    out = [
        f"Ratios, {SUBJECT} vs peer: median [min-max] over rounds of round i's {SUBJECT} vs "
        "round i's peer (>1: raylite better),",
        f"against {source}:",
        "",
    ]
    rows = [["figure", "peer", "this run", "recorded", "noise", "gate"]]
    for v in verdicts:
        rows.append(
            [
                v.figure,
                v.peer,
                str(v.now) if v.now else "-",
                str(v.recorded) if v.recorded else "-",
                f"{v.noise:.3g}" if v.noise is not None else "-",
                v.status + (f": {v.note}" if v.note else ""),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    failed = failures(verdicts)
    out.append("")
    if failed:
        for v in failed:
            out.append(f"FAILED {v.figure} vs {v.peer}: {_failure_text(v)}")
    else:
        out.append("Gate: passed (no ratio fell below its record by more than the noise).")
    return "\n".join(out)


def _failure_text(v: Verdict) -> str:
    if v.now is None:
        return f"{v.note}; recorded {v.recorded}"
    return f"{v.now} now, recorded {v.recorded}; {v.note}"

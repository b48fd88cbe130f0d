"""The report of ``run.py``: the machine, the table of medians with a "raylite vs best peer"
column, the notes, and the JSON; :func:`advantage` and :func:`fmt` are shared with ``gate.py``.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import CONTENDERS, INIT_FAILED, METRICS, SUBJECT, Results, runs


def machine_info() -> dict[str, Any]:
    """Cores, CPU, memory, Python and the versions of every contender's packages."""
    import multiprocessing

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = {"raylite", "cloudpickle", "numpy"}
    for contender in CONTENDERS.values():
        packages.update(contender.packages)
    versions: dict[str, str | None] = {}
    for package in sorted(packages):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gib = 0.0
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(memory_gib, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "mp_start_method": multiprocessing.get_start_method(),
        "versions": versions,
    }


def fmt(value: float) -> str:
    """A table cell's number: whole with thousands separators from 100 on, else 3 digits."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _cell_text(results: Results, name: str, metric: str) -> str:
    if name in results.skipped:
        return "skipped"
    if not runs(name, metric):
        return "-"
    cell = results.cells[name][metric]
    if cell.median is not None:
        return fmt(cell.median) + ("*" if cell.errors else "")
    if not cell.errors:
        return "-"
    short = cell.errors[0].split(":", 1)[0]
    return f"error: {short}"


def versus_best_peer(results: Results, metric: str) -> tuple[float, str] | None:
    """``(ratio, peer)`` with ratio > 1 meaning raylite is better than the best other."""
    if SUBJECT not in results.cells or not METRICS[metric].compare:
        return None
    own = results.cells[SUBJECT][metric].median
    peers = {
        name: cells[metric].median
        for name, cells in results.cells.items()
        if name != SUBJECT and name not in results.skipped and cells[metric].median is not None
    }
    if own is None or not peers:
        return None
    higher = METRICS[metric].higher_is_better
    peer = (max if higher else min)(peers, key=lambda p: peers[p] or 0.0)
    value = advantage(metric, own, peers[peer] or 0.0)
    return None if value is None else (value, peer)


def advantage(metric: str, own: float, peer: float) -> float | None:
    """raylite's value over a peer's as a ratio where >1 means raylite is better: own/peer
    for higher-is-better metrics, peer/own for times; None unless both are positive."""
    if own <= 0 or peer <= 0:
        return None
    return own / peer if METRICS[metric].higher_is_better else peer / own


def notes(results: Results) -> list[str]:
    """Scaled-down counts, skipped contenders, errors (full text), partial failures."""
    lines = []
    for name in results.contenders:
        contender = CONTENDERS[name]
        if name in results.skipped:
            lines.append(f"{name}: skipped ({results.skipped[name]})")
            continue
        for metric, count in contender.counts.items():
            default = METRICS[metric].count
            lines.append(
                f"{name}: {metric} measured over {count:,} {METRICS[metric].counted} "
                f"instead of {default:,} (slow peer); {METRICS[metric].scaled}"
            )
        for metric, cell in results.cells[name].items():
            for error in dict.fromkeys(e for e in cell.errors if e != INIT_FAILED):
                times = cell.errors.count(error)
                where = f"{times}/{len(cell.errors) + len(cell.values)} runs"
                extra = ", * = median of the runs that worked" if cell.values else ""
                lines.append(f"{name}: {metric} failed in {where}{extra}: {error}")
    return lines + results.incidents


def format_report(results: Results, machine: dict[str, Any]) -> str:
    """The plain-text report: machine, table of medians, legend, notes."""
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    missing = ", ".join(k for k, v in machine["versions"].items() if not v)
    out = [
        f"Machine: {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{machine['cpu'] or 'unknown CPU'}, {machine['memory_gib']} GiB, {machine['platform']}",
        f"Python:  {machine['python']} (multiprocessing start method: "
        f"{machine['mp_start_method']})",
        f"Versions: {versions}" + (f"; not installed: {missing}" if missing else ""),
        f"Medians of {results.repeats} runs per contender, each run a fresh subprocess, "
        "run one at a time; 2 worker processes everywhere.",
        "",
    ]
    header = ["metric", *results.contenders, f"{SUBJECT} vs best peer"]
    rows = [header]
    for metric in METRICS.values():
        row = [f"{metric.name} ({metric.unit})"]
        row += [_cell_text(results, name, metric.name) for name in results.contenders]
        ratio = versus_best_peer(results, metric.name)
        row.append(f"{ratio[0]:.3g}x vs {ratio[1]}" if ratio else "n/a")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    out += [
        "",
        f"Ratio: higher-is-better metrics {SUBJECT}/peer, times peer/{SUBJECT}; "
        f">1 means {SUBJECT} is better.",
    ]
    out += ["", "Metrics:"] + [f"  {m.name}: {m.what}" for m in METRICS.values()]
    out += ["", "Contenders:"] + [f"  {n}: {CONTENDERS[n].api}" for n in results.contenders]
    lines = notes(results)
    if lines:
        out += ["", "Notes:"] + [f"  - {line}" for line in lines]
    return "\n".join(out)


def to_json(results: Results, machine: dict[str, Any]) -> dict[str, Any]:
    """Machine, raw values, medians, errors and ratios, for ``--json``."""
    table: dict[str, Any] = {}
    for name in results.contenders:
        table[name] = {"skipped": results.skipped.get(name)}
        for metric, cell in results.cells[name].items():
            table[name][metric] = {
                "median": cell.median,
                "values": cell.values,
                "rounds": cell.rounds,
                "errors": cell.errors,
                "n": cell.n,
            }
    ratios = {}
    for metric in METRICS:
        ratio = versus_best_peer(results, metric)
        ratios[metric] = {"ratio": ratio[0], "peer": ratio[1]} if ratio else None
    return {
        "machine": machine,
        "repeats": results.repeats,
        "metrics": {
            m.name: {
                "unit": m.unit,
                "higher_is_better": m.higher_is_better,
                "count": m.count,
                "what": m.what,
                "compare": m.compare,
            }
            for m in METRICS.values()
        },
        "results": table,
        f"{SUBJECT}_vs_best_peer": ratios,
        "notes": notes(results),
    }

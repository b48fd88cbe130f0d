"""``raylite sessions | status | list | summary | timeline | logs``: look into a running
driver from a shell, as ``ray status`` / ``ray list tasks`` / ``ray logs`` do.

The driver answers on the control socket of its session folder (see ``_local/session.py``).
Which session: the one ``--session`` names; else the only live one (``raylite sessions``
lists them); with several live, the user picks one (asked on a terminal, else told to pass
``--session``); with none, the newest, ``<root>/session_latest`` (its logs stay).

Example:
    $ raylite sessions
    $ raylite status
    $ raylite list tasks --filter state=RUNNING
    $ raylite logs worker-1234.out
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ._local.session import default_root, driver_pid, live_sessions, request

_COLUMNS = {
    "tasks": ["task_id", "name", "state", "type", "worker_pid", "duration_ms", "error_type"],
    "actors": ["actor_id", "class_name", "state", "name", "pid", "placement", "num_restarts",
               "calls_queued", "calls_running"],  # fmt: skip
    "objects": ["object_id", "object_size", "status", "in_shared_memory", "reference_type",
                "ref_count"],  # fmt: skip
    "workers": ["pid", "worker_type", "tasks_in_flight", "cpu_percent", "memory_rss",
                "memory_uss"],  # fmt: skip
}
_IDS = ("task_id", "actor_id", "object_id")  # shown by their last 16 hex digits


def _session(args: argparse.Namespace) -> Path:
    """The session the command looks at (see the module docstring)."""
    if args.session:  # a folder, or a session's name as `raylite sessions` shows it
        named = default_root() / args.session
        return named if not Path(args.session).exists() and named.exists() else Path(args.session)
    live = live_sessions(default_root())
    if len(live) == 1:
        return live[0]
    if not live:
        return default_root() / "session_latest"
    print(f"{len(live)} raylite drivers are running:", file=sys.stderr)
    print(_sessions_table(live), file=sys.stderr)
    if not sys.stdin.isatty():
        raise SystemExit(
            "raylite: pick one of them with --session SESSION (a name above, or the "
            "folder's path)."
        )
    while True:
        answer = input(f"which one (1-{len(live)})? ").strip()
        if answer.isdigit() and 1 <= int(answer) <= len(live):
            return live[int(answer) - 1]
        print(f"type a number from 1 to {len(live)}, or Ctrl-C to quit", file=sys.stderr)


def _sessions_table(sessions: list[Path]) -> str:
    """A numbered table of sessions: folder, driver pid, start time, the driver's command."""
    import psutil  # lazily: only this command needs it

    rows = []
    for i, session in enumerate(sessions, 1):
        pid = driver_pid(session)
        try:
            proc = psutil.Process(pid)
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(proc.create_time()))
            script = " ".join(proc.cmdline()[1:]) or proc.name()
        except psutil.Error:
            started, script = "?", "?"
        rows.append({"#": str(i), "session": session.name, "pid": pid, "started": started,
                     "script": script})  # fmt: skip
    return _table(rows, ["#", "session", "pid", "started", "script"])


def _run_sessions(args: argparse.Namespace) -> int:
    live = live_sessions(default_root())
    if not live:
        print(f"no raylite driver is running (sessions live in {default_root()})")
        return 0
    if args.format == "json":
        print(json.dumps([{"session": str(p), "pid": driver_pid(p)} for p in live], indent=2))
        return 0
    print(_sessions_table(live))
    return 0


def _ask(args: argparse.Namespace, req: dict[str, Any]) -> Any:
    """Sends ``req`` to the driver of the chosen session; exits with a message if none runs."""
    session = _session(args)
    sock = session / "control.sock"
    if not sock.exists():
        raise SystemExit(
            f"raylite: no running driver in {session} (no control socket there): start the "
            "program that calls raylite.init() first, or pick its session with --session. "
            "`raylite logs` still shows a finished session's logs."
        )
    try:
        return request(sock, req)
    except (ConnectionError, RuntimeError) as exc:
        raise SystemExit(f"raylite: {exc}") from None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(row: dict[str, Any], col: str) -> str:
        value = row.get(col)
        if col == "duration_ms" and row.get("start_time_ms") and row.get("end_time_ms"):
            value = row["end_time_ms"] - row["start_time_ms"]
        if col in _IDS and isinstance(value, str):
            value = value[-16:]
        if isinstance(value, float):
            value = f"{value:.1f}"
        return "" if value is None else str(value)

    cells = [[c.upper() for c in columns]] + [[cell(r, c) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def _filter(text: str) -> tuple[str, str, str]:
    """``key=value`` or ``key!=value`` -> Ray's filter tuple."""
    for op in ("!=", "="):
        key, sep, value = text.partition(op)
        if sep and key:
            return key.strip(), op, value.strip()
    raise argparse.ArgumentTypeError(f"{text!r} is not a filter: write key=value or key!=value")


def _run_status(args: argparse.Namespace) -> int:
    s = _ask(args, {"op": "status"})
    if args.format == "json":
        print(json.dumps(s, indent=2))
        return 0
    store = s["object_store"]
    used = {k: s["resources_total"][k] - s["resources_available"].get(k, 0)
            for k in s["resources_total"]}  # fmt: skip
    print(f"raylite session {s['session']}  driver pid {s['driver_pid']}  up {s['uptime_s']} s")
    print(f"  folder: {s['session_dir']}")
    print("Resources (used / total):")
    for k, total in s["resources_total"].items():
        if k.endswith("memory"):  # bytes, reported as Ray does, never reserved by a task
            print(f"  {total / 2**30:.1f} GiB {k}")
        else:
            print(f"  {used[k]:g} / {total:g} {k}")
    print(f"Processes: {s['worker_processes']} worker processes + the driver")
    print(f"Actors: {_counts(s['actors'])}")
    print(f"Tasks: {_counts(s['tasks'])}  ({s['tasks_recorded']} finished since init)")
    print(f"Object store: {store['used_bytes'] / 2**20:.1f} MiB / "
          f"{store['capacity_bytes'] / 2**20:.0f} MiB, {store['objects']} objects")  # fmt: skip
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"


def _run_list(args: argparse.Namespace) -> int:
    rows = _ask(args, {"op": "list", "kind": args.kind, "filters": args.filter,
                       "limit": args.limit})  # fmt: skip
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows, _COLUMNS[args.kind]))
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    summary = _ask(args, {"op": "summary"})["cluster"]
    if args.format == "json":
        print(json.dumps(summary, indent=2))
        return 0
    rows = [{"name": name, "type": e["type"], "states": _counts(e["state_counts"])}
            for name, e in summary["summary"].items()]  # fmt: skip
    print(_table(rows, ["name", "type", "states"]))
    print(f"{summary['total_tasks']} tasks, {summary['total_actor_tasks']} actor calls")
    return 0


def _run_timeline(args: argparse.Namespace) -> int:
    events = _ask(args, {"op": "timeline"})
    path = Path(args.file or f"raylite-timeline-{time.strftime('%Y-%m-%d_%H-%M-%S')}.json")
    path.write_text(json.dumps(events))
    runs = sum(1 for e in events if e.get("ph") == "X")
    print(f"Wrote {runs} task events to {path}: open it in https://ui.perfetto.dev "
          "or chrome://tracing.")  # fmt: skip
    return 0


def _run_logs(args: argparse.Namespace) -> int:
    logs = _session(args) / "logs"
    if not logs.is_dir():
        raise SystemExit(
            f"raylite: no logs at {logs}: pick a session with --session (`raylite sessions` "
            "lists the running ones)."
        )
    files = sorted(logs.iterdir())
    if not args.name:
        for f in files:
            print(f"{f.stat().st_size:>10}  {f.name}")
        return 0
    chosen = [f for f in files if args.name in f.name]
    if not chosen:
        raise SystemExit(f"raylite: no log in {logs} matches {args.name!r}; "
                         f"`raylite logs` lists them.")  # fmt: skip
    for f in chosen:
        lines = f.read_text(errors="replace").splitlines()
        if len(chosen) > 1:
            print(f"==> {f.name} <==")
        for line in lines[-args.tail:] if args.tail else lines:
            print(line)
    return 0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``sessions``, ``status``, ``list``, ``summary``, ``timeline`` and ``logs`` to the
    CLI."""

    def command(name: str, help: str, handler: Any, fmt: bool = True) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help, description=help)
        if name != "sessions":
            p.add_argument("--session", metavar="SESSION",
                           help="a session's name as `raylite sessions` shows it, or its "
                           "folder (default: the only running driver's)")  # fmt: skip
        if fmt:
            p.add_argument("--format", choices=["table", "json"], default="table")
        p.set_defaults(handler=handler)
        return p

    command("sessions", "the running raylite drivers of this user: session folder, pid, "
            "start time, command", _run_sessions)
    command("status", "resources, processes, actors, tasks and the object store of the "
            "running driver", _run_status)  # fmt: skip
    p = command("list", "list tasks, actors, objects or workers of the running driver",
                _run_list)  # fmt: skip
    p.add_argument("kind", choices=list(_COLUMNS))
    p.add_argument("--filter", type=_filter, action="append", metavar="KEY=VALUE",
                   help="keep rows where KEY=VALUE (or KEY!=VALUE); repeatable")  # fmt: skip
    p.add_argument("--limit", type=int, default=100, help="at most this many rows (100)")
    p = command("summary", "tasks per function and state", _run_summary)
    p.add_argument("kind", choices=["tasks"])
    p = command("timeline", "write the running driver's timeline (Chrome trace JSON)",
                _run_timeline, fmt=False)  # fmt: skip
    p.add_argument("file", nargs="?", help="where to write it (default: a new file here)")
    p = command("logs", "list the session's worker logs, or print those whose name "
                "contains NAME", _run_logs, fmt=False)  # fmt: skip
    p.add_argument("name", nargs="?", metavar="NAME", help="e.g. worker-1234 or .err")
    p.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines")

"""The ``raylite`` command line: ``raylite demo``, ``raylite run`` (a Ray program on raylite,
unchanged), and ``status``, ``list``, ``summary``,
``timeline``, ``logs`` to look into a running driver (``_cli_state.py``).

Each subcommand is one function in :data:`_COMMANDS` that adds its parser to the
subparsers and sets ``handler``, a function ``(args) -> exit code``. To add a subcommand,
write such a function (and its handler) and append it to :data:`_COMMANDS`.

Example:
    $ raylite demo --scale 0.2
    $ python -m raylite demo --cpus 2
    $ raylite run my_ray_program.py --its-own-flag
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ._cli_state import add_commands

_AddCommand = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _positive_int(text: str) -> int:
    """Parses a whole number of at least 1, or tells what is allowed."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1, e.g. 2")
    return value


def _positive_float(text: str) -> float:
    """Parses a number above 0, or tells what is allowed."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a finite number above 0, e.g. 1.0 or 0.2"
        )
    return value


def _run_demo(args: argparse.Namespace) -> int:
    """Runs ``raylite demo``; exits 1 with a message if its ways of computing disagree."""
    from raylite import _demo  # lazily: `raylite --help` should not pay for the demo's imports

    try:
        _demo.run_demo(_demo.DemoConfig(cpus=args.cpus, scale=args.scale, repeats=args.repeats))
    except _demo.DemoError as error:
        print(f"raylite demo: error: {error}", file=sys.stderr)
        return 1
    return 0


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cpus = os.cpu_count() or 1
    parser = subparsers.add_parser(
        "demo",
        help="show threads vs processes for CPU- and I/O-bound Python, then actors",
        description=(
            "Run a CPU-bound pure-Python workload four ways (sequentially, on threads, on a "
            "multiprocessing.Pool, on raylite tasks) and an I/O-bound one (requests to a slow "
            "local HTTP server) four ways, printing the wall times side by side; share a table "
            "loaded once from SQLite with every task through put; then run the seed's counter "
            "actor and 1,000 cheap actors."
        ),
    )
    parser.add_argument(
        "--cpus",
        type=_positive_int,
        default=cpus,
        metavar="N",
        help=f"threads and raylite CPUs to use (default: this machine's {cpus})",
    )
    parser.add_argument(
        "--scale",
        type=_positive_float,
        default=1.0,
        metavar="F",
        help="work size multiplier: 1.0 is the full demo, 0.2 a quick run (default: 1.0)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=3,
        metavar="N",
        help="run each way N times and show the median and the spread (default: 3)",
    )
    parser.set_defaults(handler=_run_demo)


def _run_program(args: argparse.Namespace) -> int:
    """Runs ``raylite run``: the program's exit code, or 1 if it raised."""
    from ._compat import run_program

    return run_program(args.target, args.args, as_module=args.module)


def _add_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a Ray program on raylite, unchanged ('import ray' gives raylite)",
        description=(
            "Run a Python program written for Ray on raylite with no edit: 'import ray' (and "
            "ray.util, ray.exceptions, ...) gives raylite, in the program, in raylite's "
            "worker processes and in Python processes the program starts. A Ray name raylite "
            "lacks raises an error that says so."
        ),
    )
    parser.add_argument(
        "-m",
        dest="module",
        action="store_true",
        help="TARGET is a module name, run as 'python -m TARGET' would",
    )
    parser.add_argument("target", metavar="TARGET", help="the script (or, with -m, module)")
    parser.add_argument(
        "args", nargs=argparse.REMAINDER, metavar="ARGS", help="the program's own arguments"
    )
    parser.set_defaults(handler=_run_program)


_COMMANDS: list[_AddCommand] = [_add_demo, _add_run, add_commands]


def build_parser() -> argparse.ArgumentParser:
    """Returns the ``raylite`` argument parser with every subcommand in :data:`_COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="raylite",
        description="raylite: Ray Core's API, embedded on one machine.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the ``raylite`` command.

    Args:
        argv: Arguments after the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit code: 0 on success, 2 for a usage error (no command prints the help),
        otherwise the subcommand's own code.

    Raises:
        SystemExit: With code 2 (after printing what is wrong) if an argument is invalid, as
            argparse does; with code 0 after ``--help``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except BrokenPipeError:  # `raylite list tasks | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0

"""The ``raylite demo`` command: threads vs processes for Python code, then actors.

The demo is a list of sections (:data:`SECTIONS`), one module each. Each section is a
function ``section(config, out)`` that runs its own workload and prints its own table to
``out``::

    run_demo(config, out)
      -> cpu.cpu_section(config, out)         CPU-bound: sequential vs threads vs
                                              multiprocessing.Pool vs raylite tasks
      -> io_bound.io_section(config, out)     I/O-bound: sequential vs threads vs raylite
                                              thread and process tasks, against a slow
                                              local HTTP server (a thread of its own)
      -> load_once.load_once_section(...)     a few hundred MB from SQLite, loaded once and
                                              shared through put, against loading it in
                                              every task and passing it each time
      -> actors.actors_section(config, out)   the seed's counter actor (its bug, then
                                              fixed), and 1,000 cheap actors on a few
                                              processes

What they share (the config, the answer check, the table, step lines and progress bars)
is in :mod:`.common`. To add a section, write one such function in a module of its own and
append it to :data:`SECTIONS`. A section that uses raylite initializes it once and shuts it
down in ``finally``; ``raylite`` itself is imported only inside the functions that start
it, so the building blocks never need the runtime and a test can run each of them in a
fraction of a second with ``DemoConfig(cpus=2, scale=0.01)``.

Example:
    >>> from raylite._demo import DemoConfig, run_demo
    >>> run_demo(DemoConfig(cpus=2, scale=0.1))  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from typing import TextIO

from .actors import actors_section
from .common import DemoConfig, DemoError, Section
from .cpu import cpu_section
from .io_bound import fetch, io_section, page_body, slow_server
from .load_once import load_once_section

__all__ = [
    "SECTIONS", "DemoConfig", "DemoError", "actors_section", "cpu_section", "fetch",
    "io_section", "load_once_section", "page_body", "run_demo", "slow_server",
]  # fmt: skip

SECTIONS: list[Section] = [cpu_section, io_section, load_once_section, actors_section]


def run_demo(config: DemoConfig, out: TextIO | None = None) -> None:
    """Runs every section of the demo in order, each printing its own table.

    Args:
        config: CPUs to use and work scale.
        out: Where to print; ``sys.stdout`` by default.

    Raises:
        DemoError: If a section's ways of computing one answer disagree.
    """
    stream = sys.stdout if out is None else out
    title = "raylite demo: threads vs processes for Python code, data loaded once, actors"
    print(f"{title} (scale {config.scale:g})", file=stream)
    for section in SECTIONS:
        print(file=stream)
        section(config, stream)

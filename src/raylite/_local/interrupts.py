"""Ctrl-C held back over a section that must complete, or be undone, as a whole.

::

    main thread: with deferred_sigint():  SIGINT ──> noted, not raised
                     ... section ...
                 on exit: the old handler back ──> a noted SIGINT re-raised (signal.raise_signal)

``init`` runs in one: a KeyboardInterrupt raised between the moment the runtime exists and
the moment it is installed (and so owned: ``shutdown``, atexit) would leave its processes
without an owner. The interrupt still lands, at the end of the section, under the handler
the program had (the default one raises KeyboardInterrupt there). Other threads cannot
change signal handlers, and Python runs handlers in the main thread only: there the
section runs as is.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["deferred_sigint"]


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Holds SIGINT back until the ``with`` block ends, then delivers it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note(signum: int, frame: Any) -> None:
        noted.append(signum)

    old = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if noted:
            signal.raise_signal(signal.SIGINT)

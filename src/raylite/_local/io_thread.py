"""The driver's I/O thread ("raylite-io"): the loop around ``LocalRuntime``'s turns.

::

    select(worker sockets, zygote, wake pipe) ──> rt._io_turn(events)   (a step under the
          ^                                          │                   lock, then futures)
          └──────── timeout: the next deadline <─────┘
    rt._shutdown_requested (by a signal handler) ──> rt.shutdown() from here
    any exception ──> rt._io_failed(traceback): every waiter gets RaySystemError; the loop ends

It holds the runtime weakly, so a runtime nobody references can be collected (the loop then
ends at its next wake-up).
"""

from __future__ import annotations

import traceback
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime import LocalRuntime

__all__ = ["io_main"]


def io_main(ref: weakref.ref[LocalRuntime]) -> None:
    """The I/O thread's loop: holds only a weak reference, so the runtime can be collected.

    Nothing may end it but shutdown: whatever else fails here (a bug of ours) breaks the
    runtime at once, so every waiter gets a ``RaySystemError`` that says why, never a hang.
    """
    timeout: float | None = None
    while True:
        rt = ref()
        if rt is None or rt._closed:
            return
        sel = rt._sel
        del rt
        try:
            events = sel.select(timeout)
        except (OSError, ValueError):  # closed under us at shutdown, or broken
            events = None
        rt = ref()
        if rt is None:
            return
        try:
            if events is None:
                if rt._closed:
                    return
                raise RuntimeError("the I/O thread's selector failed")
            timeout = rt._io_turn(events)
            if rt._shutdown_requested:  # by a signal handler: see shutdown()
                rt.shutdown()
                return
        except BaseException:  # noqa: BLE001 (no exception may end this thread unnoticed)
            rt._io_failed(traceback.format_exc())
            return
        del rt

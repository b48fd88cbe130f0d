"""The I/O thread's own parts (``_local/io_thread.IoLoop``), without a runtime."""

from __future__ import annotations

import selectors
import time

from raylite._local.io_thread import IoLoop


def test_deadlines_run_when_due_in_order_and_ties_in_the_order_set() -> None:
    loop = IoLoop()
    try:
        ran: list[str] = []
        now = time.monotonic()
        loop.at(now + 3600, lambda: ran.append("later"))
        loop.at(now - 1, lambda: ran.append("b"))
        loop.at(now - 2, lambda: ran.append("a"))
        loop.at(now - 1, lambda: ran.append("c"))  # same time as "b": after it
        left = loop._run_deadlines()
        assert ran == ["a", "b", "c"]  # the one an hour away waits
        assert left is not None and 3500 < left <= 3600  # select sleeps until then
    finally:
        loop.close()


def test_wake_makes_select_return_and_never_blocks_when_the_pipe_is_full() -> None:
    loop = IoLoop()
    try:
        assert loop.sel.select(0) == []
        for _ in range(100_000):  # far past a pipe's capacity: it must not block or raise
            loop.wake()
        events = loop.sel.select(0)
        assert [mask for _key, mask in events] == [selectors.EVENT_READ]
    finally:
        loop.close()

"""Waiting on many refs: ``as_completed`` (Ray's ``ray.util.as_completed``) and ``progress``
(``get`` with a progress bar).

Both are built on the public ``wait`` and ``get``, so they work on every runtime. Neither
starts a thread: they wait in the caller's thread::

    as_completed(refs)   loop: wait(remaining, num_returns=chunk_size) -> get(ready) -> yield
    progress(refs)       loop: wait(remaining, num_returns=all, timeout=0.1 s) -> bar.update
                         then: get(refs), in the order given
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from .._api import _check_refs, _check_timeout, get, wait
from .._object_ref import ObjectRef
from ..exceptions import GetTimeoutError

__all__ = ["as_completed", "progress"]

_WAIT_OPTIONS = ("timeout", "fetch_local")  # as_completed's **kwargs, passed to wait()
_REFRESH_S = 0.1  # how often progress() redraws its bar at most while nothing finishes


def as_completed(
    refs: Sequence[ObjectRef],
    *,
    chunk_size: int = 10,
    yield_obj_refs: bool = False,
    **kwargs: Any,
) -> Iterator[Any]:
    """Yields the results of ``refs`` as they become ready, a batch at a time.

    Ray's ``ray.util.as_completed``: each step waits until ``chunk_size`` of the remaining
    refs are ready (``wait(num_returns=chunk_size)``), then yields their values in the order
    of ``refs``. With ``chunk_size=1`` the values come in completion order. Unlike
    ``concurrent.futures.as_completed``, a ``timeout`` bounds each step, not the whole
    iteration: after it, the refs ready so far are yielded (maybe none) and waiting goes on,
    so every result is yielded in the end.

    Args:
        refs: The refs to wait on (no duplicates, as for ``wait``).
        chunk_size: How many ready refs to wait for before yielding (``num_returns``).
        yield_obj_refs: Yield the ready refs themselves instead of their values.
        **kwargs: Passed to ``wait``: ``timeout`` (seconds per step) and ``fetch_local``.

    Yields:
        Each ref's value (or the ref itself, with ``yield_obj_refs=True``).

    Raises:
        ValueError: If ``chunk_size`` is below 1.
        TypeError: If ``kwargs`` holds anything but ``timeout`` and ``fetch_local``.
        RayTaskError: When a batch holds a task that failed (at that batch's ``get``).

    Example:
        >>> refs = [slow_square.remote(x) for x in [3, 1, 2]]  # doctest: +SKIP
        >>> list(raylite.util.as_completed(refs, chunk_size=1))  # doctest: +SKIP
        [1, 4, 9]
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(
            f"chunk_size={chunk_size!r}: as_completed() waits for chunk_size refs per step; "
            "give a whole number of at least 1 (1 yields each value as soon as it is ready)."
        )
    if "num_returns" in kwargs:
        raise ValueError("as_completed() takes chunk_size, not num_returns: use chunk_size=N.")
    unknown = sorted(set(kwargs) - set(_WAIT_OPTIONS))
    if unknown:
        raise TypeError(
            f"as_completed() got unexpected keyword argument(s) {', '.join(unknown)}: it "
            f"passes only {' and '.join(_WAIT_OPTIONS)} on to wait()."
        )
    remaining = _ref_list("as_completed", refs)
    while remaining:
        ready, remaining = wait(remaining, num_returns=min(chunk_size, len(remaining)), **kwargs)
        if ready:
            yield from ready if yield_obj_refs else get(ready)


def progress(
    refs: Sequence[ObjectRef],
    *,
    desc: str | None = None,
    timeout: float | None = None,
    **bar_options: Any,
) -> list[Any]:
    """``get(refs)`` that shows a tqdm progress bar (count, rate, ETA) while it waits.

    The bar counts refs as they become ready (in any order); the values come back in the
    order of ``refs``, as from ``get``. The bar is tqdm's, drawn on stderr: ``disable=True``
    hides it, ``disable=None`` hides it when its stream is not a terminal (a log, a pipe),
    and ``leave=False`` clears it when done.

    Args:
        refs: The refs to get (duplicates allowed, as for ``get``).
        desc: Text before the bar, e.g. ``"squares"``.
        timeout: Seconds to wait for all of them; ``None`` waits as long as it takes.
        **bar_options: Passed to ``tqdm.tqdm``: ``disable``, ``file``, ``leave``, ``unit``,
            ``position``, ...

    Returns:
        The values of ``refs``, in their order.

    Raises:
        GetTimeoutError: If some are not ready after ``timeout`` seconds.
        RayTaskError: If a task failed (the first failed one in ``refs``), once all are ready.

    Example:
        >>> refs = [square.remote(i) for i in range(10_000)]  # doctest: +SKIP
        >>> values = raylite.util.progress(refs, desc="squares")  # doctest: +SKIP
        squares: 100%|██████████| 10000/10000 [00:00<00:00, 16000.0task/s]
    """
    from tqdm.auto import tqdm  # lazily: importing tqdm takes ~0.1 s

    refs = _ref_list("progress", refs)
    _check_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    copies = Counter(refs)  # {ref: how often it is in refs}: the bar counts every one
    remaining = list(copies)
    bar_options.setdefault("unit", "task")
    with tqdm(total=len(refs), desc=desc, **bar_options) as bar:
        while remaining:
            step = _REFRESH_S if deadline is None else min(_REFRESH_S, deadline - time.monotonic())
            if step <= 0:
                raise GetTimeoutError(
                    f"progress() timed out: {len(remaining)} of {len(copies)} refs not ready "
                    f"after {timeout} s. Pass a longer timeout=, or timeout=None to wait as long "
                    "as it takes."
                )
            ready, remaining = wait(remaining, num_returns=len(remaining), timeout=step)
            if ready:
                bar.update(sum(copies[r] for r in ready))
    return list(get(refs))


def _ref_list(fn: str, refs: Sequence[ObjectRef]) -> list[ObjectRef]:
    """``refs`` as a new list, or a TypeError that says how to call ``fn``."""
    if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
        raise TypeError(
            f"{fn}() expected a list of ObjectRef, got {type(refs).__name__}. Wrap a single "
            f"ref in a list: {fn}([ref])."
        )
    _check_refs(fn, refs)
    return list(refs)

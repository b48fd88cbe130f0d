"""Test helpers as Ray's ``ray._common.test_utils`` offers them, for test suites written
against Ray (``from ray._common.test_utils import SignalActor, wait_for_condition``).

raylite's own implementations, with Ray's names, signatures and behaviour:

- :func:`wait_for_condition` / :func:`async_wait_for_condition`: poll a predicate until it
  holds or a deadline passes (then ``RuntimeError``).
- :class:`SignalActor`: an async actor (``num_cpus=0``) that callers ``wait`` on until
  someone calls ``send``; ``cur_num_waiters`` counts the waiting calls.
- :class:`Semaphore`: an async actor holding a counter: ``acquire``/``release``/``locked``.
- :func:`run_string_as_driver`: run a Python script as a separate driver process (with
  ``ray`` standing for raylite there too when it does here) and return its output.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from .._api import remote

__all__ = [
    "Semaphore",
    "SignalActor",
    "async_wait_for_condition",
    "run_string_as_driver",
    "wait_for_condition",
]


def _timed_out(timeout: float, last_error: BaseException | None) -> RuntimeError:
    message = "The condition wasn't met before the timeout expired."
    if last_error is not None:
        detail = "".join(traceback.format_exception(last_error)).rstrip()
        message += f" Last exception:\n{detail}"
    return RuntimeError(message)


def wait_for_condition(
    condition_predictor: Callable[..., bool],
    timeout: float = 10,
    retry_interval_ms: float = 100,
    raise_exceptions: bool = False,
    **kwargs: Any,
) -> None:
    """Waits until ``condition_predictor(**kwargs)`` returns a true value.

    Args:
        condition_predictor: the condition to poll.
        timeout: seconds to keep trying.
        retry_interval_ms: pause between tries.
        raise_exceptions: re-raise an exception the predicate raises at once, instead of
            counting it as "not yet".
        **kwargs: passed to the predicate.

    Raises:
        RuntimeError: the condition did not hold within ``timeout`` (the message carries the
            predicate's last exception, if any).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if condition_predictor(**kwargs):
                return
        except Exception as exc:
            if raise_exceptions:
                raise
            last_error = exc
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, last_error)
        time.sleep(retry_interval_ms / 1000.0)


async def async_wait_for_condition(
    condition_predictor: Callable[..., bool | Awaitable[bool]],
    timeout: float = 10,
    retry_interval_ms: float = 100,
    **kwargs: Any,
) -> None:
    """:func:`wait_for_condition` for asyncio code: the predicate may be a coroutine
    function, and the wait yields to the event loop between tries."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition_predictor(**kwargs)
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, last_error)
        await asyncio.sleep(retry_interval_ms / 1000.0)


@remote(num_cpus=0)
class SignalActor:
    """Callers block in ``wait`` until ``send`` (Ray's test signal).

    Example::

        signal = SignalActor.remote()
        ref = task_that_calls_wait.remote(signal)   # ray.get(signal.wait.remote()) inside
        ray.get(signal.send.remote())                # releases it
    """

    def __init__(self) -> None:
        self.ready_event = asyncio.Event()
        self.num_waiters = 0

    def send(self, clear: bool = False) -> None:
        """Releases every waiter; with ``clear=True`` later waiters block again."""
        self.ready_event.set()
        if clear:
            self.ready_event.clear()

    async def wait(self, should_wait: bool = True) -> None:
        """Returns once ``send`` was called (at once with ``should_wait=False``)."""
        if should_wait:
            self.num_waiters += 1
            try:
                await self.ready_event.wait()
            finally:
                self.num_waiters -= 1

    async def cur_num_waiters(self) -> int:
        """How many ``wait`` calls are blocked now."""
        return self.num_waiters


@remote(num_cpus=0)
class Semaphore:
    """A counter actors and tasks share: ``acquire`` blocks while it is zero."""

    def __init__(self, value: int = 1) -> None:
        self._sema = asyncio.Semaphore(value=value)

    async def acquire(self) -> None:
        """Takes one unit, waiting until one is free."""
        await self._sema.acquire()

    async def release(self) -> None:
        """Gives one unit back."""
        self._sema.release()

    async def locked(self) -> bool:
        """True when no unit is free."""
        return self._sema.locked()


def _driver_env(env: dict[str, str] | None) -> dict[str, str]:
    """The child's environment: ``env`` (or ours), with raylite's ``ray`` package first on
    ``PYTHONPATH`` when ``ray`` is raylite in this process, so the child's ``import ray``
    gets raylite as ours does."""
    from .. import _compat

    child = dict(os.environ if env is None else env)
    if _compat.standing_in_for_ray():
        paths = child.get("PYTHONPATH", "")
        child["PYTHONPATH"] = _compat.shim_dir() + (os.pathsep + paths if paths else "")
    return child


def run_string_as_driver(
    driver_script: str,
    env: dict[str, str] | None = None,
    encode: str = "utf-8",
    timeout: float | None = 300,
) -> str:
    """Runs ``driver_script`` with this Python in a new process; returns its output.

    Args:
        driver_script: the program's source.
        env: its environment (default: this process's).
        encode: the encoding of the script and of the output.
        timeout: seconds before the process is killed.

    Raises:
        subprocess.CalledProcessError: the script exited with a non-zero status (its
            output is in ``.output``).
        subprocess.TimeoutExpired: it ran longer than ``timeout``.
    """
    proc = subprocess.run(
        [sys.executable, "-"],
        input=driver_script.encode(encode),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_driver_env(env),
        timeout=timeout,
        check=False,
    )
    output = proc.stdout.decode(encode)
    if proc.returncode:
        print(output, file=sys.stderr)
        raise subprocess.CalledProcessError(proc.returncode, proc.args, output)
    return output

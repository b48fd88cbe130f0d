"""Test helpers as Ray's ``ray._private.test_utils`` offers them, for test suites written
against Ray (``from ray._private.test_utils import wait_for_pid_to_exit``).

raylite's own implementations of the helpers that need no Ray internals, with Ray's names
and signatures, among them :class:`BatchQueue` (a ``ray.util.queue.Queue`` whose actor also
hands out batches: ``get_batch``). Older Ray releases kept :class:`SignalActor`, :class:`Semaphore` and
:func:`run_string_as_driver` here too; they are re-exported from
:mod:`raylite._common.test_utils`. Helpers that read Ray's GCS (error pubsub, global state
accessors, node lists) are not provided.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

from .._api import get, kill, remote
from .._common.test_utils import (
    Semaphore,
    SignalActor,
    _driver_env,
    async_wait_for_condition,
    run_string_as_driver,
    wait_for_condition,
)
from ..util.queue import Empty, Queue, _accepted, _QueueActor, _Refused

__all__ = [
    "BatchQueue",
    "RayTestTimeoutException",
    "Semaphore",
    "SignalActor",
    "async_wait_for_condition",
    "client_test_enabled",
    "convert_actor_state",
    "get_error_message",
    "init_error_pubsub",
    "kill_actor_and_wait_for_failure",
    "run_string_as_driver",
    "run_string_as_driver_nonblocking",
    "wait_for_condition",
    "wait_for_pid_to_exit",
]


class RayTestTimeoutException(Exception):
    """A test helper waited longer than its timeout."""


def client_test_enabled() -> bool:
    """False: raylite has no Ray Client mode, so tests take their direct-call branches."""
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a child that exited but was not reaped yet counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def wait_for_pid_to_exit(pid: int, timeout: float = 20) -> None:
    """Waits until process ``pid`` is gone.

    Raises:
        RayTestTimeoutException: it still runs after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            raise RayTestTimeoutException(f"Timed out while waiting for process {pid} to exit.")
        time.sleep(0.1)


def kill_actor_and_wait_for_failure(
    actor: Any, timeout: float = 10, retry_interval_ms: float = 100
) -> None:
    """Kills ``actor`` (``ray.kill``) and returns once it is dead.

    raylite's ``kill`` takes effect before it returns (its calls fail with
    ``ActorDiedError`` from then on), so there is nothing left to wait for; ``timeout`` and
    ``retry_interval_ms`` are accepted for Ray's signature.
    """
    kill(actor)


def run_string_as_driver_nonblocking(
    driver_script: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Starts ``driver_script`` in a new Python process (as ``run_string_as_driver``) and
    returns the ``Popen`` at once; the caller owns it (wait for or kill it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", driver_script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_driver_env(env),
    )
    return proc


def convert_actor_state(state: Any) -> str:
    """An actor state as the state API spells it (``"ALIVE"``, ``"DEAD"``...): raylite's
    states are already those names."""
    return str(state)


def _needs_gcs(name: str) -> RuntimeError:
    return RuntimeError(
        f"raylite does not provide ray._private.test_utils.{name}: it reads Ray's GCS error "
        "channel, which raylite does not have. Errors of tasks surface at ray.get() as "
        "RayTaskError; run this test on Ray itself to check Ray's error pubsub."
    )


def init_error_pubsub() -> Any:
    """Not provided (Ray's GCS error pubsub): raises :class:`RuntimeError` saying so."""
    raise _needs_gcs("init_error_pubsub")


def get_error_message(
    subscriber: Any, num: float = 1e6, error_type: str | None = None, timeout: float = 20
) -> Any:
    """Not provided (Ray's GCS error pubsub): raises :class:`RuntimeError` saying so."""
    raise _needs_gcs("get_error_message")


class _BatchQueueActor(_QueueActor):
    """The queue actor with ``get_batch``; like the rest of it, it runs on the actor's one
    event loop, so nothing else touches the queue meanwhile."""

    async def get_batch(
        self,
        batch_size: int | None,
        total_timeout: float | None,
        first_timeout: float | None,
    ) -> list[Any] | _Refused:
        loop = asyncio.get_running_loop()
        deadline = None if total_timeout is None else loop.time() + total_timeout
        first = await self.get(first_timeout)
        if isinstance(first, _Refused):
            return first
        batch = [first]
        while batch_size is None or len(batch) < batch_size:
            if not self.queue.empty():  # items there now are taken whatever the timeout
                batch.append(self.queue.get_nowait())
                continue
            if batch_size is None and deadline is None:
                break  # Ray: no size and no timeout drains what the queue holds now
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch


_BatchQueueActorClass: Any = remote(_BatchQueueActor)


class BatchQueue(Queue):
    """A :class:`ray.util.queue.Queue` that also returns several items per call, as Ray's
    test helper of this name does.

    Args:
        maxsize: as for ``Queue`` (0: no limit).
        actor_options: options of the queue's actor, as for ``Queue``.
    """

    _actor_class = _BatchQueueActorClass

    def get_batch(
        self,
        batch_size: int | None = None,
        total_timeout: float | None = None,
        first_timeout: float | None = None,
    ) -> list[Any]:
        """Up to ``batch_size`` items (``None``: every item there now), in queue order.

        Args:
            batch_size: the most items to return.
            total_timeout: how long, in seconds, to wait for the whole batch (``None``:
                without limit when ``batch_size`` is given).
            first_timeout: how long to wait for the first item (``None``: without limit).

        Raises:
            Empty: no item came within ``first_timeout``.
        """
        batch: list[Any] = _accepted(
            get(self._handle().get_batch.remote(batch_size, total_timeout, first_timeout)),
            Empty,
        )
        return batch

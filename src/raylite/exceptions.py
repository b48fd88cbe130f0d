"""Ray's exception names, raised by raylite with the same meaning.

Every error a user can catch from raylite lives here, under the name Ray gives it, so that
``except ray.exceptions.GetTimeoutError`` works unchanged after ``import raylite as ray``.

The one subtle type is :class:`RayTaskError`: a task that raised ``ValueError`` surfaces at
``get`` as an exception that is *both* a ``RayTaskError`` and a ``ValueError`` (built by
:meth:`RayTaskError.as_instanceof_cause`), so user code can catch either.
"""

from __future__ import annotations

import builtins
import os
from typing import Any

from ._compat import module_getattr

__all__ = [
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "TaskCancelledError",
    "GetTimeoutError",
    "WorkerCrashedError",
    "ObjectLostError",
    "ObjectFreedError",
    "OwnerDiedError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "RayActorError",
    "ActorDiedError",
    "ActorUnavailableError",
    "TaskUnschedulableError",
    "ActorUnschedulableError",
    "PendingCallsLimitExceeded",
    "PendingTaskWarning",
]


class RayError(Exception):
    """Base class of every raylite (and Ray) error."""

    __module__ = "raylite.exceptions"


class RaySystemError(RayError):
    """The runtime itself failed (not the user's code)."""

    __module__ = "raylite.exceptions"


class RayTaskError(RayError):
    """A task or actor method raised an exception.

    Args:
        function_name: the remote function or method that failed.
        traceback_str: the formatted remote traceback.
        cause: the exception the user's code raised (``None`` if it could not be pickled).
        pid: the worker process it ran in.
    """

    __module__ = "raylite.exceptions"

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: BaseException | None = None,
        pid: int | None = None,
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = os.getpid() if pid is None else pid
        # Not super(): in a RayTaskError(UserError) class the next __init__ is the user's,
        # whose signature we cannot know.
        Exception.__init__(self, function_name, traceback_str, cause, self.pid)

    def __reduce__(self) -> Any:
        return (RayTaskError, (self.function_name, self.traceback_str, self.cause, self.pid))

    def __str__(self) -> str:
        head = f"{self.function_name}() (pid={self.pid})"
        return f"{head}\n{self.traceback_str.rstrip()}"

    def as_instanceof_cause(self) -> RayTaskError:
        """Returns this error as an instance of both ``RayTaskError`` and the cause's class.

        Through nested tasks (a task re-raising what ``get`` raised) the class is the
        innermost user exception's, as in Ray.

        Falls back to plain ``RayTaskError`` where the cause's class cannot be subclassed
        (final classes, classes whose ``__init__`` needs arguments it cannot get, ...), and
        for causes that are not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``):
        ``get`` must not exit or interrupt the caller's own program.
        """
        cause = self.cause
        while isinstance(cause, RayTaskError) and cause.cause is not None:
            cause = cause.cause  # a nested task's error: the user's exception it carries
        if (
            cause is None
            or isinstance(cause, RayTaskError)
            or not isinstance(cause, Exception)
            or isinstance(self, type(cause))  # a RayError or a plain Exception, as on Ray
        ):
            return self
        cause_cls = type(cause)
        try:
            return _dual_class(cause_cls)(self, cause)
        except TypeError:
            return self


_DUAL_CLASSES: dict[type, type] = {}
_EXCEPTION_GROUP: type | None = getattr(builtins, "BaseExceptionGroup", None)  # 3.11+


def _dual_class(cause_cls: type) -> type:
    """``RayTaskError(cause_cls)``: a class that is both; cached per cause class."""
    cls = _DUAL_CLASSES.get(cause_cls)
    if cls is not None:
        return cls

    def __init__(self: Any, task_error: RayTaskError, cause: BaseException) -> None:
        # Skip the cause class's __init__: it may need arguments we do not have.
        RayTaskError.__init__(
            self, task_error.function_name, task_error.traceback_str, cause, task_error.pid
        )
        self.args = cause.args

    def __getattr__(self: Any, name: str) -> Any:
        # Attributes the user's exception carried (e.g. ``err.code``) stay reachable.
        cause = self.__dict__.get("cause")
        if cause is None:
            raise AttributeError(name)
        return getattr(cause, name)

    def __reduce__(self: Any) -> Any:
        return (_rebuild_dual, (RayTaskError.__reduce__(self)[1],))

    namespace = {
        "__init__": __init__,
        "__getattr__": __getattr__,
        "__reduce__": __reduce__,
        "__str__": RayTaskError.__str__,
        "__module__": "raylite.exceptions",
    }
    if _EXCEPTION_GROUP is not None and issubclass(cause_cls, _EXCEPTION_GROUP):
        # A group's members live in its C struct, which only __new__ fills: build it from
        # the group's (message, exceptions), so that ``except*`` can split it.
        def __new__(cls: type, task_error: RayTaskError, cause: Any) -> Any:
            return cause_cls.__new__(cls, cause.message, cause.exceptions)  # type: ignore[call-arg]

        namespace["__new__"] = __new__
    cls = type(f"RayTaskError({cause_cls.__name__})", (RayTaskError, cause_cls), namespace)
    _DUAL_CLASSES[cause_cls] = cls
    return cls


def _rebuild_dual(args: tuple[Any, ...]) -> RayTaskError:
    return RayTaskError(*args).as_instanceof_cause()


class TaskCancelledError(RayError):
    """The task was cancelled with ``cancel()`` before it could finish."""

    __module__ = "raylite.exceptions"

    def __init__(self, task_id: str | None = None) -> None:
        self.task_id = task_id
        super().__init__(task_id)

    def __str__(self) -> str:
        return f"Task {self.task_id} was cancelled." if self.task_id else "Task was cancelled."


class GetTimeoutError(RayError, TimeoutError):
    """``get`` (or a utility that waits) ran out of time before the object was ready."""

    __module__ = "raylite.exceptions"


class WorkerCrashedError(RayError):
    """The worker process running the task died (crash, signal, ``os._exit``)."""

    __module__ = "raylite.exceptions"


class ObjectLostError(RayError):
    """The object's value is gone (freed, or its producer died and cannot be rerun)."""

    __module__ = "raylite.exceptions"

    def __init__(self, object_ref_hex: str = "", detail: str = "") -> None:
        self.object_ref_hex = object_ref_hex
        self.detail = detail
        super().__init__(object_ref_hex, detail)

    def __str__(self) -> str:
        return f"Failed to retrieve object {self.object_ref_hex}. {self.detail}".strip()


class ObjectFreedError(ObjectLostError):
    """The object was freed (every reference to it was dropped) before it was read."""

    __module__ = "raylite.exceptions"


class OwnerDiedError(ObjectLostError):
    """The process that owned the object (its driver) has gone away."""

    __module__ = "raylite.exceptions"


class ObjectStoreFullError(RayError):
    """The object store has no room for the object (``object_store_memory``)."""

    __module__ = "raylite.exceptions"


class OutOfMemoryError(RayError):
    """A task or actor was killed because the machine ran out of memory."""

    __module__ = "raylite.exceptions"


class RayActorError(RayError):
    """An actor died or cannot be reached; calls to it fail with this."""

    __module__ = "raylite.exceptions"


class ActorDiedError(RayActorError):
    """The actor is dead for good (killed, crashed past ``max_restarts``, ``__init__`` failed)."""

    __module__ = "raylite.exceptions"


class ActorUnavailableError(RayActorError):
    """The actor is restarting; the call may succeed if retried."""

    __module__ = "raylite.exceptions"


class TaskUnschedulableError(RayError):
    """The task asks for resources this runtime can never provide."""

    __module__ = "raylite.exceptions"


class ActorUnschedulableError(RayError):
    """The actor asks for resources this runtime can never provide."""

    __module__ = "raylite.exceptions"


class PendingTaskWarning(UserWarning):
    """raylite's own: tasks cannot start until the program acts, because what they need is
    held by idle actors or by tasks blocked on them (says who holds it; points at the
    ``.remote()`` line). Tasks that only queue behind running work never get one."""

    __module__ = "raylite.exceptions"


class PendingCallsLimitExceeded(RayError):
    """An actor has more queued calls than its ``max_pending_calls``."""

    __module__ = "raylite.exceptions"


__getattr__ = module_getattr(__name__)  # a Ray name raylite lacks: an error that says so

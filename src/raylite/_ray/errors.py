"""Ray's errors as raylite's, so that ``except raylite.exceptions.X`` catches Ray's ``X``.

At the RayRuntime's boundary (``get``, ``wait``, ``put``, ``cancel``, ``.remote()``), an
error from ``ray.exceptions`` is raised again as an instance of a class that derives from
both Ray's class and the raylite class of the same name (or of the nearest name up Ray's
class hierarchy: Ray's ``ObjectFetchTimedOutError`` is a raylite ``ObjectLostError``)::

    ray.exceptions.GetTimeoutError ──┐
                                     ├── GetTimeoutError (made here, once per Ray class)
    raylite.exceptions.GetTimeoutError ┘

So the error keeps Ray's message and attributes; ``except ray.exceptions.X`` catches it
still, and so do Ray's own ``isinstance`` checks when it travels back into Ray (an error a
nested task does not catch). A task's error stays an instance of the user's exception class
too, since Ray's ``RayTaskError(ValueError)`` is one, as on the local runtime; and where
that cause is Ray's (``RayTaskError(TaskCancelledError)`` for a task cancelled while it
ran), the error is an instance of raylite's class for it as well.

raylite's ``exceptions`` module never imports ray: the combined classes live here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray.exceptions

from .. import exceptions

__all__ = ["raylite_errors", "translate"]

# Ray's name for "the task's exception could not be rebuilt" is its own; raylite reports that
# case as a RayTaskError carrying the remote traceback's text.
_SAME_MEANING = {"UnserializableException": "RayTaskError"}


@contextmanager
def raylite_errors() -> Iterator[None]:
    """Raises an error of ``ray.exceptions`` inside the block as raylite's (:func:`translate`)."""
    try:
        yield
    except ray.exceptions.RayError as err:
        raise translate(err) from None


def translate(err: ray.exceptions.RayError) -> BaseException:
    """``err`` as an instance of both its class and the matching raylite exception class.

    Returns ``err`` itself when it is one already, or when no class can combine the two:
    then only Ray's class catches it.
    """
    ray_cls: Any = type(err)
    targets = _raylite_classes(ray_cls)
    if all(isinstance(err, target) for target in targets):
        return err
    try:
        cls = _combined(ray_cls, targets)
        try:
            both = cls.__new__(cls)
        except TypeError:  # Ray's RayTaskError(ExceptionGroup) is made from Ray's error
            both = cls.__new__(cls, err)
    except TypeError:
        return err
    both.__dict__.update(err.__dict__)
    both.args = err.args
    both._ray_error = err  # what it pickles as (see _reduce)
    return both.with_traceback(err.__traceback__)


def _raylite_classes(ray_cls: type) -> tuple[type, ...]:
    """The most specific raylite classes named like ``ray_cls`` and its Ray bases."""
    found: list[type] = []
    for cls in ray_cls.__mro__:
        if issubclass(cls, ray.exceptions.RayError):
            name = _SAME_MEANING.get(cls.__name__, cls.__name__)
            if name in exceptions.__all__:
                found.append(getattr(exceptions, name))
    return tuple(
        cls
        for cls in dict.fromkeys(found)
        if not any(o is not cls and issubclass(o, cls) for o in found)
    )


# Bounded: Ray makes a new class for each task error (``RayTaskError(KeyError)``).
@functools.lru_cache(maxsize=128)
def _combined(ray_cls: Any, raylite_classes: tuple[type, ...]) -> Any:
    return type(
        ray_cls.__name__,
        (ray_cls, *raylite_classes),
        {
            "__module__": "raylite.exceptions",
            "__qualname__": ray_cls.__name__,
            "__reduce__": _reduce,
        },
    )


def _reduce(self: Any) -> tuple[Any, ...]:
    # The combined class is made at run time, so pickle rebuilds it from Ray's error.
    return (translate, (self._ray_error,))

"""Custom serializers for classes that do not pickle, as Ray's ``ray.util.serialization``.

Example::

    class Conn:                      # holds a socket: cannot be pickled as it is
        def __init__(self, url): ...

    raylite.util.register_serializer(
        Conn, serializer=lambda c: c.url, deserializer=lambda url: Conn(url)
    )
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["deregister_serializer", "register_serializer"]


def register_serializer(
    cls: type, *, serializer: Callable[[Any], Any], deserializer: Callable[[Any], Any]
) -> None:
    """Serializes instances of ``cls`` as ``serializer(obj)``, rebuilt by ``deserializer``.

    As in Ray, the registration holds in the process that makes it (the driver, or a task
    or actor that calls this); the deserializer travels with every value, so any worker can
    read what this process wrote. It must itself be picklable.

    Args:
        cls: the exact class (not its subclasses) to serialize this way.
        serializer: turns an instance into something picklable (e.g. a dict).
        deserializer: builds the instance back from what ``serializer`` returned.

    Raises:
        TypeError: ``cls`` is not a class, or a function is not callable.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_serializer() needs a class, got {cls!r}.")
    for name, fn in (("serializer", serializer), ("deserializer", deserializer)):
        if not callable(fn):
            raise TypeError(f"register_serializer(): {name} must be callable, got {fn!r}.")
    from .._local import serialization  # here: `import raylite` stays light

    serialization.register_serializer(cls, serializer, deserializer)


def deregister_serializer(cls: type) -> None:
    """Removes the serializer registered for ``cls``; nothing happens if there is none."""
    from .._local import serialization

    serialization.deregister_serializer(cls)

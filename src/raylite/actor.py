"""Public home of the actor classes (as Ray's ``ray.actor``): where their ``__module__``
points, so pickles and reprs name an importable module; and ``exit_actor``."""

from typing import NoReturn

from . import _runtime
from ._actor import ActorClass as ActorClass
from ._actor import ActorClassInheritanceException as ActorClassInheritanceException
from ._actor import ActorHandle as ActorHandle
from ._actor import ActorMethod as ActorMethod
from ._compat import module_getattr

__all__ = [
    "ActorClass",
    "ActorClassInheritanceException",
    "ActorHandle",
    "ActorMethod",
    "exit_actor",
]


def exit_actor() -> NoReturn:
    """Ends the actor whose method calls it, as Ray's ``ray.actor.exit_actor()``.

    The call that runs it fails with ``ActorDiedError`` (its caller sees the actor's death,
    not a return value), as do calls queued behind it; the actor is not restarted, whatever
    its ``max_restarts``. Calls running at the same time in a threaded or async actor run
    to completion first.

    Raises:
        TypeError: called outside an actor (in the driver or a task).
    """
    _runtime.current().exit_actor()


__getattr__ = module_getattr(__name__)  # a Ray name raylite lacks: an error that says so

"""Public home of the actor classes (as Ray's ``ray.actor``): where their ``__module__``
points, so pickles and reprs name an importable module; and ``exit_actor``."""

from . import _runtime
from ._actor import ActorClass as ActorClass
from ._actor import ActorHandle as ActorHandle
from ._actor import ActorMethod as ActorMethod
from ._actor import IntendedExit

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor"]


def exit_actor() -> None:
    """Ends the actor whose method calls it, as Ray's ``ray.actor.exit_actor()``.

    The call that runs it fails with ``ActorDiedError`` (its caller sees the actor's death,
    not a return value), as do calls queued behind it; the actor is not restarted, whatever
    its ``max_restarts``. Calls running at the same time in a threaded or async actor run
    to completion first.

    Raises:
        TypeError: called outside an actor (in the driver or a task).
    """
    if _runtime.current().context().get("actor_id") is None:
        raise TypeError(
            "exit_actor() was called outside an actor: call it inside an actor method to end "
            "that actor gracefully, or use raylite.kill(handle) to end an actor from outside."
        )
    raise IntendedExit("exit_actor() is called.")

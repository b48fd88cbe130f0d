"""Utilities built on the core API, as in ``ray.util``.

``raylite.util.ActorPool`` spreads calls over a set of actors; the queue shared by tasks
and actors is ``raylite.util.queue.Queue`` (import that module, as with Ray's).
"""

from .actor_pool import ActorPool as ActorPool

__all__ = ["ActorPool"]

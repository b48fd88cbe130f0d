"""Utilities built on the core API, as in ``ray.util``.

``raylite.util.ActorPool`` spreads calls over a set of actors; ``as_completed`` yields
results as they finish and ``progress`` gets many refs behind a progress bar. The queue
shared by tasks and actors is ``raylite.util.queue.Queue`` (import that module, as with
Ray's).
"""

from .actor_pool import ActorPool as ActorPool
from .helpers import as_completed as as_completed
from .helpers import progress as progress

__all__ = [
    # actors
    "ActorPool",
    # waiting on many refs
    "as_completed",
    "progress",
]

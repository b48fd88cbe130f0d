"""Utilities built on the core API, as in ``ray.util``.

``raylite.util.ActorPool`` spreads calls over a set of actors; ``as_completed`` yields
results as they finish and ``progress`` gets many refs behind a progress bar. The queue
shared by tasks and actors is ``raylite.util.queue.Queue`` (import that module, as with
Ray's). Placement groups (``placement_group``, ...) reserve resources for the tasks
scheduled into them (``raylite.util.scheduling_strategies``).
"""

from .._compat import module_getattr
from . import scheduling_strategies as scheduling_strategies
from .actor_pool import ActorPool as ActorPool
from .helpers import as_completed as as_completed
from .helpers import progress as progress
from .named_actors import list_named_actors as list_named_actors
from .placement_group import get_current_placement_group as get_current_placement_group
from .placement_group import placement_group as placement_group
from .placement_group import placement_group_table as placement_group_table
from .placement_group import remove_placement_group as remove_placement_group
from .serialization import deregister_serializer as deregister_serializer
from .serialization import register_serializer as register_serializer

__all__ = [
    # actors
    "ActorPool",
    "list_named_actors",
    # waiting on many refs
    "as_completed",
    "progress",
    # placement
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
    "get_current_placement_group",
    "scheduling_strategies",
    # serialization
    "register_serializer",
    "deregister_serializer",
]

__getattr__ = module_getattr(__name__)  # a Ray name raylite lacks: an error that says so

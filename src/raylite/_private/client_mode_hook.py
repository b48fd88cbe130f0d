"""``ray._private.client_mode_hook.client_mode_should_convert``, the predicate Ray's test
suites use to skip Ray Client cases: raylite has no Ray Client mode, so it is always False.

Nothing else of Ray's module (the hooks that reroute calls to a Ray Client) is provided.
"""

__all__ = ["client_mode_should_convert"]


def client_mode_should_convert() -> bool:
    """False: calls are never rerouted to a Ray Client in raylite."""
    return False

"""Every decision in an actor's life, in one pure state machine: no I/O, no pickling.

::

    ActorManager (lock held) ── event ──> ActorStates ── instructions ──> ActorManager
      placement, hosts, channels            decides: restart or die,       carries them out
                                            which lost calls retry

    event                           from              to                instructions
    (a new record)                  -                 PENDING_CREATION  -
    placed(actor)                   PENDING_CREATION, ALIVE             -  (its calls go)
                                    RESTARTING
    unplaceable(actor, why)         PENDING_CREATION, DEAD              Die, FailCalls, FreeName
                                    RESTARTING
    init_failed(actor, why)         live              DEAD              Die, FailCalls, FreeName
    process_died(actor, why)        live              RESTARTING        RetryCalls, FailCalls,
                                                                        Restart
                                                      DEAD (none left)  Die, FailCalls, FreeName
    killed(actor, why, no_restart)  live              as process_died   Stop, then as process_died
    exited(actor, why, restart)     ALIVE             as process_died   Stop, then as process_died
    handles_freed(actor)            live, no calls    DEAD              Stop, Die, FreeName
    call_ended(actor)               as handles_freed, once its handles are gone
    shutdown(actor, why)            live              DEAD              FailCalls

(FailCalls and FreeName only when there are calls to fail, a name to free.)

A DEAD actor never changes state again: every later event about it is ignored (a stale
notice: a process death or an ``exit_actor`` seen after ``kill``). An event that cannot
happen in a state (``placed`` twice, ``unplaceable`` once ALIVE) raises
``InvalidTransition``: a bug in the manager's feeding.

"live" is PENDING_CREATION, ALIVE or RESTARTING. An actor restarts (its instance is
lost and it is still wanted) while ``restarts_left`` is not 0 (``-1``: forever, Ray's
``max_restarts=-1``); each restart takes one. Calls that were sent (``inflight``) when the
instance was lost are retried first, in their order, while their ``retries_left``
(``max_task_retries``) lasts, else fail with ``ActorUnavailableError``; once the actor is
DEAD every call it still has fails with its death (``why``), and later calls fail at once
with it (``actor.death``). Calls queued while it restarts wait in its queue. The machine
takes lost calls out of the actor's books (``queue``, ``parked``, ``inflight``); the
manager owns everything else of a call's way (queueing, sending, replies).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from ..exceptions import ActorUnavailableError

__all__ = [
    "ALIVE", "DEAD", "LIVE", "PENDING_CREATION", "RESTARTING", "ActorStates", "Die", "FailCalls",
    "FreeName", "Instruction", "InvalidTransition", "Restart", "RetryCalls", "Stop",
]  # fmt: skip

# Ray's actor states, as the state API reports them (``list_actors``).
PENDING_CREATION = "PENDING_CREATION"  # created: waiting for its arguments or a place
ALIVE = "ALIVE"  # its instance was sent to its process (calls may follow it at once)
RESTARTING = "RESTARTING"  # its instance was lost; it is being placed again
DEAD = "DEAD"  # for good: ``death`` says why
LIVE = frozenset({PENDING_CREATION, ALIVE, RESTARTING})


class CallRecord(Protocol):
    """What the machine reads of a call (``actors._Call``)."""

    retries_left: int

    @property
    def name(self) -> str: ...


class ActorRecord(Protocol):
    """What the machine reads and writes of an actor (``actors._Actor``)."""

    state: str
    restarts_left: int
    death: bytes | None
    handles_gone: bool
    name_key: tuple[str, str] | None
    queue: deque[Any]  # [call], not sent yet
    parked: dict[int, Any]  # {task id: call}, waiting for their arguments (out of order)
    inflight: dict[int, Any]  # {task id: call}, sent, not done

    @property
    def class_name(self) -> str: ...


class Stop(NamedTuple):
    """End ``actor``'s running instance: stop its thread, kill its process (dedicated) or
    tell its host to drop it (packed)."""

    actor: Any


class RetryCalls(NamedTuple):
    """Put ``calls`` (sent, lost with the instance) back at the head of ``actor``'s queue,
    in this order: they go again once it is placed."""

    actor: Any
    calls: list[Any]


class FailCalls(NamedTuple):
    """``calls`` end with ``error`` (pickled, or to be pickled) as their results."""

    calls: list[Any]
    error: bytes | BaseException


class Restart(NamedTuple):
    """Place ``actor`` again (RESTARTING): give back what its lost instance held first."""

    actor: Any


class Die(NamedTuple):
    """``actor`` is DEAD: free what it holds (its process if dedicated, its reservation, its
    creation arguments and, if detached, its own id)."""

    actor: Any


class FreeName(NamedTuple):
    """The name ``key`` (``(namespace, name)``) of a dead actor is free again."""

    key: tuple[str, str]


Instruction = Stop | RetryCalls | FailCalls | Restart | Die | FreeName
NOTHING: tuple[Instruction, ...] = ()  # the common answer to call_ended: no list made


class InvalidTransition(RuntimeError):
    """An event that cannot happen to an actor in its state: a bug in the manager's feeding."""


class ActorStates:
    """Every transition of actors' lives (the actors are the manager's records).

    Args:
        died: the pickled ``ActorDiedError`` for an actor and a reason (injected: this
            module pickles nothing itself); asked only when an actor ends because its
            handles are gone, the one death no event carries a reason for.
    """

    def __init__(self, *, died: Callable[[Any, str], bytes]) -> None:
        self._died = died

    def placed(self, actor: ActorRecord) -> None:
        """Its instance was sent to its process (or started on a driver thread): ALIVE.

        Raises:
            InvalidTransition: it is ALIVE or DEAD already.
        """
        if actor.state not in (PENDING_CREATION, RESTARTING):
            raise InvalidTransition(f"actor {actor.class_name} placed while {actor.state}")
        actor.state = ALIVE

    def unplaceable(self, actor: ActorRecord, why: bytes) -> list[Instruction]:
        """It can never be placed (it asks for more than there is, or an argument of its
        constructor failed): DEAD.

        Raises:
            InvalidTransition: it was placed already.
        """
        if actor.state not in (PENDING_CREATION, RESTARTING):
            raise InvalidTransition(f"actor {actor.class_name} unplaceable while {actor.state}")
        return self._die(actor, why, [])

    def init_failed(self, actor: ActorRecord, why: bytes) -> list[Instruction]:
        """Its ``__init__`` raised: DEAD for good, whatever ``max_restarts`` says (Ray)."""
        if actor.state == DEAD:
            return []
        return self._die(actor, why, [])

    def process_died(self, actor: ActorRecord, why: bytes) -> list[Instruction]:
        """The process it lived in died: restarted per ``max_restarts``, else DEAD."""
        if actor.state == DEAD:
            return []
        return self._lost(actor, why, restart=True)

    def killed(self, actor: ActorRecord, why: bytes, no_restart: bool) -> list[Instruction]:
        """``raylite.kill(actor, no_restart=...)``: its instance is stopped, then it restarts
        (``no_restart=False``, per ``max_restarts``) or is DEAD."""
        if actor.state == DEAD:
            return []
        return [Stop(actor), *self._lost(actor, why, restart=not no_restart)]

    def exited(self, actor: ActorRecord, why: bytes, restart: bool) -> list[Instruction]:
        """It ended itself (``exit_actor()``: no restart; ``sys.exit()``: a restart per
        ``max_restarts``). Ignored unless ALIVE: a notice from an instance already lost."""
        if actor.state != ALIVE:
            return []
        return [Stop(actor), *self._lost(actor, why, restart=restart)]

    def handles_freed(self, actor: ActorRecord) -> Sequence[Instruction]:
        """Its last handle is gone: it ends (DEAD, no restart) once it has no call left."""
        actor.handles_gone = True
        return self.call_ended(actor)

    def call_ended(self, actor: ActorRecord) -> Sequence[Instruction]:
        """One of its calls ended (hot: one attribute read when a handle is alive); ends the
        actor if that was the last call after its handles went."""
        if not actor.handles_gone or actor.state == DEAD:
            return NOTHING
        if actor.queue or actor.parked or actor.inflight:
            return NOTHING
        why = self._died(actor, "all its handles were deleted")
        return [Stop(actor), *self._lost(actor, why, restart=False)]

    def shutdown(self, actor: ActorRecord, why: bytes) -> list[Instruction]:
        """The runtime stops (or cannot go on): DEAD, its calls fail with ``why``. Nothing is
        freed (the runtime frees it all)."""
        if actor.state == DEAD:
            return []
        actor.state = DEAD
        actor.death = why
        calls = self._take_calls(actor, [])
        return [FailCalls(calls, why)] if calls else []

    # ---- helpers ------------------------------------------------------------------------

    def _lost(self, actor: ActorRecord, why: bytes, restart: bool) -> list[Instruction]:
        """Its instance is gone (stopped, or its process died): RESTARTING if ``restart``
        and restarts are left, else DEAD. Sent calls retry per their ``retries_left``."""
        can_restart = restart and actor.restarts_left != 0
        inflight: list[CallRecord] = list(actor.inflight.values())
        actor.inflight.clear()
        if not can_restart:
            return self._die(actor, why, inflight)
        retried: list[CallRecord] = []
        failed: list[Instruction] = []
        for call in inflight:
            if call.retries_left != 0:
                if call.retries_left > 0:  # -1: retried forever (max_task_retries=-1)
                    call.retries_left -= 1
                retried.append(call)
            else:
                unavailable = ActorUnavailableError(
                    f"The actor {actor.class_name} restarted while running {call.name}(); the "
                    "call is lost (set max_task_retries to retry such calls)."
                )
                failed.append(FailCalls([call], unavailable))
        if actor.restarts_left > 0:  # -1: restarts forever
            actor.restarts_left -= 1
        actor.state = RESTARTING
        # Retried calls go back in its books before any call fails: failing one may free
        # the last handle (a handle in its arguments), and an actor with no call left ends.
        out: list[Instruction] = [RetryCalls(actor, retried)] if retried else []
        return [*out, *failed, Restart(actor)]

    def _die(self, actor: ActorRecord, why: bytes, lost: list[CallRecord]) -> list[Instruction]:
        """DEAD with ``why``: ``lost`` (sent calls taken already) and every call it has fail."""
        actor.state = DEAD
        actor.death = why
        out: list[Instruction] = [Die(actor)]
        calls = self._take_calls(actor, lost)
        if calls:
            out.append(FailCalls(calls, why))
        if actor.name_key is not None:
            out.append(FreeName(actor.name_key))
        return out

    @staticmethod
    def _take_calls(actor: ActorRecord, lost: list[CallRecord]) -> list[CallRecord]:
        """``lost`` and every call in ``actor``'s books, which are left empty."""
        calls = [*lost, *actor.inflight.values(), *actor.queue, *actor.parked.values()]
        actor.inflight.clear()
        actor.queue.clear()
        actor.parked.clear()
        return calls

"""The actor state machine as a pure object: events in, instructions out; no processes.

Actors and calls here are plain records with the fields the machine reads (the manager's
``_Actor``/``_Call`` have more). The table covers every event in every state; a hypothesis
state machine drives random lives (calls submitted, sent, done, parked, processes dying,
kills, exits, handles freed) and checks the invariants after each step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from raylite._local.actor_states import (
    ALIVE,
    DEAD,
    LIVE,
    PENDING_CREATION,
    RESTARTING,
    ActorStates,
    Die,
    FailCalls,
    FreeName,
    InvalidTransition,
    Restart,
    RetryCalls,
    Stop,
)
from raylite.exceptions import ActorUnavailableError

WHY = b"pickled ActorDiedError"


@dataclass
class Call:
    task_id: int
    retries_left: int = 0
    name: str = "A.f"


@dataclass
class Actor:
    restarts_left: int = 0
    state: str = PENDING_CREATION
    death: bytes | None = None
    handles_gone: bool = False
    name_key: tuple[str, str] | None = ("ns", "a")
    class_name: str = "A"
    queue: deque[Call] = field(default_factory=deque)
    parked: dict[int, Call] = field(default_factory=dict)
    inflight: dict[int, Call] = field(default_factory=dict)

    def calls(self) -> list[Call]:
        return [*self.queue, *self.parked.values(), *self.inflight.values()]


def died(actor: Any, reason: str) -> bytes:
    return f"{actor.class_name}: {reason}".encode()


STATES = ActorStates(died=died)


# ---- the table: (state, event) -> (state, instructions) ---------------------------------------


def pending(restarts: int = 2) -> Actor:
    """PENDING_CREATION, with call 2 queued (calls wait while it is placed)."""
    actor = Actor(restarts_left=restarts)
    actor.queue.append(Call(2))
    return actor


def alive(restarts: int = 2, retries: int = 1) -> Actor:
    """ALIVE, call 1 sent (``retries`` left), call 2 queued behind it, call 3 parked (out
    of order: it waits for its arguments)."""
    actor = pending(restarts)
    STATES.placed(actor)
    actor.inflight[1] = Call(1, retries)
    actor.parked[3] = Call(3)
    return actor


def restarting() -> Actor:
    """RESTARTING after its process died: call 1 retried ahead of call 2, 1 restart left."""
    actor = alive()
    for instruction in STATES.process_died(actor, WHY):
        if isinstance(instruction, RetryCalls):
            actor.queue.extendleft(reversed(instruction.calls))
    assert actor.state == RESTARTING and [c.task_id for c in actor.queue] == [1, 2]
    assert list(actor.parked) == [3]
    return actor


def dead() -> Actor:
    actor = alive()
    STATES.killed(actor, WHY, no_restart=True)
    return actor


def idle() -> Actor:
    """ALIVE with no call."""
    actor = Actor(restarts_left=2)
    STATES.placed(actor)
    return actor


SETUPS = {"pending": pending, "alive": alive, "restarting": restarting, "dead": dead,
          "idle": idle}  # fmt: skip
EVENTS = {
    "placed": lambda a: STATES.placed(a),
    "unplaceable": lambda a: STATES.unplaceable(a, WHY),
    "init_failed": lambda a: STATES.init_failed(a, WHY),
    "process_died": lambda a: STATES.process_died(a, WHY),
    "killed": lambda a: STATES.killed(a, WHY, no_restart=False),
    "killed(no_restart)": lambda a: STATES.killed(a, WHY, no_restart=True),
    "exited(restart)": lambda a: STATES.exited(a, WHY, restart=True),
    "exited": lambda a: STATES.exited(a, WHY, restart=False),
    "handles_freed": lambda a: STATES.handles_freed(a),
    "call_ended": lambda a: STATES.call_ended(a),
    "shutdown": lambda a: STATES.shutdown(a, WHY),
}
DEATH = [Die, FailCalls, FreeName]
BAD = InvalidTransition
# {state: {event: (state after, instruction types) or InvalidTransition}}
EXPECTED: dict[str, dict[str, Any]] = {
    "pending": {
        "placed": (ALIVE, []), "unplaceable": (DEAD, DEATH), "init_failed": (DEAD, DEATH),
        "process_died": (RESTARTING, [Restart]), "killed": (RESTARTING, [Stop, Restart]),
        "killed(no_restart)": (DEAD, [Stop, *DEATH]),
        "exited(restart)": (PENDING_CREATION, []), "exited": (PENDING_CREATION, []),
        "handles_freed": (PENDING_CREATION, []), "call_ended": (PENDING_CREATION, []),
        "shutdown": (DEAD, [FailCalls]),
    },
    "alive": {
        "placed": BAD, "unplaceable": BAD, "init_failed": (DEAD, DEATH),
        "process_died": (RESTARTING, [RetryCalls, Restart]),
        "killed": (RESTARTING, [Stop, RetryCalls, Restart]),
        "killed(no_restart)": (DEAD, [Stop, *DEATH]),
        "exited(restart)": (RESTARTING, [Stop, RetryCalls, Restart]),
        "exited": (DEAD, [Stop, *DEATH]),
        "handles_freed": (ALIVE, []), "call_ended": (ALIVE, []), "shutdown": (DEAD, [FailCalls]),
    },
    "restarting": {
        "placed": (ALIVE, []), "unplaceable": (DEAD, DEATH), "init_failed": (DEAD, DEATH),
        "process_died": (RESTARTING, [Restart]), "killed": (RESTARTING, [Stop, Restart]),
        "killed(no_restart)": (DEAD, [Stop, *DEATH]),
        "exited(restart)": (RESTARTING, []), "exited": (RESTARTING, []),
        "handles_freed": (RESTARTING, []), "call_ended": (RESTARTING, []),
        "shutdown": (DEAD, [FailCalls]),
    },
    "dead": {
        "placed": BAD, "unplaceable": BAD, "init_failed": (DEAD, []), "process_died": (DEAD, []),
        "killed": (DEAD, []), "killed(no_restart)": (DEAD, []), "exited(restart)": (DEAD, []),
        "exited": (DEAD, []), "handles_freed": (DEAD, []), "call_ended": (DEAD, []),
        "shutdown": (DEAD, []),
    },
    "idle": {  # ALIVE with no call: the same, but a freed handle ends it
        "placed": BAD, "unplaceable": BAD, "init_failed": (DEAD, [Die, FreeName]),
        "process_died": (RESTARTING, [Restart]), "killed": (RESTARTING, [Stop, Restart]),
        "killed(no_restart)": (DEAD, [Stop, Die, FreeName]),
        "exited(restart)": (RESTARTING, [Stop, Restart]), "exited": (DEAD, [Stop, Die, FreeName]),
        "handles_freed": (DEAD, [Stop, Die, FreeName]), "call_ended": (ALIVE, []),
        "shutdown": (DEAD, []),
    },
}  # fmt: skip
CASES = [(s, e) for s in EXPECTED for e in EVENTS]


def test_the_table_covers_every_event_in_every_state() -> None:
    assert all(set(row) == set(EVENTS) for row in EXPECTED.values())


@pytest.mark.parametrize(("setup", "event"), CASES, ids=[f"{s}-{e}" for s, e in CASES])
def test_transition(setup: str, event: str) -> None:
    actor = SETUPS[setup]()
    expected = EXPECTED[setup][event]
    if expected is InvalidTransition:
        before = actor.state
        with pytest.raises(InvalidTransition):
            EVENTS[event](actor)
        assert actor.state == before
        return
    after, kinds = expected
    calls = sorted(c.task_id for c in actor.calls())
    out = EVENTS[event](actor) or []
    assert [type(i) for i in out] == kinds
    assert actor.state == after
    failed = sorted(c.task_id for i in out if isinstance(i, FailCalls) for c in i.calls)
    retried = [c.task_id for i in out if isinstance(i, RetryCalls) for c in i.calls]
    if after == DEAD and kinds:  # it keeps no call: each was failed, once
        assert actor.calls() == [] and failed == calls
    else:  # every call is still in its books (or to be put back: retried), or failed
        assert sorted([*failed, *retried, *(c.task_id for c in actor.calls())]) == calls


def test_a_lost_call_without_retries_fails_unavailable_and_the_rest_retry_in_order() -> None:
    actor = alive(retries=0)
    actor.inflight[3] = Call(3, retries_left=2)
    out = STATES.process_died(actor, WHY)
    # Retried calls first: back in its books before failing one can free its last handle.
    assert [type(i) for i in out] == [RetryCalls, FailCalls, Restart]
    assert out[0] == RetryCalls(actor, [Call(3, retries_left=1)])
    assert isinstance(out[1], FailCalls) and isinstance(out[1].error, ActorUnavailableError)
    assert "restarted while running A.f()" in str(out[1].error)
    assert actor.inflight == {} and actor.restarts_left == 1


def test_failing_a_lost_call_that_frees_the_last_handle_keeps_the_retried_ones() -> None:
    # Failing call 4 frees the actor's last handle (it was in 4's arguments): the manager
    # feeds handles_freed while carrying out; call 1, retried, must keep the actor going.
    actor = idle()
    actor.inflight.update({1: Call(1, retries_left=1), 4: Call(4)})
    ended = []
    for instruction in STATES.process_died(actor, WHY):
        match instruction:
            case RetryCalls(_, calls):
                actor.queue.extendleft(reversed(calls))
            case FailCalls(calls, _):
                ended += [c.task_id for c in calls]
                assert STATES.handles_freed(actor) == ()
    assert ended == [4] and [c.task_id for c in actor.queue] == [1]
    assert actor.state == RESTARTING


def test_no_restarts_left_means_dead_with_every_call_failed_with_the_death() -> None:
    actor = alive(restarts=0)
    out = STATES.process_died(actor, WHY)
    assert out[0] == Die(actor)
    assert out[1] == FailCalls([Call(1, 1), Call(2), Call(3)], WHY)  # sent, queued, parked
    assert out[2] == FreeName(("ns", "a"))
    assert actor.death == WHY


def test_max_restarts_minus_one_restarts_forever() -> None:
    actor = alive(restarts=-1)
    for _ in range(3):
        assert type(STATES.process_died(actor, WHY)[-1]) is Restart
        assert actor.restarts_left == -1
        STATES.placed(actor)


def test_init_failure_is_final_whatever_max_restarts_says() -> None:
    actor = alive(restarts=-1)
    STATES.init_failed(actor, WHY)
    assert actor.state == DEAD and actor.death == WHY


def test_freed_handles_end_the_actor_after_its_last_call() -> None:
    actor = alive()
    assert STATES.handles_freed(actor) == ()
    actor.inflight.clear()
    actor.queue.clear()
    actor.parked.clear()  # the manager: its calls are done
    out = STATES.call_ended(actor)
    assert [type(i) for i in out] == [Stop, Die, FreeName]
    assert actor.death == b"A: all its handles were deleted"


def test_an_unnamed_actor_frees_no_name() -> None:
    actor = Actor(name_key=None)
    assert STATES.unplaceable(actor, WHY) == [Die(actor)]


# ---- random lives -----------------------------------------------------------------------------


@dataclass
class Books:
    """The test's books on one actor: its options and what was carried out for it."""

    actor: Actor
    max_restarts: int
    max_task_retries: int
    restarts: int = 0  # Restart instructions
    deaths: int = 0  # Die instructions
    names_freed: int = 0
    restarted_dead: bool = False
    was_dead: bool = False


class ActorLives(RuleBasedStateMachine):
    """Random lives of a few actors, as the manager feeds them; after each step the
    invariants of issue 14 hold."""

    def __init__(self) -> None:
        super().__init__()
        self.books: list[Books] = []
        self.next_id = 1
        self.ended: dict[int, int] = {}  # {task id: times it ended}
        self.calls: dict[int, tuple[Call, Books]] = {}

    @initialize(
        options=st.lists(st.tuples(st.integers(-1, 3), st.integers(-1, 2)), min_size=1, max_size=3)
    )
    def create(self, options: list[tuple[int, int]]) -> None:
        for max_restarts, max_task_retries in options:
            actor = Actor(restarts_left=max_restarts)
            self.books.append(Books(actor, max_restarts, max_task_retries))

    def _pick(self, data: st.DataObject, ok: Any) -> Books | None:
        books = [b for b in self.books if ok(b.actor)]
        return data.draw(st.sampled_from(books)) if books else None

    # the manager's carrying out, with the books the invariants read
    def _end(self, task_id: int) -> None:
        self.ended[task_id] = self.ended.get(task_id, 0) + 1

    def _carry_out(self, books: Books, instructions: Any) -> None:
        for instruction in instructions:
            match instruction:
                case FailCalls(calls, _):
                    for call in calls:
                        self._end(call.task_id)
                case RetryCalls(actor, calls):
                    actor.queue.extendleft(reversed(calls))
                case Restart(actor):
                    books.restarts += 1
                    books.restarted_dead |= actor.state == DEAD
                case Die():
                    books.deaths += 1
                case FreeName():
                    books.names_freed += 1

    @rule(data=st.data())
    def submit(self, data: st.DataObject) -> None:
        books = self._pick(data, lambda a: not a.handles_gone)
        if books is None:
            return
        call = Call(self.next_id, retries_left=books.max_task_retries)
        self.calls[call.task_id] = (call, books)
        self.next_id += 1
        if books.actor.state == DEAD:  # fails at once with its death
            self._end(call.task_id)
        else:
            books.actor.queue.append(call)

    @rule(data=st.data())
    def place(self, data: st.DataObject) -> None:
        books = self._pick(data, lambda a: a.state in (PENDING_CREATION, RESTARTING))
        if books is not None:
            STATES.placed(books.actor)

    @rule(data=st.data(), park=st.booleans())
    def send(self, data: st.DataObject, park: bool) -> None:
        books = self._pick(data, lambda a: a.state == ALIVE and a.queue)
        if books is not None:
            call = books.actor.queue.popleft()
            (books.actor.parked if park else books.actor.inflight)[call.task_id] = call

    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        books = self._pick(data, lambda a: a.parked)
        if books is not None:
            task_id = next(iter(books.actor.parked))
            books.actor.queue.append(books.actor.parked.pop(task_id))

    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        books = self._pick(data, lambda a: a.inflight)
        if books is not None:
            task_id = data.draw(st.sampled_from(sorted(books.actor.inflight)))
            del books.actor.inflight[task_id]
            self._end(task_id)
            self._carry_out(books, STATES.call_ended(books.actor))

    @rule(data=st.data(), event=st.sampled_from(sorted(set(EVENTS) - {"placed", "call_ended"})))
    def lifecycle(self, data: st.DataObject, event: str) -> None:
        books = self._pick(data, lambda a: True)
        assert books is not None
        actor = books.actor
        if event.startswith("exited") and actor.state != ALIVE:
            return  # the manager hears exits only from a placed instance
        if event == "unplaceable" and actor.state not in (PENDING_CREATION, RESTARTING):
            return  # only an actor being placed can turn out unplaceable
        if event == "shutdown" and data.draw(st.integers(0, 9)):
            return  # (rare: it ends every life)
        self._carry_out(books, EVENTS[event](actor))

    @invariant()
    def restarts_never_below_zero(self) -> None:
        for b in self.books:
            left = b.actor.restarts_left
            if b.max_restarts == -1:
                assert left == -1
            else:
                assert 0 <= left <= b.max_restarts and b.restarts == b.max_restarts - left

    @invariant()
    def a_dead_actor_never_restarts(self) -> None:
        for b in self.books:
            assert not b.restarted_dead
            assert not b.was_dead or b.actor.state == DEAD
            b.was_dead = b.actor.state == DEAD
            assert b.deaths <= 1 and b.names_freed == b.deaths

    @invariant()
    def every_call_ends_exactly_once(self) -> None:
        assert all(n == 1 for n in self.ended.values()), self.ended
        books = [c.task_id for b in self.books for c in b.actor.calls()]
        assert len(books) == len(set(books)) and not set(books) & set(self.ended)
        assert set(books) | set(self.ended) == set(self.calls)  # none lost
        for b in self.books:
            if b.actor.state == DEAD:
                assert b.actor.calls() == []

    @invariant()
    def calls_retry_at_most_max_task_retries_times(self) -> None:
        for call, b in self.calls.values():
            if b.max_task_retries >= 0:
                assert 0 <= call.retries_left <= b.max_task_retries
            else:
                assert call.retries_left == -1

    @invariant()
    def states_are_rays(self) -> None:
        assert all(b.actor.state in LIVE | {DEAD} for b in self.books)


# No "explain" phase: on a failure it re-runs with tracing, slow here (and not needed).
ActorLives.TestCase.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)  # fmt: skip
test_actor_lives = ActorLives.TestCase

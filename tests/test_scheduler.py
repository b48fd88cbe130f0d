"""The scheduler as a pure state machine: events in, ``Actions`` out; no processes, no clocks.

Worker ids start at 101 and task ids at 1 so that a swapped pair in an assertion shows.
The scheduler takes the most recently idle worker first; tests that do not care which worker
runs a task compare sets, not exact pairs.
"""

from __future__ import annotations

import pytest

from raylite._local.scheduler import UNIT, Actions, Request, Scheduler, to_units

W1, W2, W3 = 101, 102, 103

# ---- helpers --------------------------------------------------------------------------------


def req(cpus: float = 1.0, gpus: float = 0.0, **resources: float) -> Request:
    return Request.of(cpus, gpus, resources)


CPU1 = req(1)


def sched(
    cpus: float = 2,
    workers: int = 2,
    gpus: list[float] | None = None,
    custom: dict[str, float] | None = None,
    max_workers: int = 64,
) -> Scheduler:
    """A scheduler with ``workers`` started, idle workers (ids 101, 102, ...)."""
    s = Scheduler(cpus, gpus=gpus, custom=custom, max_workers=max_workers)
    for w in range(101, 101 + workers):
        assert list(s.worker_started(w).dispatch) == []
    return s


def pairs(actions: Actions) -> list[tuple[int, int]]:
    """``actions.dispatch`` as a list (the shared no-op answer holds an empty tuple)."""
    return list(actions.dispatch)


def submit(s: Scheduler, tid: int, request: Request = CPU1, key: int = 0, deps=()) -> Actions:
    return s.submit(tid, request, key, list(deps))


def submit_many(s: Scheduler, tids, request: Request = CPU1, key: int = 0) -> list[tuple[int, int]]:
    """Submits each task; returns every dispatch the submissions caused, in order."""
    out: list[tuple[int, int]] = []
    for tid in tids:
        out += pairs(submit(s, tid, request, key))
    return out


def learn_duration(s: Scheduler, key: int, duration: float, request: Request = CPU1) -> None:
    """Runs one task of function ``key`` to completion so the scheduler knows its duration."""
    tid = 10_000 + key
    [(_, worker)] = pairs(submit(s, tid, request, key))
    s.task_done(worker, tid, duration=duration)
    assert s.in_flight(worker) == 0


# ---- units and requests ---------------------------------------------------------------------


def test_to_units_is_fixed_point():
    assert to_units(1) == UNIT
    assert to_units(0.1) * 10 == UNIT
    assert to_units(1 / 3) == UNIT // 3


def test_request_of_sorts_custom_and_drops_zero_amounts():
    r = Request.of(0.5, 0, {"b": 1, "a": 2, "unused": 0})
    assert r == Request(UNIT // 2, 0, (("a", 2 * UNIT), ("b", UNIT)))
    assert r == Request.of(0.5, 0, {"a": 2, "b": 1})  # same shape, same key
    assert r.describe() == "num_cpus=0.5, a=2, b=1"
    assert req(1, 0.25).describe() == "num_cpus=1, num_gpus=0.25"


# ---- fractional CPUs ------------------------------------------------------------------------


def test_ten_tenth_cpu_tasks_fill_one_cpu_exactly():
    s = sched(cpus=1, workers=11)
    tenth = req(0.1)
    placed = submit_many(s, range(1, 11), tenth)
    assert [t for t, _ in placed] == list(range(1, 11))
    assert len({w for _, w in placed}) == 10  # one lease each
    assert "CPU" not in s.available()

    eleventh = submit(s, 11, tenth)
    assert pairs(eleventh) == []
    assert eleventh.start_workers == 0  # an idle worker exists; the CPU is what is missing
    assert s.pending_count() == 1

    worker_of_3 = dict(placed)[3]
    assert pairs(s.task_done(worker_of_3, 3)) == [(11, worker_of_3)]
    assert s.pending_count() == 0


def test_fractions_are_exact_in_available():
    s = sched(cpus=1, workers=4)
    submit_many(s, [1, 2, 3], req(0.1))
    assert s.available() == {"CPU": 0.7}
    assert s.total() == {"CPU": 1.0}
    submit_many(s, [4], req(0.7))
    assert s.available() == {}
    assert pairs(submit(s, 5, req(0.01))) == []


# ---- custom resources -----------------------------------------------------------------------


def test_custom_resource_caps_concurrency():
    s = sched(cpus=8, workers=8, custom={"search": 4})
    search = req(1, search=1)
    placed = submit_many(s, range(1, 7), search)
    assert [t for t, _ in placed] == [1, 2, 3, 4]
    assert s.available() == {"CPU": 4.0}  # "search" is all taken, so it is not listed
    assert s.total() == {"CPU": 8.0, "search": 4.0}

    # Tasks that do not need the resource are not held back by it.
    assert len(pairs(submit(s, 7, CPU1))) == 1

    assert pairs(s.task_done(dict(placed)[2], 2)) == [(5, dict(placed)[2])]
    assert s.available() == {"CPU": 3.0}


def test_fractional_custom_resource():
    s = sched(cpus=8, workers=8, custom={"slot": 1})
    placed = submit_many(s, range(1, 5), req(0.5, slot=0.25))
    assert len(placed) == 4
    assert pairs(submit(s, 5, req(0.5, slot=0.25))) == []


# ---- GPUs -----------------------------------------------------------------------------------


def test_whole_gpus_get_distinct_ids():
    s = sched(cpus=4, workers=4, gpus=[1, 1])
    one_gpu = req(1, 1)
    placed = submit_many(s, [1, 2, 3], one_gpu)
    assert [t for t, _ in placed] == [1, 2]
    (_, wa), (_, wb) = placed
    assert sorted(s.gpu_ids(wa) + s.gpu_ids(wb)) == [0, 1]
    assert "GPU" not in s.available()

    freed = s.gpu_ids(wa)
    assert pairs(s.task_done(wa, 1)) == [(3, wa)]
    assert s.gpu_ids(wa) == freed  # the next lease got the GPU the first one gave back


def test_multi_gpu_request_takes_whole_gpus():
    s = sched(cpus=4, workers=4, gpus=[1, 1, 1])
    [(_, w2gpu)] = pairs(submit(s, 1, req(1, 2)))
    assert len(set(s.gpu_ids(w2gpu))) == 2
    [(_, w1gpu)] = pairs(submit(s, 2, req(1, 1)))
    assert set(s.gpu_ids(w1gpu)).isdisjoint(s.gpu_ids(w2gpu))
    assert pairs(submit(s, 3, req(1, 2))) == []  # one GPU left: not enough
    assert s.available() == {"CPU": 2.0}


def test_fractional_gpus_pack_onto_one_gpu():
    s = sched(cpus=8, workers=8, gpus=[1, 1])
    quarter = req(0.1, 0.25)
    placed = submit_many(s, range(1, 6), quarter)
    assert len(placed) == 5
    ids = [s.gpu_ids(w) for _, w in placed]
    assert ids[0] == ids[1] == ids[2] == ids[3]
    assert ids[4] != ids[0]
    assert s.available()["GPU"] == 0.75


def test_packing_fractions_keeps_a_whole_gpu_free():
    s = sched(cpus=8, workers=8, gpus=[1, 1])
    halves = submit_many(s, [1, 2], req(0.1, 0.5))
    assert s.gpu_ids(halves[0][1]) == s.gpu_ids(halves[1][1])
    [(_, whole)] = pairs(submit(s, 3, req(0.1, 1)))
    assert s.gpu_ids(whole) != s.gpu_ids(halves[0][1])


def test_fraction_goes_to_the_fullest_gpu_with_room():
    s = sched(cpus=8, workers=8, gpus=[1, 1])
    [(_, wa)] = pairs(submit(s, 1, req(0.1, 0.5)))
    [(_, wb)] = pairs(submit(s, 2, req(0.1, 0.75)))  # only the other GPU has room
    assert s.gpu_ids(wa) != s.gpu_ids(wb)
    s.task_done(wa, 1)  # free: one whole GPU, and 0.25 of the other
    [(_, wc)] = pairs(submit(s, 3, req(0.1, 0.25)))
    assert s.gpu_ids(wc) == s.gpu_ids(wb)
    assert len(pairs(submit(s, 4, req(0.1, 1)))) == 1


def test_fractional_node_gpu_total_caps_reservations():
    s = sched(cpus=4, workers=4, gpus=[0.2])
    assert s.total()["GPU"] == 0.2
    assert s.infeasible(req(1, 0.1)) is None
    placed = submit_many(s, [1, 2, 3], req(1, 0.1))
    assert [t for t, _ in placed] == [1, 2]
    assert [s.gpu_ids(w) for _, w in placed] == [[0], [0]]
    assert "GPU" not in s.available()
    why = s.infeasible(req(1, 0.25))
    assert why is not None and "num_gpus=0.25" in why and "0.2" in why


@pytest.mark.parametrize(
    ("scheduler", "request_", "expected"),
    [
        (Scheduler(2), req(4), ["num_cpus=4", "2 CPUs"]),
        (Scheduler(2), req(2.5), ["num_cpus=2.5", "2 CPUs"]),
        (Scheduler(2), req(1, 1), ["num_gpus=1", "none"]),
        (Scheduler(2, gpus=[1]), req(1, 2), ["num_gpus=2", "1 GPUs"]),
        (Scheduler(2, gpus=[1, 1]), req(1, 1.5), ["num_gpus=1.5", "whole"]),
        (Scheduler(2, custom={"search": 4}), req(1, search=5), ["'search'=5", "has 4"]),
        (Scheduler(2), req(1, tpu=1), ["'tpu'=1", "has 0"]),
    ],
    ids=["cpus", "fractional-cpus", "no-gpus", "too-many-gpus", "gpu-fraction-above-1",
         "custom", "unknown-custom"],
)  # fmt: skip
def test_infeasible_names_the_resource_and_amounts(scheduler, request_, expected):
    why = scheduler.infeasible(request_)
    assert why is not None
    for fragment in expected:
        assert fragment in why


@pytest.mark.parametrize(
    "request_", [req(2), req(0), req(1, 1), req(1, 2), req(0.5, 0.5, search=4)]
)
def test_feasible_requests(request_):
    assert Scheduler(2, gpus=[1, 1], custom={"search": 4}).infeasible(request_) is None


# ---- releasing resources --------------------------------------------------------------------


def test_task_done_releases_everything_the_lease_held():
    s = sched(cpus=2, workers=2, gpus=[1], custom={"x": 2})
    r = req(1.5, 0.5, x=1.5)
    [(_, w)] = pairs(submit(s, 1, r))
    assert s.available() == {"CPU": 0.5, "GPU": 0.5, "x": 0.5}
    assert pairs(s.task_done(w, 1)) == []
    assert s.available() == s.total()
    assert s.gpu_ids(w) == []


def test_worker_died_returns_lost_tasks_running_first_and_releases():
    s = sched(cpus=1, workers=2, gpus=[1], custom={"x": 1})
    heavy = req(1, 1, x=1)
    learn_duration(s, key=0, duration=1e-5, request=heavy)
    placed = submit_many(s, [1, 2, 3], heavy)
    [w] = {w for _, w in placed}
    assert s.queued_on(w) == [1, 2, 3]
    [other] = {W1, W2} - {w}
    assert pairs(submit(s, 4, CPU1)) == []  # the lease holds the only CPU

    actions, lost = s.worker_died(w)
    assert lost == [1, 2, 3]
    assert pairs(actions) == [(4, other)]
    assert s.available() == {"GPU": 1.0, "x": 1.0}
    assert s.queued_on(w) == [] and s.gpu_ids(w) == []

    # The dead worker is never used again; a late task_done from it is harmless.
    assert pairs(s.task_done(w, 1)) == []
    assert pairs(s.task_done(other, 4)) == []
    assert s.available() == s.total()
    [(_, w5)] = pairs(submit(s, 5, heavy))
    assert w5 == other


def test_worker_died_idle_is_forgotten():
    s = sched(cpus=1, workers=1)
    actions, lost = s.worker_died(W1)
    assert lost == [] and pairs(actions) == []
    asked = submit(s, 1)
    assert pairs(asked) == [] and asked.start_workers == 1


def test_worker_died_while_blocked_does_not_double_free_cpu():
    s = sched(cpus=1, workers=2)
    [(_, w)] = pairs(submit(s, 1))
    s.worker_blocked(w)  # lends its CPU
    [(_, other)] = pairs(submit(s, 2))
    _, lost = s.worker_died(w)
    assert lost == [1]
    assert "CPU" not in s.available()  # task 2 still holds the one CPU
    s.task_done(other, 2)
    assert s.available() == {"CPU": 1.0}


def test_cancel_queued_task():
    s = sched(cpus=1, workers=1)
    assert pairs(submit(s, 1)) == [(1, W1)]
    submit_many(s, [2, 3])
    assert s.pending_count() == 2

    assert s.cancel(2) is True
    assert s.cancel(2) is False  # gone
    assert s.cancel(1) is False  # dispatched
    assert s.cancel(99) is False  # never seen
    assert s.pending_count() == 1

    assert pairs(s.task_done(W1, 1)) == [(3, W1)]
    assert pairs(s.task_done(W1, 3)) == []
    assert s.available() == {"CPU": 1.0}
    assert s.pending_count() == 0


def test_cancel_pipelined_task_returns_false():
    s = sched(cpus=1, workers=1)
    learn_duration(s, key=0, duration=1e-5)
    submit_many(s, [1, 2])
    assert s.queued_on(W1) == [1, 2]
    assert s.cancel(2) is False


def test_cancel_task_waiting_for_dependencies():
    s = sched(cpus=1, workers=1)
    submit(s, 1, deps=[50])
    assert s.cancel(1) is True
    assert pairs(s.object_ready(50)) == []
    assert s.pending_count() == 0
    assert s.available() == {"CPU": 1.0}


# ---- dependencies ---------------------------------------------------------------------------


def test_task_waits_for_every_dependency():
    s = sched(cpus=1, workers=1)
    waiting = submit(s, 1, deps=[50, 51])
    assert pairs(waiting) == [] and waiting.start_workers == 0
    assert s.pending_count() == 1
    assert pairs(s.object_ready(50)) == []
    assert pairs(s.object_ready(99)) == []  # nobody waits for it
    assert pairs(s.object_ready(51)) == [(1, W1)]
    assert s.pending_count() == 0


def test_one_object_releases_every_task_waiting_for_it():
    s = sched(cpus=2, workers=2)
    submit(s, 1, deps=[50])
    submit(s, 2, deps=[50])
    assert sorted(t for t, _ in pairs(s.object_ready(50))) == [1, 2]


def test_ready_task_does_not_wait_behind_one_with_missing_deps():
    s = sched(cpus=1, workers=1)
    submit(s, 1, deps=[50])
    assert pairs(submit(s, 2)) == [(2, W1)]
    assert pairs(s.object_ready(50)) == []  # ready now, but the CPU is taken
    assert pairs(s.task_done(W1, 2)) == [(1, W1)]


def test_dependency_ready_task_asks_for_a_worker():
    s = Scheduler(2)
    assert submit(s, 1, deps=[50]).start_workers == 0
    assert s.object_ready(50).start_workers == 1


# ---- FIFO -----------------------------------------------------------------------------------


def test_one_shape_dispatches_in_submission_order():
    s = sched(cpus=1, workers=1)
    assert submit_many(s, range(1, 6)) == [(1, W1)]
    order = []
    for tid in range(1, 6):
        order += [t for t, _ in pairs(s.task_done(W1, tid))]
    assert order == [2, 3, 4, 5]


def test_tasks_that_join_a_waiting_shape_run_in_order_as_workers_free():
    s = sched(cpus=1, workers=2)  # a worker stays idle: the CPU is what they wait for
    submit(s, 1)
    for tid in (2, 3, 4):  # 2 starts its shape's queue; 3 and 4 join it
        actions = submit(s, tid)
        assert pairs(actions) == [] and actions.start_workers == 0
    assert s.waiting_for_resources() == {CPU1: (2, 3)}
    [(_, w)] = pairs(s.task_done(next(w for w in (W1, W2) if s.in_flight(w)), 1))
    assert s.queued_on(w) == [2]
    s.task_done(w, 2)
    assert [tid for w in (W1, W2) for tid in s.queued_on(w)] == [3]
    s.task_done(next(w for w in (W1, W2) if s.in_flight(w)), 3)
    assert [tid for w in (W1, W2) for tid in s.queued_on(w)] == [4]


def test_task_joining_a_waiting_shape_still_asks_for_a_worker_that_fits():
    s = sched(cpus=3, workers=1)
    assert pairs(submit(s, 1)) == [(1, W1)]
    assert submit(s, 2).start_workers == 1  # CPUs free, no idle worker: one more process
    assert submit(s, 3).start_workers == 1  # it joins 2's queue, and a third CPU is free
    assert submit(s, 4).start_workers == 0  # every free CPU has a worker coming
    assert pairs(s.worker_started(W2)) == [(2, W2)]
    assert pairs(s.worker_started(W3)) == [(3, W3)]


def test_oldest_head_goes_first_across_shapes():
    s = sched(cpus=1, workers=1, custom={"tag": 1})
    tagged, whole, half = req(1, tag=1), req(1), req(0.5)
    # Let the half-CPU shape queue once, so it is the older of the two queues.
    assert pairs(submit(s, 1, tagged)) == [(1, W1)]
    assert pairs(submit(s, 2, half)) == []
    assert pairs(s.task_done(W1, 1)) == [(2, W1)]
    assert pairs(s.task_done(W1, 2)) == []

    # Task 3 runs; nothing of its shape waits, so its lease closes when it is done.
    assert pairs(submit(s, 3, tagged)) == [(3, W1)]
    submit(s, 4, whole)
    submit(s, 5, half)
    assert s.pending_count() == 2
    assert pairs(s.task_done(W1, 3)) == [(4, W1)]  # the older task, not the older queue


def test_head_that_does_not_fit_does_not_block_another_shape():
    s = sched(cpus=2, workers=3)
    [(_, w1)] = pairs(submit(s, 1))
    assert pairs(submit(s, 2, req(2))) == []
    [(_, w3)] = pairs(submit(s, 3))
    assert pairs(s.task_done(w1, 1)) == []
    [(tid, _)] = pairs(s.task_done(w3, 3))
    assert tid == 2


# ---- pipelining -----------------------------------------------------------------------------


def test_unknown_duration_means_no_pipelining():
    s = sched(cpus=1, workers=1)
    assert submit_many(s, [1, 2, 3]) == [(1, W1)]
    assert s.in_flight(W1) == 1


def test_tiny_tasks_are_pipelined_onto_a_busy_worker():
    s = sched(cpus=1, workers=1)
    learn_duration(s, key=0, duration=1e-5)
    assert submit_many(s, [1, 2, 3, 4]) == [(1, W1), (2, W1), (3, W1), (4, W1)]
    assert s.queued_on(W1) == [1, 2, 3, 4]
    assert s.available() == {}  # one lease, one CPU, however many tasks it holds
    # Depth is per function: another function of the same shape does not queue behind.
    assert pairs(submit(s, 5, key=1)) == []


def test_pipeline_depth_follows_duration():
    s = sched(cpus=1, workers=1)
    learn_duration(s, key=0, duration=0.001)  # PIPELINE_SECONDS / 0.001 s = 2 tasks
    assert submit_many(s, [1, 2, 3]) == [(1, W1), (2, W1)]
    assert pairs(s.task_done(W1, 1, duration=0.001)) == [(3, W1)]


def test_pipelining_spreads_over_leases():
    s = sched(cpus=2, workers=2)
    learn_duration(s, key=0, duration=1e-5)
    placed = submit_many(s, [1, 2, 3, 4])
    assert len(placed) == 4
    assert s.in_flight(W1) == s.in_flight(W2) == 2


def test_long_duration_brings_depth_back_to_one():
    s = sched(cpus=1, workers=1)
    learn_duration(s, key=0, duration=1e-5)
    assert submit_many(s, [1, 2]) == [(1, W1), (2, W1)]
    s.task_done(W1, 1, duration=1.0)
    s.task_done(W1, 2, duration=1.0)
    assert submit_many(s, [3, 4]) == [(3, W1)]


def test_depth_is_judged_from_smoothed_recent_durations():
    s = sched(cpus=1, workers=1)
    learn_duration(s, key=0, duration=1e-5)
    [(_, w)] = pairs(submit(s, 1))
    s.task_done(w, 1, duration=0.001)  # alone this would mean depth 2; one slow run is damped
    assert len(submit_many(s, range(2, 7))) == 5


def test_batched_task_done_from_one_worker_matches_one_by_one():
    s = sched(cpus=1, workers=1)
    learn_duration(s, key=0, duration=0.001)  # depth 2
    submit_many(s, [1, 2, 3, 4])
    assert s.queued_on(W1) == [1, 2]
    actions = s.tasks_done([(W1, 1, 0.001), (W1, 2, 0.001)])
    assert pairs(actions) == [(3, W1), (4, W1)]
    s.tasks_done([(W1, 3, 0.001), (W1, 4, 0.001)])
    assert s.available() == {"CPU": 1.0}


def test_batched_task_done_from_two_workers_closes_unused_lease():
    s = sched(cpus=2, workers=2)
    submit_many(s, [1, 2, 3])  # 1 and 2 run, 3 waits
    w_of = {tid: w for w in (W1, W2) for tid in s.queued_on(w)}
    actions = s.tasks_done([(w_of[1], 1, 1.0), (w_of[2], 2, 1.0)])
    [(_, w3)] = pairs(actions)
    s.task_done(w3, 3, 1.0)
    assert s.available() == {"CPU": 2.0}
    # Nothing runs, so a 2-CPU task must be placed.
    assert len(pairs(submit(s, 4, req(2)))) == 1


# ---- blocked workers ------------------------------------------------------------------------


def test_blocked_worker_lends_its_cpu():
    s = sched(cpus=1, workers=2)
    [(_, wa)] = pairs(submit(s, 1))
    [wb] = {W1, W2} - {wa}
    assert pairs(submit(s, 2)) == []
    assert pairs(s.worker_blocked(wa)) == [(2, wb)]
    assert pairs(s.worker_blocked(wa)) == []  # lends once

    assert pairs(s.worker_unblocked(wa)) == []
    assert "CPU" not in s.available()  # oversubscribed for a moment: shown as none free
    assert pairs(submit(s, 3, req(0.5))) == []
    s.task_done(wb, 2)
    assert "CPU" not in s.available()  # wa took its CPU back: 1 - 1 = 0
    s.task_done(wa, 1)
    assert pairs(s.task_done(wa, 1)) == []  # duplicate is harmless
    assert s.available() == {"CPU": 0.5}  # task 3 got the CPU back in between


def test_blocked_worker_asks_for_a_worker_for_queued_tasks():
    s = sched(cpus=1, workers=1)
    submit(s, 1)
    assert submit(s, 2).start_workers == 0  # nothing fits, so no worker could help
    actions = s.worker_blocked(W1)
    assert pairs(actions) == [] and actions.start_workers == 1
    assert pairs(s.worker_started(W2)) == [(2, W2)]


def test_returned_tasks_go_first_and_not_back_to_the_blocked_worker():
    s = sched(cpus=1, workers=1)
    learn_duration(s, key=0, duration=0.0005)  # depth 4
    assert submit_many(s, range(1, 7)) == [(t, W1) for t in (1, 2, 3, 4)]
    assert s.worker_blocked(W1).start_workers == 1

    returned = s.tasks_returned(W1, [2, 3, 4])
    assert pairs(returned) == [] and returned.start_workers == 0  # one is starting already
    assert s.queued_on(W1) == [1]
    assert s.pending_count() == 5

    assert pairs(s.worker_started(W2)) == [(2, W2), (3, W2), (4, W2), (5, W2)]
    assert s.pending_count() == 1


def test_unblocked_worker_can_take_pipelined_tasks_again():
    s = sched(cpus=1, workers=1)
    learn_duration(s, key=0, duration=1e-5)
    submit(s, 1)
    s.worker_blocked(W1)
    assert s.worker_unblocked(W1).start_workers == 0
    assert pairs(submit(s, 2)) == [(2, W1)]


def test_deeper_nested_tasks_go_before_older_shallower_ones():
    s = sched(cpus=1, workers=1)
    submit(s, 1)  # runs on W1
    submit_many(s, [2, 3])  # two more top-level tasks wait
    s.submit(4, CPU1, 0, [], depth=1)  # task 1's children: depth 1
    s.submit(5, CPU1, 0, [], depth=1)
    s.submit(6, CPU1, 0, [], depth=2)  # a grandchild, submitted last
    s.worker_blocked(W1)  # task 1 waits for its children: its CPU goes to the deepest
    assert pairs(s.worker_started(W2)) == [(6, W2)]
    s.task_done(W2, 6)
    assert s.queued_on(W2) == [4]  # then depth 1 in submission order, then depth 0
    s.task_done(W2, 4)
    assert s.queued_on(W2) == [5]
    s.task_done(W2, 5)
    assert s.queued_on(W2) == [2]


def test_stalled_when_every_worker_is_blocked_and_none_may_start():
    s = sched(cpus=1, workers=2, max_workers=2)
    [(_, wa)] = pairs(submit(s, 1))
    s.submit(2, CPU1, 0, [], depth=1)
    assert s.stalled() == []  # an idle worker takes it once the CPU is lent
    [(_, wb)] = pairs(s.worker_blocked(wa))
    s.submit(3, CPU1, 0, [], depth=2)
    assert s.stalled() == []  # wb runs task 2: it may finish
    actions = s.worker_blocked(wb)
    assert actions.start_workers == 0  # the cap: no third process
    assert s.stalled() == [3]
    s.worker_unblocked(wb)  # e.g. a get() timed out: it runs again, so no stall
    assert s.stalled() == []


# ---- starting workers -----------------------------------------------------------------------


def test_asks_for_workers_up_to_what_fits():
    s = Scheduler(4)
    assert submit(s, 1).start_workers == 1
    assert submit(s, 2).start_workers == 1
    assert sum(submit(s, t).start_workers for t in range(3, 9)) == 2  # 4 CPUs: 4 workers
    assert pairs(s.worker_started(W1)) == [(1, W1)]
    assert pairs(s.worker_started(W2)) == [(2, W2)]


def test_start_failure_lets_it_ask_again():
    s = Scheduler(1)
    assert submit(s, 1).start_workers == 1
    assert submit(s, 2).start_workers == 0
    assert s.worker_start_failed().start_workers == 0
    assert submit(s, 3).start_workers == 1


def test_max_workers_caps_starting_and_running():
    s = sched(cpus=8, workers=1, max_workers=3)
    asked = [submit(s, t).start_workers for t in range(1, 9)]
    assert sum(asked) == 2
    assert s.prestart(5) == 0
    s.worker_blocked(W1)  # blocked workers still count
    assert s.worker_started(W2).start_workers == 0
    assert s.worker_started(W3).start_workers == 0


def test_prestart_counts_as_starting():
    s = Scheduler(4, max_workers=3)
    assert s.prestart(10) == 3
    assert s.prestart(1) == 0
    assert submit(s, 1).start_workers == 0  # the prestarted ones will take it
    assert pairs(s.worker_started(W1)) == [(1, W1)]
    assert s.prestart(-1) == 0


def test_zero_cpu_task_gets_a_worker_when_cpus_are_full():
    s = sched(cpus=1, workers=1)
    submit(s, 1)
    asked = submit(s, 2, req(0))
    assert pairs(asked) == [] and asked.start_workers == 1


def test_oversubscribed_shape_does_not_cancel_other_demand():
    s = sched(cpus=1, workers=1)
    submit(s, 1)
    assert s.worker_blocked(W1).start_workers == 0
    assert submit(s, 2).start_workers == 1
    assert pairs(s.worker_started(W2)) == [(2, W2)]
    s.worker_unblocked(W1)  # free CPU is now -1
    submit(s, 3)  # 1 CPU: cannot fit
    asked = submit(s, 4, req(0))  # 0 CPUs: fits, only a worker is missing
    assert asked.start_workers == 1


def test_leases_and_ready_ids_show_who_holds_what_and_who_waits():
    s = sched(cpus=2, workers=2, custom={"lock": 1})
    lock = req(0, lock=1)
    [(_, holder)] = pairs(submit(s, 1, lock))
    [(_, actor)] = pairs(s.submit(2, CPU1, 0, [], dedicated=True))
    assert pairs(submit(s, 3, lock)) == []  # the lock is taken
    assert s.ready_ids() == {3}
    s.worker_blocked(holder)
    assert sorted(s.leases()) == sorted([
        (holder, lock, (1,), True, False),  # blocked in get
        (actor, CPU1, (2,), False, True),  # an actor's lease, held for its life
    ])  # fmt: skip
    s.task_done(holder, 1)
    assert s.ready_ids() == set()  # task 3 took the lock

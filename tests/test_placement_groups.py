"""Options Ray programs pass routinely, meaning what they can on one machine: placement
groups, scheduling strategies, ``runtime_env={"env_vars": ...}``, ``memory`` and
``accelerator_type``. Where Ray does the same, the test runs on Ray too (``rl``)."""

from __future__ import annotations

import os
import time

import pytest
from _helpers import wait_until

import raylite
from raylite.exceptions import PendingTaskWarning, TaskUnschedulableError
from raylite.util.placement_group import (
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from raylite.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)


@raylite.remote
def env(*names):
    return [os.environ.get(name) for name in names]


@raylite.remote
def pid():
    return os.getpid()


@raylite.remote
def hold(seconds):
    time.sleep(seconds)
    return os.getpid()


def in_group(pg, index=-1):
    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index)


# ---- placement groups -----------------------------------------------------------------


def test_placement_group_reserves_its_bundles(rl):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    assert rl.get(pg.ready(), timeout=60) == pg
    assert pg.wait(10) and pg.bundle_count == 2
    assert pg.bundle_specs == [{"CPU": 1.0}, {"CPU": 1.0}]
    row = placement_group_table(pg)
    assert row["state"] == "CREATED" and row["strategy"] == "PACK"
    assert row["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 1.0}}
    assert pg.id.hex() in placement_group_table()
    # Both CPUs are the group's now: a task outside it waits, tasks inside it run.
    outside = pid.remote()
    assert rl.wait([outside], timeout=1) == ([], [outside])
    assert rl.get(pid.options(scheduling_strategy=in_group(pg, 0)).remote(), timeout=60) > 0
    assert rl.get(pid.options(scheduling_strategy=in_group(pg)).remote(), timeout=60) > 0
    assert rl.get(pid.options(placement_group=pg).remote(), timeout=60) > 0  # Ray's old form
    remove_placement_group(pg)
    assert rl.get(outside, timeout=60) > 0  # the reservation is gone: it runs
    wait_until(lambda: placement_group_table(pg)["state"] == "REMOVED", 30, "removal")


@pytest.mark.local_only("Ray shows the group's resources under extra names too")
def test_a_bundle_runs_one_task_at_a_time(rl):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}])
    rl.get(pg.ready(), timeout=60)
    assert rl.available_resources().get("CPU", 0) == 0
    assert rl.available_resources()[f"CPU_group_0_{pg.id}"] == 1
    first = hold.options(scheduling_strategy=in_group(pg, 0)).remote(0.5)
    second = hold.options(scheduling_strategy=in_group(pg, 0)).remote(0)
    other = hold.options(scheduling_strategy=in_group(pg, 1)).remote(0)
    assert rl.get(other, timeout=60) > 0  # bundle 1 is free
    ready, _ = rl.wait([first, second], num_returns=2, timeout=60)
    assert ready == [first, second]  # bundle 0 ran them one after the other
    remove_placement_group(pg)
    assert rl.available_resources()["CPU"] == 2
    assert not any("_group_" in name for name in rl.available_resources())


def test_placement_group_checks_as_ray(rl):
    with pytest.raises(ValueError, match="Invalid placement group strategy"):
        placement_group([{"CPU": 1}], strategy="BOGUS")
    with pytest.raises(ValueError, match="Bundles must be a non-empty list"):
        placement_group([])
    with pytest.raises(ValueError, match="Bundles cannot be an empty dictionary"):
        placement_group([{"CPU": 0}])
    pg = placement_group([{"CPU": 1}])
    rl.get(pg.ready(), timeout=60)
    with pytest.raises(ValueError, match="cannot fit into any bundles"):
        pid.options(num_cpus=2, scheduling_strategy=in_group(pg, 0)).remote()
    with pytest.raises(ValueError, match="placement group bundle index 3 is invalid"):
        pid.options(scheduling_strategy=in_group(pg, 3)).remote()
    remove_placement_group(pg)


@pytest.mark.filterwarnings("ignore::raylite.exceptions.PendingTaskWarning")
def test_a_group_too_big_for_the_machine_stays_pending(rl):
    pg = placement_group([{"CPU": 3}])  # 2 CPUs here
    assert not pg.wait(1)
    assert placement_group_table(pg)["state"] == "PENDING"
    remove_placement_group(pg)


@pytest.mark.local_only("raylite warns at once; Ray's autoscaler reports it")
def test_a_group_too_big_warns_at_once(rl):
    with pytest.warns(PendingTaskWarning, match="can never be reserved here: num_cpus=3"):
        placement_group([{"CPU": 3}])


@pytest.mark.local_only("raylite's error; Ray keeps such a task pending forever")
def test_a_task_in_a_removed_group_fails_at_get(rl):
    pg = placement_group([{"CPU": 1}])
    rl.get(pg.ready(), timeout=60)
    remove_placement_group(pg)
    with pytest.warns(PendingTaskWarning):
        ref = pid.options(scheduling_strategy=in_group(pg)).remote()
    with pytest.raises(TaskUnschedulableError, match="placement group .* was removed"):
        rl.get(ref)


def test_an_actor_in_a_group_holds_its_bundle(rl):
    @rl.remote(num_cpus=1)
    class Worker:
        def pid(self):
            return os.getpid()

    pg = placement_group([{"CPU": 1}])
    rl.get(pg.ready(), timeout=60)
    actor = Worker.options(scheduling_strategy=in_group(pg, 0)).remote()
    assert rl.get(actor.pid.remote(), timeout=60) > 0
    # The bundle is the actor's: another task in the group waits while it lives.
    waiting = pid.options(scheduling_strategy=in_group(pg, 0)).remote()
    assert rl.wait([waiting], timeout=1) == ([], [waiting])
    rl.kill(actor)
    assert rl.get(waiting, timeout=60) > 0
    remove_placement_group(pg)


@pytest.mark.local_only("the local runtime hands out GPUs per task")
def test_gpu_bundles_are_refused_with_the_fix(rl):
    with pytest.raises(ValueError, match="bundles with GPUs are not supported"):
        placement_group([{"GPU": 1}])


# ---- scheduling strategies ------------------------------------------------------------


def test_default_spread_and_affinity_to_this_node_run(rl):
    node = rl.get_runtime_context().get_node_id()
    for strategy in ("DEFAULT", "SPREAD", NodeAffinitySchedulingStrategy(node, soft=False)):
        assert rl.get(pid.options(scheduling_strategy=strategy).remote(), timeout=60) > 0
    soft = NodeAffinitySchedulingStrategy("ab" * 28, soft=True)
    assert rl.get(pid.options(scheduling_strategy=soft).remote(), timeout=60) > 0
    with pytest.raises(ValueError, match="Invalid scheduling_strategy value BOGUS"):
        pid.options(scheduling_strategy="BOGUS")


@pytest.mark.filterwarnings("ignore::raylite.exceptions.PendingTaskWarning")
def test_hard_affinity_to_another_node_fails_at_get(rl):
    strategy = NodeAffinitySchedulingStrategy("ab" * 28, soft=False)
    with pytest.raises(TaskUnschedulableError):
        rl.get(pid.options(scheduling_strategy=strategy).remote(), timeout=60)


@pytest.mark.local_only("raylite's message names the fix")
def test_hard_affinity_error_names_the_fix(rl):
    strategy = NodeAffinitySchedulingStrategy("ab" * 28, soft=False)
    with pytest.warns(PendingTaskWarning, match="get_node_id"):
        ref = pid.options(scheduling_strategy=strategy).remote()
    with pytest.raises(TaskUnschedulableError, match=r"soft=True"):
        rl.get(ref)


def test_scheduling_strategies_resolve_as_a_module():
    import raylite.util.scheduling_strategies as strategies

    assert strategies.PlacementGroupSchedulingStrategy is PlacementGroupSchedulingStrategy
    assert raylite.util.scheduling_strategies is strategies


# ---- runtime_env, memory, accelerator_type --------------------------------------------


def test_env_vars_are_set_for_that_task_only(rl):
    runtime_env = {"env_vars": {"RAYLITE_SEMANTICS_A": "task", "HOME": "/elsewhere"}}
    home = os.environ.get("HOME")
    with_env = env.options(runtime_env=runtime_env)
    assert rl.get(with_env.remote("RAYLITE_SEMANTICS_A", "HOME")) == ["task", "/elsewhere"]
    # The next tasks (the same worker processes) see the environment as it was.
    for _ in range(4):
        assert rl.get(env.remote("RAYLITE_SEMANTICS_A", "HOME")) == [None, home]


def test_env_vars_of_an_actor(rl):
    @rl.remote
    class Reader:
        def read(self, name):
            return os.environ.get(name)

    runtime_env = {"env_vars": {"RAYLITE_SEMANTICS_B": "actor"}}
    actor = Reader.options(runtime_env=runtime_env).remote()
    assert rl.get(actor.read.remote("RAYLITE_SEMANTICS_B")) == "actor"
    assert rl.get(Reader.remote().read.remote("RAYLITE_SEMANTICS_B")) is None
    assert os.environ.get("RAYLITE_SEMANTICS_B") is None


def test_env_vars_must_be_strings_as_in_ray(rl):
    with pytest.raises(TypeError, match=r"runtime_env\['env_vars'\] must be of type Dict"):
        env.options(runtime_env={"env_vars": {"A": 1}}).remote("A")


@pytest.mark.local_only("Ray installs pip packages per job")
def test_runtime_env_keys_raylite_cannot_honour_are_refused(rl):
    for key, value in [("pip", ["requests"]), ("conda", "env"), ("working_dir", ".")]:
        with pytest.raises(ValueError, match=f"runtime_env key '{key}'.*only 'env_vars'"):
            env.options(runtime_env={key: value}).remote("A")


def test_memory_is_accepted(rl):
    assert rl.get(pid.options(memory=100 * 2**20).remote(), timeout=60) > 0


@pytest.mark.local_only("Ray keeps an unknown accelerator's task pending forever")
def test_an_absent_accelerator_type_fails_at_get_naming_it(rl):
    with pytest.warns(PendingTaskWarning, match="accelerator_type='A100'"):
        ref = pid.options(accelerator_type="A100").remote()
    with pytest.raises(TaskUnschedulableError, match="accelerator_type='A100'"):
        rl.get(ref)


def test_a_declared_accelerator_type_runs():
    raylite.init(num_cpus=1, resources={"accelerator_type:A100": 1})
    try:
        assert raylite.get(pid.options(accelerator_type="A100").remote(), timeout=60) > 0
    finally:
        raylite.shutdown()


@pytest.mark.filterwarnings("ignore::raylite.exceptions.PendingTaskWarning")
def test_strict_spread_over_one_node_stays_pending(rl):
    pg = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_SPREAD")
    assert not pg.wait(1)  # as Ray on one node: each bundle needs a node of its own
    remove_placement_group(pg)
    single = placement_group([{"CPU": 0.5}], strategy="STRICT_SPREAD")
    assert single.wait(30)
    remove_placement_group(single)

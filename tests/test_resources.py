"""Resources end to end: fractions, custom resources, GPU ids (no real GPU needed)."""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings

import pytest
from _helpers import live_children, wait_until

import raylite


@raylite.remote
def gpu_env():
    return os.environ.get("CUDA_VISIBLE_DEVICES"), raylite.get_gpu_ids()


@raylite.remote
def concurrency_probe(path, hold):
    """Appends +1/-1 around a hold; the file's running sum shows how many ran at once."""
    with open(path, "a") as f:
        f.write("+1\n")
    time.sleep(hold)
    with open(path, "a") as f:
        f.write("-1\n")


@raylite.remote
def rendezvous_probe(path, n):
    """Like ``concurrency_probe``, but holds until ``n`` tasks have started (or 30 s passed),
    so a passing count never depends on how fast workers start on a loaded machine."""
    with open(path, "a") as f:
        f.write("+1\n")
    deadline = time.monotonic() + 30
    while open(path).read().split().count("+1") < n and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(path, "a") as f:
        f.write("-1\n")


def max_concurrency(path) -> int:
    peak = level = 0
    for line in open(path).read().split():
        level += int(line)
        peak = max(peak, level)
    return peak


def test_custom_resources_cap_concurrency(tmp_path):
    raylite.init(num_cpus=2, resources={"search": 1})
    try:
        path = str(tmp_path / "log")
        probe = concurrency_probe.options(num_cpus=0, resources={"search": 1})
        raylite.get([probe.remote(path, 0.05) for _ in range(6)], timeout=30)
        assert max_concurrency(path) == 1
        assert raylite.available_resources()["search"] == 1
    finally:
        raylite.shutdown()


def test_fractional_cpus_run_together(tmp_path):
    raylite.init(num_cpus=1)
    try:
        path = str(tmp_path / "log")
        probe = rendezvous_probe.options(num_cpus=0.25)
        raylite.get([probe.remote(path, 4) for _ in range(4)], timeout=90)
        assert max_concurrency(path) == 4
    finally:
        raylite.shutdown()


def test_fractional_node_total_caps_gpu_use():
    raylite.init(num_cpus=2, num_gpus=0.2)
    try:
        assert raylite.cluster_resources()["GPU"] == pytest.approx(0.2)
        with pytest.warns(raylite.exceptions.PendingTaskWarning, match="num_gpus=0.5"):
            too_big = gpu_env.options(num_gpus=0.5).remote()
        with pytest.raises(raylite.exceptions.TaskUnschedulableError, match="num_gpus=0.5"):
            raylite.get(too_big)
        env, ids = raylite.get(gpu_env.options(num_gpus=0.1).remote())
        assert env == "0" and ids == [0]
    finally:
        raylite.shutdown()


def test_whole_gpus_get_distinct_ids_and_fractions_share_one():
    raylite.init(num_cpus=4, num_gpus=2)
    try:

        @raylite.remote(num_gpus=1)
        def hold_gpu(seconds):
            time.sleep(seconds)
            return os.environ["CUDA_VISIBLE_DEVICES"], raylite.get_gpu_ids()

        both = raylite.get([hold_gpu.remote(0.5), hold_gpu.remote(0.5)], timeout=30)
        assert sorted(env for env, _ in both) == ["0", "1"]
        assert sorted(ids[0] for _, ids in both) == [0, 1]

        quarter = gpu_env.options(num_gpus=0.25)
        seen = raylite.get([quarter.remote() for _ in range(4)], timeout=30)
        assert all(env in ("0", "1") and len(ids) == 1 for env, ids in seen)
        cpu_only_env, cpu_only_ids = raylite.get(gpu_env.remote())
        assert cpu_only_env == "" and cpu_only_ids == []  # no GPU asked: none visible
    finally:
        raylite.shutdown()


def test_gpu_ids_follow_the_drivers_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    raylite.init(num_cpus=2)
    try:
        assert raylite.cluster_resources()["GPU"] == 2  # detected from the variable
        env, ids = raylite.get(gpu_env.options(num_gpus=1).remote())
        assert env in ("5", "7") and ids == [int(env)]
    finally:
        raylite.shutdown()


def test_gpu_actor_keeps_its_gpu_and_gives_it_back():
    raylite.init(num_cpus=2, num_gpus=1)
    try:

        @raylite.remote(num_gpus=1)
        class OnGpu:
            def env(self):
                return os.environ["CUDA_VISIBLE_DEVICES"], raylite.get_gpu_ids()

        actor = OnGpu.remote()
        assert raylite.get(actor.env.remote()) == ("0", [0])
        assert "GPU" not in raylite.available_resources()
        raylite.kill(actor)
        wait_until(lambda: raylite.available_resources().get("GPU") == 1, 10, "the GPU back")
    finally:
        raylite.shutdown()


@pytest.mark.local_only("exact available_resources() bookkeeping after a crash is ours")
def test_resources_are_released_after_crashes_and_cancels(rl):
    @raylite.remote(max_retries=0)
    def crash():
        os._exit(1)

    @raylite.remote
    def forever():
        threading.Event().wait()

    with pytest.raises(raylite.exceptions.WorkerCrashedError):
        raylite.get(crash.remote(), timeout=30)
    ref = forever.remote()
    wait_until(lambda: raylite.available_resources().get("CPU", 0) < 2, 10, "it to start")
    raylite.cancel(ref, force=True)
    wait_until(lambda: raylite.available_resources().get("CPU") == 2, 10, "the CPU back")


@pytest.mark.local_only("the pending-resources warning is raylite's own")
def test_a_task_waiting_for_resources_gets_one_warning_naming_the_holders(monkeypatch):
    monkeypatch.setenv("RAYLITE_PENDING_WARNING_S", "0.2")
    raylite.init(num_cpus=2)
    try:

        @raylite.remote(num_cpus=1)
        class Holder:
            def ping(self):
                return "pong"

        holders = [Holder.remote() for _ in range(2)]
        assert raylite.get([h.ping.remote() for h in holders]) == ["pong", "pong"]
        with pytest.warns(raylite.exceptions.PendingTaskWarning) as caught:
            stuck = gpu_env.remote()  # needs 1 CPU; both are held by the actors
            line = sys._getframe().f_lineno - 1
            wait_until(lambda: len(caught) > 0, 10, "the warning")
        text = str(caught[0].message)
        assert "task gpu_env()" in text and "num_cpus=1" in text
        assert "2 x actor Holder (num_cpus=1)" in text
        # It points at the .remote() that made the task, not into raylite.
        assert (caught[0].filename, caught[0].lineno) == (__file__, line)
        raylite.kill(holders[0])
        assert raylite.get(stuck, timeout=10)[1] == []  # it runs once a CPU is free
    finally:
        raylite.shutdown()


@pytest.mark.parametrize("local_mode", [False, True])
def test_memory_and_object_store_memory_are_reported_in_bytes_as_ray_does(local_mode):
    import psutil

    raylite.init(num_cpus=2, object_store_memory=100 * 2**20, local_mode=local_mode)
    try:
        total = raylite.cluster_resources()
        assert total["CPU"] == 2
        assert total["object_store_memory"] == 100 * 2**20
        # Ray: the memory available at start, less the object store's share (bytes, floats)
        assert 0 < total["memory"] <= psutil.virtual_memory().total - 100 * 2**20
        assert isinstance(total["memory"], float)
        free = raylite.available_resources()
        assert free["memory"] == total["memory"]  # no task reserves them here
        assert free["object_store_memory"] == total["object_store_memory"]
    finally:
        raylite.shutdown()


def _pending_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, raylite.exceptions.PendingTaskWarning)]


@pytest.mark.local_only("the pending-resources warning is raylite's own")
def test_tasks_queueing_behind_running_work_get_no_warning(monkeypatch):
    monkeypatch.setenv("RAYLITE_PENDING_WARNING_S", "0.2")
    raylite.init(num_cpus=1)
    try:

        @raylite.remote
        def nap(seconds):
            time.sleep(seconds)
            return seconds

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # 4 naps on 1 CPU: the last waits ~2.4 s, with the watchdog looking each second
            assert raylite.get([nap.remote(0.8) for _ in range(4)], timeout=60) == [0.8] * 4
        assert _pending_warnings(caught) == []
    finally:
        raylite.shutdown()


@pytest.mark.local_only("the pending-resources warning is raylite's own")
def test_a_holder_waiting_on_what_waits_for_it_gets_a_warning_at_the_driver_line(monkeypatch):
    monkeypatch.setenv("RAYLITE_PENDING_WARNING_S", "0.2")
    raylite.init(num_cpus=2, resources={"lock": 1})

    @raylite.remote(resources={"lock": 1})
    def inner():
        return 1

    @raylite.remote(resources={"lock": 1})
    def outer():  # holds the lock while it waits for a task that needs the lock
        return raylite.get(inner.remote())

    try:
        with pytest.warns(raylite.exceptions.PendingTaskWarning) as caught:
            ref = outer.remote()
            line = sys._getframe().f_lineno - 1
            wait_until(lambda: _pending_warnings(caught), 15, "the warning")
        warning = _pending_warnings(caught)[0]
        assert "task inner()" in str(warning.message) and "lock=1" in str(warning.message)
        assert "1 x task outer() (num_cpus=1, lock=1)" in str(warning.message)
        # inner() was submitted inside outer(): the warning points at the driver's line.
        assert (warning.filename, warning.lineno) == (__file__, line)
        raylite.cancel(ref, force=True)
    finally:
        raylite.shutdown()


@pytest.mark.local_only("the pending-resources warning is raylite's own")
def test_a_blocked_holder_whose_result_is_only_queued_gets_no_warning(monkeypatch):
    monkeypatch.setenv("RAYLITE_PENDING_WARNING_S", "0.2")
    raylite.init(num_cpus=1, resources={"lock": 1})

    @raylite.remote
    def nap(seconds):
        time.sleep(seconds)
        return seconds

    @raylite.remote(num_cpus=0, resources={"lock": 1})
    def holder():  # holds the lock while it waits for nap(), which queues for the CPU
        return raylite.get(nap.remote(0))

    @raylite.remote(num_cpus=0, resources={"lock": 1})
    def locked():
        return "ran"

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            busy = nap.remote(2.5)  # the CPU, for 2.5 s: ordinary queueing behind it
            held = holder.remote()
            wait_until(lambda: raylite.available_resources().get("lock", 0) == 0, 10, "it")
            later = locked.remote()  # waits for the lock, which comes back after the nap
            assert raylite.get([busy, held, later], timeout=60) == [2.5, 0, "ran"]
        assert _pending_warnings(caught) == []
    finally:
        raylite.shutdown()


@raylite.remote
def _get_ready(refs):
    return raylite.get(refs[0]) + 1


def test_a_nested_get_of_a_ready_object_lends_no_cpu():
    """A task whose get() is answered at once never waits, so it lends its CPU to nobody:
    300 such tasks on 2 CPUs run on the 2 workers, with no extra worker started (as in Ray;
    lending on every get started 6 workers here)."""
    raylite.init(num_cpus=2)
    try:
        ref = raylite.put(1)
        for _ in range(3):
            assert raylite.get([_get_ready.remote([ref]) for _ in range(300)]) == [2] * 300
        assert len(live_children()) <= 3, live_children()  # the zygote and 2 workers
    finally:
        raylite.shutdown()

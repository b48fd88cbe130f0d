"""Ray's test helpers that raylite provides under Ray's names (``ray._common.test_utils``,
``ray._private.test_utils``), plus ``ray.cloudpickle`` and ``ray.cluster_utils``: what a
Ray test suite gets when it runs on raylite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

import raylite
from raylite import cloudpickle
from raylite._common.test_utils import (
    Semaphore,
    SignalActor,
    async_wait_for_condition,
    run_string_as_driver,
    wait_for_condition,
)
from raylite._private.client_mode_hook import client_mode_should_convert
from raylite._private.test_utils import (
    BatchQueue,
    RayTestTimeoutException,
    client_test_enabled,
    get_error_message,
    kill_actor_and_wait_for_failure,
    run_string_as_driver_nonblocking,
    wait_for_pid_to_exit,
)
from raylite.cluster_utils import Cluster
from raylite.util.queue import Empty

pytestmark = pytest.mark.local_only("raylite's own implementations of Ray's test helpers")


def test_signal_actor_holds_waiters_until_send(rl: object) -> None:
    signal = SignalActor.remote()

    @raylite.remote
    def waits(signal: object) -> str:
        raylite.get(signal.wait.remote())  # type: ignore[attr-defined]
        return "released"

    ref = waits.remote(signal)
    wait_for_condition(lambda: raylite.get(signal.cur_num_waiters.remote()) == 1)
    ready, _ = raylite.wait([ref], timeout=0.2)
    assert ready == []  # still held
    raylite.get(signal.send.remote())
    assert raylite.get(ref, timeout=30) == "released"
    assert raylite.get(signal.cur_num_waiters.remote()) == 0
    raylite.get(signal.wait.remote(should_wait=False), timeout=30)


def test_semaphore_counts_units(rl: object) -> None:
    sema = Semaphore.remote(value=1)
    raylite.get(sema.acquire.remote())
    assert raylite.get(sema.locked.remote()) is True
    raylite.get(sema.release.remote())
    assert raylite.get(sema.locked.remote()) is False


def test_wait_for_condition_returns_once_true_and_names_the_last_error() -> None:
    start = time.monotonic()
    wait_for_condition(lambda: time.monotonic() - start > 0.05, timeout=5, retry_interval_ms=10)

    def broken() -> bool:
        raise KeyError("the last thing that went wrong")

    with pytest.raises(RuntimeError, match="the last thing that went wrong"):
        wait_for_condition(broken, timeout=0.2, retry_interval_ms=10)
    with pytest.raises(KeyError):
        wait_for_condition(broken, timeout=5, raise_exceptions=True)


def test_async_wait_for_condition_awaits_coroutine_predicates() -> None:
    import asyncio

    calls = []

    async def ready() -> bool:
        calls.append(1)
        return len(calls) >= 3

    asyncio.run(async_wait_for_condition(ready, timeout=5, retry_interval_ms=1))
    assert len(calls) == 3
    with pytest.raises(RuntimeError, match="timeout"):
        asyncio.run(async_wait_for_condition(lambda: False, timeout=0.05, retry_interval_ms=1))


def test_wait_for_pid_to_exit() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(RayTestTimeoutException, match=str(proc.pid)):
            wait_for_pid_to_exit(proc.pid, timeout=0.2)
        proc.kill()
        wait_for_pid_to_exit(proc.pid, timeout=10)  # exited, even before it is reaped
    finally:
        proc.kill()
        proc.wait()


def test_kill_actor_and_wait_for_failure_leaves_a_dead_actor(rl: object) -> None:
    @raylite.remote
    class Echo:
        def echo(self, x: int) -> int:
            return x

    actor = Echo.remote()
    assert raylite.get(actor.echo.remote(1)) == 1
    kill_actor_and_wait_for_failure(actor)
    with pytest.raises(raylite.exceptions.RayActorError):
        raylite.get(actor.echo.remote(2), timeout=30)


def test_run_string_as_driver_returns_output_and_raises_on_failure() -> None:
    out = run_string_as_driver("print('hello from a driver')")
    assert "hello from a driver" in out
    with pytest.raises(subprocess.CalledProcessError) as info:
        run_string_as_driver("import sys; print('bye'); sys.exit(3)")
    assert info.value.returncode == 3 and "bye" in info.value.output
    proc = run_string_as_driver_nonblocking("print('later')")
    out_bytes, _ = proc.communicate(timeout=60)
    assert b"later" in out_bytes and proc.returncode == 0


def test_run_string_as_driver_gives_the_child_raylite_as_ray_when_it_stands_in() -> None:
    script = textwrap.dedent(
        """
        import ray
        print("RAY_IS", ray.__name__)
        """
    )
    saved = sys.modules.get("ray")
    sys.modules["ray"] = raylite
    try:
        out = run_string_as_driver(script)
    finally:
        if saved is None:
            del sys.modules["ray"]
        else:
            sys.modules["ray"] = saved
    assert "RAY_IS raylite" in out


def test_no_client_mode_and_no_gcs_helpers() -> None:
    assert client_test_enabled() is False
    assert client_mode_should_convert() is False
    with pytest.raises(RuntimeError, match="GCS error channel"):
        get_error_message(None, 1)


def test_cluster_utils_cluster_says_raylite_is_one_machine() -> None:
    with pytest.raises(RuntimeError, match="runs every task on this machine"):
        Cluster(initialize_head=True)


def test_cloudpickle_is_the_package_raylite_uses() -> None:
    offset = 40
    add = cloudpickle.loads(cloudpickle.dumps(lambda x: x + offset))
    assert add(2) == 42


def test_rays_test_helper_modules_resolve_under_rays_names_and_nothing_else_private() -> None:
    code = textwrap.dedent(
        """
        import sys
        import raylite
        sys.modules["ray"] = raylite
        from ray._common.test_utils import SignalActor, wait_for_condition
        from ray._private.test_utils import client_test_enabled, wait_for_pid_to_exit
        from ray._private.client_mode_hook import client_mode_should_convert
        from ray import cloudpickle
        import ray.cluster_utils
        import raylite._common.test_utils
        assert SignalActor is raylite._common.test_utils.SignalActor  # one module, not two
        assert ray.cluster_utils is raylite.cluster_utils
        try:
            import ray._private.worker
        except ModuleNotFoundError as exc:
            print("worker:", "raylite does not provide ray._private.worker" in str(exc))
        ray.init(num_cpus=1)
        signal = SignalActor.remote()
        ray.get(signal.send.remote())
        ray.get(signal.wait.remote(), timeout=60)
        print("ok", client_test_enabled(), client_mode_should_convert())
        ray.shutdown()
        """
    )
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(raylite.__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["worker: True", "ok False False"]


def test_a_ray_test_module_run_by_pytest_imports_rays_test_helpers(tmp_path) -> None:
    # pytest's assertion rewriter comes before raylite's finder and takes test_utils.py for
    # a test file: it used to load raylite's helpers a second time as ray._common.test_utils,
    # whose relative imports then failed ("raylite does not provide ray._api").
    (tmp_path / "test_upstream.py").write_text(
        textwrap.dedent(
            """
            import ray
            from ray._private.test_utils import wait_for_pid_to_exit
            from ray._common.test_utils import SignalActor
            import raylite._common.test_utils


            def test_helpers_are_raylites_own():
                assert SignalActor is raylite._common.test_utils.SignalActor
                assert callable(wait_for_pid_to_exit)
            """
        )
    )
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(raylite.__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    argv = ["-m", "raylite", "run", "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(
        [sys.executable, *argv, "test_upstream.py"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_batch_queue_hands_out_batches_and_travels_as_itself(rl: object) -> None:
    q = BatchQueue()
    with pytest.raises(Empty):
        q.get_batch(2, first_timeout=0.05)
    q.put_nowait_batch(list(range(5)))
    assert q.get_batch(2) == [0, 1]
    assert q.get_batch(total_timeout=0) == [2, 3, 4]  # no size: what is there now

    @raylite.remote
    def take_three(q: BatchQueue) -> list[int]:
        return q.get_batch(3, total_timeout=30)  # waits for the items still to come

    ref = take_three.remote(q)
    q.put(5)
    q.put_nowait_batch([6, 7])
    assert raylite.get(ref, timeout=60) == [5, 6, 7]
    q.put_nowait_batch([8, 9])
    assert q.get_batch(5, total_timeout=0.05) == [8, 9]  # the timeout ends a short batch

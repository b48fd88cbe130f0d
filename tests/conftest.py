"""The ``rl`` fixture runs a test once per runtime: the local one, and real Ray.

A test that takes ``rl`` runs as ``test[local]`` and ``test[ray]``, unless it (or its
module) is marked ``@pytest.mark.local_only("why")``: behaviour Ray has no equivalent of, or
shows differently. The Ray runs share one real Ray head (``ray start --head``, 2 CPUs),
started at the first of them and killed after the last, and one connection to it, so its
warm worker processes serve every test (a new connection is a new Ray job, whose workers
take ~1.5 s to start): ``raylite.init(address=...)`` follows that connection and
``raylite.shutdown()`` leaves it open. They run after all local ones, so no local runtime
forks its workers from a process holding Ray's threads. Without ``ray`` installed they are
skipped with the command that installs it; CI installs it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _helpers import RayHead, live_children, ray_auth_env, ray_head, wait_until

import raylite

# The Ray head's folder (short: Ray's socket paths live under it) and token.
_RAY_ROOT = Path(tempfile.mkdtemp(prefix="rl-ray-"))
_RAY_ENV = ray_auth_env(_RAY_ROOT)
# raylite's session folders (logs, control sockets) go here, not in /tmp/raylite-<uid>.
_SESSIONS = Path(tempfile.mkdtemp(prefix="rl-sessions-"))
_ENV = {**_RAY_ENV, "RAYLITE_TEMP_DIR": str(_SESSIONS)}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "local_only(reason): run on the local runtime only, for the reason given"
    )
    os.environ.update(_ENV)  # before any test module imports ray, which reads it then


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in _ENV:
        os.environ.pop(name, None)
    shutil.rmtree(_RAY_ROOT, ignore_errors=True)
    shutil.rmtree(_SESSIONS, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "rl" in metafunc.fixturenames:
        local_only = metafunc.definition.get_closest_marker("local_only") is not None
        metafunc.parametrize("rl", ["local"] if local_only else ["local", "ray"], indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def on_ray(item: pytest.Item) -> bool:
        callspec = getattr(item, "callspec", None)
        on_ray_param = callspec is not None and callspec.params.get("rl") == "ray"
        return on_ray_param or "ray_cluster" in getattr(item, "fixturenames", ())

    items.sort(key=on_ray)  # stable: the Ray tests last, each group in its usual order


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayHead]:
    """One real Ray head for the whole session; this process may connect to it."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed: pip install 'raylite[ray]' to test on Ray too")
    import ray

    with ray_head(_RAY_ROOT, num_cpus=2) as head:
        try:
            yield head
        finally:
            ray.shutdown()


@pytest.fixture
def ray_connected(ray_cluster: RayHead) -> RayHead:
    """The session's Ray head, with this process connected to it (once, then reused)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_cluster.address)
    return ray_cluster


@pytest.fixture
def ray_disconnected(ray_cluster: RayHead) -> Iterator[RayHead]:
    """The session's Ray head, with this process not connected to it (also afterwards)."""
    import ray

    ray.shutdown()
    yield ray_cluster
    ray.shutdown()


@pytest.fixture
def rl(request: pytest.FixtureRequest) -> Iterator[object]:
    """raylite on one runtime, with 2 CPUs: a fresh local runtime (checking that shutdown
    leaves no process behind), or a connection to the session's Ray head."""
    if request.param == "ray":
        head: RayHead = request.getfixturevalue("ray_connected")
        raylite.init(address=head.address)
        try:
            yield raylite
        finally:
            raylite.shutdown()
        return
    raylite.init(num_cpus=2)
    try:
        yield raylite
    finally:
        raylite.shutdown()
        wait_until(lambda: not live_children(), 10, "worker processes to exit after shutdown")


@pytest.fixture(autouse=True)
def _no_session_leaks() -> Iterator[None]:
    yield
    if raylite.is_initialized():
        raylite.shutdown()
        pytest.fail("the test left raylite initialized")


@pytest.fixture
def go(tmp_path: Path) -> Iterator[str]:
    """The file a test's tasks wait for (``_helpers.wait_for_file``); made at the end
    whatever happens, so that no task is left waiting (the Ray runs share one cluster)."""
    path = tmp_path / "go"
    yield str(path)
    path.touch()

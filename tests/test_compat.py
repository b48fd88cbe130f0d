"""raylite standing in for ``ray`` (``_compat.py``, ``_ray/__init__.py``): aliasing by
``sys.modules``, ``install_as_ray()``, ``raylite run``, and the errors for Ray names raylite
lacks. Each case runs in a fresh interpreter: standing in changes a process for good.

The Ray programs that run these three ways are in ``tests/compat/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import raylite

SRC = str(Path(raylite.__file__).resolve().parents[1])


def python(code: str, *args: str, cwd: Path | None = None, timeout: float = 90) -> str:
    """Runs ``python -c code`` with raylite importable; returns stdout, failing on rc != 0."""
    proc = run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def run(argv: list[str], cwd: Path | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False
    )


def test_aliased_by_sys_modules_get_put_and_isinstance_work():
    # The crash of issue 12: the check for Ray's ref class looked up "ray" and found raylite.
    out = python(
        """
        import sys
        import raylite
        sys.modules["ray"] = raylite
        import ray
        from raylite._ray import attached, real_ray

        class NewType:
            pass

        assert not isinstance(NewType(), ray.ObjectRef)
        assert not isinstance(NewType(), ray.ObjectRefGenerator)
        assert not isinstance(NewType(), ray.actor.ActorHandle)
        assert real_ray() is None and attached() is None
        import ray.exceptions
        from ray.util.queue import Queue
        import raylite.util.queue
        assert ray.exceptions is raylite.exceptions  # not a second copy of the module
        assert Queue is raylite.util.queue.Queue
        ray.init(num_cpus=1)
        ref = ray.put("s")
        assert isinstance(ref, ray.ObjectRef)
        print(ray.get([ref, ref]))
        ray.shutdown()
        """
    )
    assert out.strip() == "['s', 's']"


def test_real_ray_is_known_by_identity():
    pytest.importorskip("ray")
    out = python(
        """
        import ray
        import raylite
        from raylite._ray import real_ray
        assert real_ray() is ray and ray is not raylite
        print(isinstance(ray.put, object), raylite.ObjectRef.__subclasshook__(ray.ObjectRef))
        """
    )
    assert out.split() == ["True", "True"]


def test_install_as_ray_gives_raylites_modules_under_rays_names():
    python(
        """
        import raylite
        raylite.install_as_ray()
        raylite.install_as_ray()  # again: nothing happens
        import ray, ray.exceptions, ray.util, ray.util.queue, ray.util.actor_pool
        import ray.util.state, ray.actor, ray.remote_function, ray.runtime_context
        from ray.util import ActorPool
        from ray.util.queue import Queue
        from ray.exceptions import RayTaskError, GetTimeoutError
        import raylite.util.queue
        assert ray is raylite and ray.util is raylite.util
        assert ray.util.queue is raylite.util.queue and Queue is raylite.util.queue.Queue
        assert ray.exceptions.RayTaskError is RayTaskError is raylite.exceptions.RayTaskError
        assert ActorPool is raylite.util.ActorPool
        assert ray.util.state.__spec__.name == "raylite.util.state"  # raylite's own spec
        """
    )


def test_ray_names_raylite_lacks_raise_errors_that_say_so():
    out = python(
        """
        import raylite
        raylite.install_as_ray()
        import ray
        for get in (lambda: ray.nodes, lambda: ray.util.inspect_serializability,
                    lambda: ray.exceptions.NodeDiedError):
            try:
                get()
            except AttributeError as exc:
                print(exc)
        for name in ("ray.data", "ray.util.collective", "ray._private.utils"):
            try:
                __import__(name)
            except ModuleNotFoundError as exc:
                print(exc)
        """
    )
    lines = out.strip().splitlines()
    assert len(lines) == 6
    for line, name in zip(
        lines,
        ["ray.nodes", "ray.util.inspect_serializability", "ray.exceptions.NodeDiedError",
         "ray.data (Ray Data)", "ray.util.collective", "ray._private.utils"],
        strict=True,
    ):  # fmt: skip
        assert line.startswith(f"raylite does not provide {name}:"), line


def test_worker_processes_import_ray_as_raylite():
    out = python(
        """
        import raylite
        raylite.install_as_ray()
        import ray

        @ray.remote
        def inside():
            import ray.util.queue
            return ray.__name__, ray.util.queue.__name__

        @ray.remote
        class Actor:
            def where(self):
                import ray.exceptions
                return ray.exceptions.__name__

        ray.init(num_cpus=2)
        dedicated = Actor.options(num_cpus=1).remote()  # a process of its own
        print(*ray.get(inside.remote()), ray.get(Actor.remote().where.remote()))
        print(ray.get(dedicated.where.remote()))
        ray.shutdown()
        """
    )
    packed_host, dedicated_host = ["raylite.exceptions"], ["raylite.exceptions"]
    assert out.split() == ["raylite", "raylite.util.queue", *packed_host, *dedicated_host]


def test_install_as_ray_refuses_when_it_cannot_take_effect():
    out = python(
        """
        import raylite
        raylite.init(num_cpus=1)
        try:
            raylite.install_as_ray()
        except RuntimeError as exc:
            print(exc)
        raylite.shutdown()
        """
    )
    assert "install_as_ray() after raylite.init()" in out
    pytest.importorskip("ray")
    out = python(
        """
        import ray, raylite
        try:
            raylite.install_as_ray()
        except RuntimeError as exc:
            print(exc)
        assert ray.__name__ == "ray"  # untouched
        """
    )
    assert "the real 'ray' package is imported in this process already" in out


def test_init_with_an_address_says_real_ray_is_out_of_reach():
    out = python(
        """
        import raylite
        raylite.install_as_ray()
        import ray
        try:
            ray.init(address="auto")
        except RuntimeError as exc:
            print(exc)
        """
    )
    assert "stands in for 'ray' in this process" in out


def test_raylite_run_runs_a_ray_program_unchanged(tmp_path: Path):
    (tmp_path / "helpers.py").write_text(
        "class Point:\n    def __init__(self, x):\n        self.x = x\n"
    )
    (tmp_path / "prog.py").write_text(
        textwrap.dedent(
            """
            import subprocess, sys
            import ray
            from helpers import Point

            @ray.remote
            def double(p):
                return Point(p.x * 2)

            p = ray.get(double.remote(Point(2)))
            assert type(p) is Point and p.x == 4  # helpers' class, by reference
            child = [sys.executable, "-c", "import ray; print(ray.__name__)"]
            print(sys.argv[1:], subprocess.run(child, capture_output=True, text=True).stdout)
            sys.exit(3)
            """
        )
    )
    for argv in (["-m", "raylite", "run"], ["-c", "from raylite.cli import main; main()", "run"]):
        proc = run([sys.executable, *argv, "prog.py", "a", "--flag"], cwd=tmp_path)
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout.strip() == "['a', '--flag'] raylite"  # the child got raylite too


def test_raylite_run_shows_the_programs_own_traceback(tmp_path: Path):
    (tmp_path / "prog.py").write_text("import ray\n\n\ndef main():\n    1 / 0\n\n\nmain()\n")
    proc = run([sys.executable, "-m", "raylite", "run", "prog.py"], cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):\n"), proc.stderr
    assert 'prog.py", line 8, in <module>' in proc.stderr
    assert "1 / 0" in proc.stderr and "ZeroDivisionError" in proc.stderr
    assert "runpy" not in proc.stderr and "_compat.py" not in proc.stderr


def test_raylite_run_dash_m_runs_a_module(tmp_path: Path):
    (tmp_path / "mod.py").write_text("import sys, ray\nprint(__name__, ray.__name__, sys.argv[1:])\n")
    proc = run([sys.executable, "-m", "raylite", "run", "-m", "mod", "x"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["__main__", "raylite", "['x']"]


def test_raylite_run_of_a_missing_script_says_so(tmp_path: Path):
    proc = run([sys.executable, "-m", "raylite", "run", "nowhere.py"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "raylite run: can't open file 'nowhere.py'" in proc.stderr

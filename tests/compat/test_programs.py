"""Ray Core programs (``programs/``) run unchanged on raylite, three ways of standing in:

- ``import_as``: the program's ``import ray`` / ``from ray... import`` lines rewritten to
  ``import raylite as ray`` / ``from raylite... import`` (and real Ray made unimportable,
  so a line the rewrite missed fails instead of running on Ray);
- ``sys_modules``: ``sys.modules["ray"] = raylite`` before the program runs;
- ``raylite_run``: ``raylite run program.py``.

Each program asserts its own results and prints ``ok`` last. They cover the ground of
Ray's documentation examples (getting started, Monte Carlo pi, actor pool, queue,
synchronization through actors, ray.wait and pipelining, async actors, task errors and
retries, fault tolerance, a walkthrough) and the program's own modules travelling by
reference. Each also passes on real Ray (``python programs/x.py``; too slow for CI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import raylite

PROGRAMS = Path(__file__).with_name("programs")
SRC = str(Path(raylite.__file__).resolve().parents[1])
NAMES = sorted(p.stem for p in PROGRAMS.glob("*.py"))

# `import ray` -> `import raylite as ray`; `from ray.util import X` -> `from raylite.util ...`
_IMPORT = re.compile(r"^(\s*)import ray\s*$", re.M)
_FROM = re.compile(r"^(\s*)from ray(\.[\w.]+)? import ", re.M)
_ANY_RAY_IMPORT = re.compile(r"^\s*(import ray\b|from ray\b)", re.M)

# How the program is started, after `setup` ran in the same interpreter.
_BOOT = (
    "import runpy, sys\n"
    "{setup}\n"
    "sys.argv = [{path!r}]\n"
    "sys.path[0] = {folder!r}\n"
    "runpy.run_path({path!r}, run_name='__main__')\n"
)


def rewrite_imports(source: str) -> str:
    """The program with its Ray imports spelled as raylite's."""
    source = _IMPORT.sub(r"\1import raylite as ray", source)
    source = _FROM.sub(r"\1from raylite\2 import ", source)
    left = _ANY_RAY_IMPORT.findall(source)
    assert not left, f"imports of ray the rewrite does not handle: {left}"
    return source


def command(way: str, program: Path, tmp_path: Path) -> list[str]:
    if way == "raylite_run":
        return [sys.executable, "-m", "raylite", "run", str(program)]
    if way == "sys_modules":
        setup = "import raylite\nsys.modules['ray'] = raylite"
        path = program
    else:
        setup = "sys.modules['ray'] = None  # real Ray: ImportError"
        path = tmp_path / program.name
        path.write_text(rewrite_imports(program.read_text()))
    boot = _BOOT.format(setup=setup, path=str(path), folder=str(program.parent))
    return [sys.executable, "-c", boot]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("way", ["import_as", "sys_modules", "raylite_run"])
@pytest.mark.parametrize("name", NAMES)
def test_program_runs(name: str, way: str, tmp_path: Path) -> None:
    program = PROGRAMS / f"{name}.py"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, str(PROGRAMS), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        command(way, program, tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1:] == ["ok"], (
        f"{name} ({way}) exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n"
        f"--- stderr\n{proc.stderr}"
    )


def test_every_way_sees_the_programs():
    assert len(NAMES) >= 10  # the folder moved or emptied: nothing would run

"""Every ```python block of the README runs as written, on its own, in a fresh process.

Each block is a user's first program: it must be complete (imports, ``init``, data) and
finish by itself when run unattended (stdin gives blank lines, as when someone presses
Enter). Blocks that connect to a Ray cluster (``address=``) run against the test session's
Ray head (``RAY_ADDRESS`` points ``address="auto"`` at it), with the Ray tests, last.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# A block runs in ~1-3 s; the limit leaves room for a loaded 2-core machine.
_LIMIT_S = 60


def _blocks() -> list[tuple[int, str]]:
    """``(line number, code)`` of each python block of the README."""
    text = README.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


def _run(code: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,  # a block may write files (trace.json): not into the checkout
        input="\n" * 10,
        capture_output=True,
        text=True,
        timeout=_LIMIT_S,
        env=env,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr


def test_the_readme_has_runnable_blocks():
    runnable = [code for _, code in _blocks() if "address=" not in code]
    assert len(runnable) >= 7, "the README's examples went missing"


@pytest.mark.parametrize(
    "code",
    [pytest.param(code, id=f"README.md:{line}") for line, code in _blocks()
     if "address=" not in code],
)  # fmt: skip
def test_block_runs_as_written_in_a_fresh_process(code, tmp_path):
    _run(code, tmp_path)


@pytest.mark.parametrize(
    "code",
    [pytest.param(code, id=f"README.md:{line}") for line, code in _blocks()
     if "address=" in code],
)  # fmt: skip
def test_cluster_block_runs_against_a_ray_head(code, tmp_path, ray_cluster):
    _run(code, tmp_path, env={**os.environ, "RAY_ADDRESS": ray_cluster.address})

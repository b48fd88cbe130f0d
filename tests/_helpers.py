"""Shared test helpers: deadlines instead of sleeps, process and /dev/shm inspection, and a
real Ray head for the tests that run on Ray."""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil


def wait_until(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``cond`` until it is truthy; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def live_children(pid: int | None = None) -> list[psutil.Process]:
    """Descendant processes of ``pid`` (this process by default) that are not zombies."""
    try:
        procs = psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port() -> int:
    """A TCP port free on the loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RayHead:
    """A running Ray head: its address, and its Ray Client address if it serves one."""

    address: str  # "127.0.0.1:PORT"
    client_address: str | None  # "ray://127.0.0.1:PORT" with ray[client] installed


@contextmanager
def ray_head(root: Path, num_cpus: int) -> Iterator[RayHead]:
    """Runs a real Ray head on this machine, with ``root`` as its temporary folder.

    ``ray start --head`` runs in a session of its own, so that at the end every process it
    started (GCS, raylet, workers, agents) is found by that session id and killed: no
    ``ray stop``, which would stop every Ray cluster on this machine. The head listens on
    the loopback, requires a fresh token (``RAY_AUTH_*``: set them for the driver too), and
    its workers can import the test modules, which cloudpickle pickles by reference.
    """
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    tests_dir = str(Path(__file__).parent)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])),
    }
    port = free_port()
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    command = [
        ray_cli, "start", "--head", f"--num-cpus={num_cpus}", "--num-gpus=0",
        "--disable-usage-stats", "--include-dashboard=false", "--node-ip-address=127.0.0.1",
        f"--port={port}", f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={root}",
    ]  # fmt: skip
    client_address = None
    if importlib.util.find_spec("grpc") is not None:  # ray[client] is installed
        client_port = free_port()  # else Ray takes 10001, which another head may hold
        command.append(f"--ray-client-server-port={client_port}")
        client_address = f"ray://127.0.0.1:{client_port}"
    start = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        output, _ = start.communicate(timeout=120)
        if start.returncode != 0:
            raise RuntimeError(f"`ray start --head` failed:\n{output}")
        yield RayHead(f"127.0.0.1:{port}", client_address)
    finally:
        _kill_session(start.pid)


def _kill_session(sid: int) -> None:
    """Kills every process of session ``sid`` (the ones a session leader we started made)."""
    procs = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                procs.append(p)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)

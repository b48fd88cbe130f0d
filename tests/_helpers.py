"""Shared test helpers: deadlines instead of sleeps, process and /dev/shm inspection, and a
real Ray head for the tests that run on Ray."""

from __future__ import annotations

import gc
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
from typing import Any

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


def kill_driver_and_wait_for_workers(script: str) -> tuple[list[int], float]:
    """Runs ``script`` as a driver that prints its workers' pids on one line, SIGKILLs it,
    and waits (10 s at most) until those workers are gone; returns their pids and the
    seconds from the kill until the last of them was gone."""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids, "the driver printed no worker pids"
        assert all(pid_alive(p) for p in pids)
        killed_at = time.monotonic()
        proc.kill()
        proc.wait(timeout=10)
        wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "orphaned workers to die")
        return pids, time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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


def ray_auth_env(root: Path) -> dict[str, str]:
    """The environment that makes Ray require (and send) the token kept in ``root``, made
    the first time. A driver must have it before it imports ray, which reads it then."""
    token = root / "token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


# Runs in a session of its own: starts the Ray head (the command in argv), reports how that
# went, then waits for stdin to close (the test process closed it, or died), kills every
# process of its session (the head's GCS, raylet, agents and workers) and removes the
# head's folder.
_HEAD_KEEPER = """
import ctypes, os, shutil, subprocess, sys
import psutil

ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: reap the head's daemons
start = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
print(start.stdout, f"\\nexit code: {start.returncode}", flush=True)
sys.stdin.read()
me, session = os.getpid(), os.getsid(0)
procs = []
for p in psutil.process_iter():
    try:
        if p.pid != me and os.getsid(p.pid) == session:
            procs.append(p)
    except OSError:
        pass
for p in procs:
    try:
        p.kill()
    except psutil.NoSuchProcess:
        pass
psutil.wait_procs(procs, timeout=10)
for arg in sys.argv:
    if arg.startswith("--temp-dir="):
        shutil.rmtree(arg.split("=", 1)[1], ignore_errors=True)
"""


@contextmanager
def ray_head(root: Path, num_cpus: int) -> Iterator[RayHead]:
    """Runs a real Ray head on this machine, with ``root`` as its temporary folder.

    ``ray start --head`` runs in a session of its own, under a keeper process that kills
    every process of that session when the ``with`` block ends or this process dies, even
    by SIGKILL: no head outlives its tests, and no ``ray stop``, which would stop every Ray
    cluster on this machine. The head listens on the loopback, requires the token of
    :func:`ray_auth_env`, and its workers can import the test modules, which cloudpickle
    pickles by reference.
    """
    tests_dir = str(Path(__file__).parent)
    env = {
        **os.environ,
        **ray_auth_env(root),
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
    keeper = subprocess.Popen(
        [sys.executable, "-c", _HEAD_KEEPER, *command], env=env, start_new_session=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert keeper.stdin is not None and keeper.stdout is not None
    try:
        output = []
        for line in keeper.stdout:
            if line.startswith("exit code: "):
                if line.split()[-1] != "0":
                    break
                yield RayHead(f"127.0.0.1:{port}", client_address)
                return
            output.append(line)
        raise RuntimeError("`ray start --head` failed:\n" + "".join(output))
    finally:
        keeper.stdin.close()
        keeper.wait(timeout=30)


CHROMIUM = "/usr/bin/chromium"  # Debian's package: `apt-get install -y chromium`
# Headless, offline: no GPU, no sandbox (root in CI), no update or sync traffic.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def missing_browser() -> str | None:
    """Why the headless-browser checks cannot run here (with the fix), or None if they can.
    Playwright drives the system's chromium: `playwright install` cannot download here."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed: pip install -e '.[dev]'"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: apt-get install -y chromium"
    return None


@contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A page of a headless chromium (a Playwright ``Page``), closed at the end.

    Start it after ``raylite.init``: Playwright starts threads and a node process, and
    raylite's zygote must be forked before any thread exists."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


# ---- leak checks (the fault suite) ---------------------------------------------------------


def open_fds(pid: int | None = None) -> dict[int, str]:
    """``{fd: what it points to}`` for a process (this one by default); empty once it is gone.

    The descriptor ``listdir`` itself opens (it points into ``/proc``) is left out."""
    where = f"/proc/{pid or 'self'}/fd"
    out = {}
    try:
        names = os.listdir(where)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    for name in names:
        try:
            target = os.readlink(f"{where}/{name}")
        except OSError:  # closed meanwhile
            continue
        if not target.startswith("/proc/"):
            out[int(name)] = target
    return out


def memfds(pid: int | None = None, name: str = "raylite-object") -> list[str]:
    """The memfds called ``name`` that a process holds open (mappings keep one each)."""
    return [t for t in open_fds(pid).values() if t.startswith(f"/memfd:{name}")]


def shm_entries() -> set[str]:
    """What ``/dev/shm`` holds now (named shared memory of every process on the machine)."""
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@dataclass(frozen=True)
class LeakBaseline:
    """What this process held before a runtime started: fds, child processes, ``/dev/shm``.

    ``assert_back(timeout)`` waits (cleanup is asynchronous) until the process holds no
    more than that again, and fails naming what is left over."""

    fds: dict[int, str]
    children: frozenset[int]
    shm: frozenset[str]

    @classmethod
    def take(cls) -> LeakBaseline:
        return cls(open_fds(), frozenset(p.pid for p in live_children()), frozenset(shm_entries()))

    def leftovers(self) -> list[str]:
        """Whatever is held now and was not then, in words (empty: nothing leaked)."""
        gc.collect()  # a value that viewed shared memory may only wait for the collector
        out = [
            f"fd {fd} -> {target}"
            for fd, target in open_fds().items()
            if self.fds.get(fd) != target
        ]
        out += [
            f"process {p.pid} ({p.name()})" for p in live_children() if p.pid not in self.children
        ]
        # Other programs on this machine may add entries; ours would carry "raylite".
        out += [f"/dev/shm/{n}" for n in shm_entries() - self.shm if "raylite" in n]
        return out

    def assert_back(self, timeout: float = 10.0) -> None:
        left: list[str] = []

        def clean() -> bool:
            left[:] = self.leftovers()
            return not left

        try:
            wait_until(clean, timeout, "the runtime's processes, fds and segments to go")
        except AssertionError:
            raise AssertionError(f"leaked after shutdown: {left}") from None


def stamp(path: str) -> None:
    """Writes this moment (``time.monotonic()``, the same clock in every process here) to
    ``path``: a task calls it just before it injects a failure, for the time to detect it."""
    with open(path, "w") as f:
        f.write(repr(time.monotonic()))


def wait_for_file(path: str, timeout: float = 30.0) -> None:
    """Inside a task or actor: blocks (the thread, not just a coroutine) until ``path``
    exists, the test's go-ahead (see the ``go`` fixture in conftest.py)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)

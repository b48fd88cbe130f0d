"""Who can talk to a running raylite: only the processes it made.

The driver talks to the zygote and to each worker over socketpairs made by the driver
(``pool.py``, ``runtime.py``): no port, no socket file, nothing another process could
connect to. These tests check that from the outside with psutil, over the whole process tree
after tasks, actors and thread tasks ran. Allowed: Unix sockets bound under a directory of
mode 0700 owned by this user (the CLI's control socket), and, only with
``include_dashboard=True``, the driver's dashboard listening on 127.0.0.1. Not allowed: any
other inet socket (TCP or UDP), abstract Unix sockets, any other socket path.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import Any

import psutil
import pytest
from _helpers import live_children

import raylite

pytestmark = pytest.mark.local_only("the local runtime's own channels")


def _connections(proc: psutil.Process, kind: str) -> list[Any]:
    get = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
    return list(get(kind=kind))


def _inet(proc: psutil.Process) -> set[tuple[Any, ...]]:
    return {(c.fd, c.type, c.laddr, c.status) for c in _connections(proc, "inet")}


def _private_dir(path: str) -> bool:
    """Whether ``path`` lies in a directory only this user can enter (mode 0700, ours)."""
    info = os.stat(os.path.dirname(path))
    return info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700


@raylite.remote
def square(x):
    return x * x


@raylite.remote(executor="thread")
def on_a_thread(x):
    return x + 1


@raylite.remote
class Packed:
    def ping(self):
        return os.getpid()


@raylite.remote(num_cpus=1)
class Dedicated:
    def ping(self):
        return os.getpid()


@pytest.mark.parametrize("dashboard", [False, True])
def test_no_process_of_the_tree_listens_or_binds_a_socket_others_could_reach(dashboard):
    before = _inet(psutil.Process())  # what the test process had: inherited, not ours
    raylite.init(num_cpus=2, include_dashboard=dashboard)
    try:
        assert raylite.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)]
        assert raylite.get(on_a_thread.remote(1)) == 2
        actors = [Packed.remote(), Dedicated.remote()]
        assert len(set(raylite.get([a.ping.remote() for a in actors]))) == 2
        tree = [psutil.Process(), *live_children()]
        assert len(tree) >= 4  # the driver, the zygote, task workers and actor processes
        for proc in tree:
            what = f"process {proc.pid} ({' '.join(proc.cmdline())[:60]})"
            new_inet = _inet(proc) - before
            if dashboard and proc.pid == os.getpid():
                listening = {c for c in new_inet if c[3] == psutil.CONN_LISTEN}
                assert len(listening) == 1, f"the driver listens on {listening}"
                [(_, kind, laddr, _)] = listening
                assert kind == socket.SOCK_STREAM and laddr.ip == "127.0.0.1"
                new_inet -= listening  # the dashboard: loopback only
            assert not new_inet, f"{what} has inet sockets {new_inet}"
            for conn in _connections(proc, "unix"):
                path = conn.laddr or conn.raddr
                if not path:
                    continue  # an unnamed socketpair end: reachable only by fd
                assert not path.startswith(("\0", "@")), f"{what}: abstract socket {path!r}"
                assert _private_dir(path), f"{what}: socket file {path} in a shared directory"
    finally:
        raylite.shutdown()


def test_objects_leave_no_file_others_could_open():
    np = pytest.importorskip("numpy")
    shm_before = set(os.listdir("/dev/shm"))
    raylite.init(num_cpus=1)
    try:
        ref = raylite.put(np.ones(1 << 20))  # out of band: a shared-memory segment
        assert raylite.get(square.remote(ref)).sum() == 1 << 20
        assert set(os.listdir("/dev/shm")) == shm_before  # memfds: no name anywhere
        for proc in [psutil.Process(), *live_children()]:
            for f in proc.open_files():
                assert not f.path.startswith("/dev/shm/"), f"{proc.pid} opened {f.path}"
    finally:
        raylite.shutdown()

"""Worker processes: a zygote forked at ``init`` forks them on demand and reaps them.

::

    driver                               zygote (single-threaded)          worker
    ------                               ------------------------          ------
    Zygote.spawn(wid) --SEQPACKET------> recv_fds: (wid, config) + fds --> fork -> worker_main(...)
      keeps its end of a socketpair                                        (the other end,
      and a mapping of the cancel slot                                      the cancel slot)
    Zygote.events()   <--SEQPACKET------ ("started", wid, pid)
                      <----------------- ("exited", pid, wait status)      on SIGCHLD
    Zygote.close()    -- EOF ----------> SIGKILL every child, reap, exit

Why a zygote: forking a process that runs threads can deadlock the child (a lock held by
another thread at fork time stays held forever), and the driver runs an I/O thread. The
zygote is forked from the driver at ``init``, before that thread exists, and stays
single-threaded, so it can fork workers safely and fast (~1-2 ms each, against 70-80 ms for
``multiprocessing``'s spawn/forkserver). Workers inherit the modules the driver had
imported at ``init``.

File descriptors: the zygote points every fd it inherited from the driver but its channel
and stdio at /dev/null before serving (a pipe of the driver's would never see EOF, a port
would stay bound), and receives the workers' fds close-on-exec. A worker that fails in
raylite's own code prints why on its stderr before it exits.

Lifetimes: the zygote exits when its control socket reaches EOF (the driver closed it, or
died), killing its workers first; each worker also has ``PR_SET_PDEATHSIG`` tied to the
zygote, so no worker outlives the driver, even after a SIGKILL of the driver.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import marshal
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

from .protocol import recv_with_fds

__all__ = ["CLOSED_CHANNEL", "STRAY_BYTES", "Zygote", "crash_message", "describe_exit"]

WorkerMain = Callable[[int, socket.socket, dict[str, Any], int], None]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Asks the kernel to SIGKILL this process when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def describe_exit(status: int | None) -> str:
    """Words for a wait status: 'exit code 3', 'killed by signal 9 (SIGKILL)'."""
    if status is None:
        return "exit status unknown"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {sig} ({name})"
    if os.WIFEXITED(status):
        return f"exit code {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


# Why the driver kills a worker whose channel fails (see LocalRuntime._receive):
STRAY_BYTES = (
    "its channel to the driver carried {} (did the task write to a file descriptor it does "
    "not own?)"
)
CLOSED_CHANNEL = (
    "it closed its channel to the driver while running (did the task close file descriptors "
    "it does not own?)"
)


def crash_message(
    name: str, pid: int, cause: str | None, status: int | None, tries: int, max_retries: int
) -> str:
    """The ``WorkerCrashedError`` message of task ``name`` whose worker ``pid`` died with
    wait ``status`` (killed by the driver because ``cause``, if given)."""
    if cause is not None:
        why = f"it was killed because {cause}"
    else:
        why = (f"{describe_exit(status)}. Likely causes: sys.exit() or os._exit() in the task, "
               "a crash in native code, running out of memory, or an external kill")  # fmt: skip
    return (
        f"The worker running {name}() (pid={pid}) died: {why}. It was tried {tries} time(s) "
        f"(max_retries={max_retries}; a run whose reply was lost with its worker counts as one)."
    )


class Zygote:
    """The fork server. Made by the driver at ``init``; ``worker_main`` runs in each child.

    Args:
        worker_main: called in each new worker as ``worker_main(wid, sock, config,
            slot_fd)``; returns when the worker should exit.
    """

    def __init__(self, worker_main: WorkerMain) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the zygote
            code = 1
            try:
                _release_inherited_fds(keep={0, 1, 2, theirs.fileno()})
                _ZygoteLoop(theirs, worker_main).run()
                code = 0
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self.sock = ours

    def spawn(self, wid: int, sock_fd: int, slot_fd: int, config: dict[str, Any]) -> None:
        """Asks for worker ``wid`` that talks over ``sock_fd`` and is interrupted through the
        shared memory behind ``slot_fd`` (both sent along: close yours after)."""
        socket.send_fds(self.sock, [marshal.dumps((wid, config))], [sock_fd, slot_fd])

    def events(self) -> list[tuple[Any, ...]] | None:
        """Reads the zygote's news (non-blocking); ``None`` when the zygote is gone."""
        out: list[tuple[Any, ...]] = []
        while True:
            try:
                data = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                return None
            if not data:
                return None if not out else out
            out.append(marshal.loads(data))

    def close(self) -> None:
        """Stops the zygote and every worker, and reaps the zygote."""
        try:
            self.sock.close()
        finally:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass


def _release_inherited_fds(keep: set[int]) -> None:
    """Points every fd of this (just forked) process but ``keep`` at /dev/null.

    The zygote is forked from the driver, so it starts with every fd the driver had: pipes
    whose readers would then never see EOF, listening ports that stay bound, files. It
    releases them all before serving, and so do the workers it forks. Each fd number stays
    taken, by /dev/null: a Python object inherited from the driver that still names it can
    then never close a channel that reused the number.
    """
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep and fd != devnull:
                try:
                    os.dup2(devnull, fd, inheritable=False)
                except OSError:
                    pass  # the listing's own fd, closed by now
    finally:
        os.close(devnull)


def _report_death(wid: int) -> None:
    """Prints why this worker process fails (the exception being handled) to stderr."""
    try:
        sys.stderr.write(
            f"raylite: worker {wid} (pid={os.getpid()}) failed and exits: this is a bug in "
            f"raylite or a task broke the worker's state; please report it.\n"
            + traceback.format_exc()
        )
        sys.stderr.flush()
    except Exception:
        pass  # stderr is gone: nothing more to do


class _ZygoteLoop:
    """What runs in the zygote process: fork on request, report births and deaths."""

    def __init__(self, sock: socket.socket, worker_main: WorkerMain) -> None:
        self.sock = sock
        self.worker_main = worker_main
        self.children: set[int] = set()
        self.wake_r, self.wake_w = os.pipe()

    def run(self) -> None:
        # The driver's objects, inherited, go to the permanent generation: else a worker's
        # first full collection writes to the header of every one of them, copying every
        # page of the driver's heap into the worker (a 40 MB heap: +30 MB per worker).
        gc.freeze()
        os.setpgid(0, 0)  # Ctrl-C in the terminal goes to the driver, not to the workers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            while True:
                try:
                    readable, _, _ = select.select([self.sock.fileno(), self.wake_r], [], [])
                except InterruptedError:
                    continue
                if self.wake_r in readable:
                    os.read(self.wake_r, 4096)
                    self._reap()
                if self.sock.fileno() in readable and not self._serve():
                    return
        finally:
            self._kill_all()

    def _serve(self) -> bool:
        try:
            data, fds, _ = recv_with_fds(self.sock, 1 << 16)
        except InterruptedError:
            return True
        except OSError:
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        wid, config = marshal.loads(data)
        pid = os.fork()
        if pid == 0:
            self._become_worker(wid, fds, config)
        for fd in fds:
            os.close(fd)
        self.children.add(pid)
        self._send(("started", wid, pid))
        return True

    def _become_worker(self, wid: int, fds: list[int], config: dict[str, Any]) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.sock.close()
            die_with_parent()
            if os.getppid() == 1:  # the zygote died between fork and prctl
                os._exit(1)
            self.worker_main(wid, socket.socket(fileno=fds[0]), config, fds[1])
            code = 0
        except SystemExit as exc:  # the driver went away: a quiet end
            code = exc.code if isinstance(exc.code, int) else 1
        except (ConnectionResetError, BrokenPipeError):  # so did it: it closed mid-message
            code = 0
        except BaseException:  # say why, or a worker that dies this way dies unexplained
            _report_death(wid)
        finally:
            os._exit(code)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self._send(("exited", pid, status))

    def _send(self, event: tuple[Any, ...]) -> None:
        try:
            self.sock.send(marshal.dumps(event))
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise

    def _kill_all(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

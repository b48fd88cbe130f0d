"""The worker loop's side of the protocol, with this test playing the driver over a socket."""

from __future__ import annotations

import mmap
import socket
import threading

from raylite._local.protocol import (
    Channel,
    GetReply,
    GetRequest,
    Message,
    TaskRequest,
    TasksReturned,
    Unblocked,
)
from raylite._local.worker import SLOT_SIZE, WorkerRuntime


def _next_batch(chan: Channel, timeout: float) -> list[Message]:
    """The next messages the worker sends, failing the test after ``timeout`` seconds."""
    chan.sock.settimeout(timeout)
    try:
        while True:
            msgs = chan.receive()
            assert msgs is not None, "the worker closed its socket"
            if msgs:
                return msgs
    except TimeoutError:
        raise AssertionError(f"the worker sent nothing within {timeout} s") from None


def test_a_task_arriving_while_the_worker_waits_in_get_is_handed_back_at_once():
    # A task the driver pipelined onto a worker just before that worker blocked in get()
    # must come back to the driver while the worker waits (it may be the very task waited
    # for); kept unsent in the worker's outbox, both wait forever.
    driver_sock, worker_sock = socket.socketpair()
    driver = Channel(driver_sock)
    slot = mmap.mmap(-1, SLOT_SIZE)
    replies: list[Message] = []

    def worker() -> None:
        rt = WorkerRuntime(1, worker_sock, {"session": "test"}, slot)
        replies.append(rt._blocking_request(GetRequest(7, [42], None)))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        assert GetRequest(7, [42], None) in _next_batch(driver, 10)
        driver.queue(TaskRequest(99, 1, "child", b"", [], [], [100], None))
        driver.flush()
        assert TasksReturned([99]) in _next_batch(driver, 10)
        driver.queue(GetReply(7, None))
        driver.flush()
        assert Unblocked() in _next_batch(driver, 10)
        thread.join(timeout=10)
        assert replies == [GetReply(7, None)]
    finally:
        driver_sock.close()  # the worker's receive() ends: its thread exits
        thread.join(timeout=10)
        worker_sock.close()
        slot.close()

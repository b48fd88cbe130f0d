"""Wire messages and their framing: encode/decode, frame parsing, non-blocking flushes."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest

from raylite._local import protocol
from raylite._local.protocol import (
    ActorCall,
    ActorExited,
    ActorInfo,
    ActorReady,
    CancelRequest,
    CancelTask,
    Channel,
    CreateActor,
    CreateActorRequest,
    Forget,
    FunctionDef,
    GeneratorItem,
    GetActorRequest,
    GetReply,
    GetRequest,
    KillActor,
    KillActorRequest,
    PutObject,
    RefOps,
    StreamNextReply,
    StreamNextRequest,
    SubmitActorCall,
    SubmitTask,
    TaskDone,
    TaskRequest,
    TasksDone,
    TasksReturned,
    Unblocked,
    WaitReply,
    WaitRequest,
    decode,
    encode,
)

BIG_ID = 2**40 + 7  # worker-made ids live in a high range

SAMPLES = [
    FunctionDef(fn_id=1, payload=b"\x00\x01pickled\xff"),
    TaskRequest(
        task_id=BIG_ID,
        fn_id=1,
        name="módulo.f",
        args=b"args",
        dep_positions=[0, "key"],
        dep_values=[b"a", b""],
        return_ids=[5, 6],
        gpu_ids=None,
    ),
    TaskRequest(
        task_id=2,
        fn_id=1,
        name="g",
        args=(b"p", 2, 4096, [(0, 64)], True),
        dep_positions=[],
        dep_values=[],
        return_ids=[3],
        gpu_ids=["0", "3"],
        stream=protocol.STREAMING,
    ),
    CancelTask(task_id=3),
    GetReply(req_id=4, values=[(False, b"v"), (True, b"err")]),
    GetReply(req_id=5, values=None),
    WaitReply(req_id=6, ready=[7, 8]),
    TaskDone(
        task_id=9, results=[b"r1", b"r2"], contained=[[10, 11], []], error=None, duration=0.25
    ),
    TaskDone(task_id=12, results=[], contained=[], error=b"boom", duration=1.5e-6),
    TasksDone(task_ids=[40, 41], results=[b"a", b""], durations=[1e-6, 0.5], starts=[1.7e9, 0.0]),
    SubmitTask(
        task_id=BIG_ID + 1,
        fn_id=2,
        name="g",
        options=b"opts",
        args=b"",
        dep_positions=[1, "k"],
        dep_ids=[13, 14],
        contained=[15],
        return_ids=[BIG_ID + 2],
    ),
    PutObject(oid=16, value=b"p" * 1000, contained=[]),
    PutObject(oid=26, value=(b"pickle", 26, 4096, [(0, 100), (128, 3000)], True), contained=[]),
    Forget(oids=[27, 28]),
    GetRequest(req_id=17, oids=[1, 2], timeout=None),
    GetRequest(req_id=18, oids=[], timeout=0.5),
    WaitRequest(req_id=19, oids=[1, 2, 3], num_returns=2, timeout=None),
    TasksReturned(task_ids=[20, 21]),
    Unblocked(),
    RefOps(borrow=[22], release=[23, 24], unmapped=[29]),
    CancelRequest(oid=25, force=True, recursive=False),
    CreateActor(
        actor_id=30,
        fn_id=31,
        class_name="C",
        args=b"a",
        dep_positions=[0],
        dep_values=[b"v"],
        config=b"cfg",
    ),
    ActorCall(
        task_id=32,
        actor_id=30,
        method="m",
        args=b"",
        dep_positions=[],
        dep_values=[],
        return_ids=[33],
        group=None,
    ),
    ActorCall(
        task_id=34,
        actor_id=30,
        method="m",
        args=(b"p", 35, 64, [(0, 10)], False),
        dep_positions=["k"],
        dep_values=[b"x"],
        return_ids=[],
        group="io",
        stream=protocol.DYNAMIC,
    ),
    KillActor(actor_id=30),
    GeneratorItem(task_id=32, nth=0, oid=BIG_ID + 1, value=b"v", contained=[7], is_error=False),
    GeneratorItem(
        task_id=32, nth=1, oid=BIG_ID + 2, value=(b"p", BIG_ID + 2, 64, [(0, 10)], True),
        contained=[], is_error=False,
    ),
    GeneratorItem(task_id=32, nth=2, oid=BIG_ID + 3, value=b"err", contained=[], is_error=True),
    StreamNextRequest(req_id=BIG_ID + 4, gen_oid=33),
    StreamNextReply(req_id=BIG_ID + 4, oid=BIG_ID + 1),
    StreamNextReply(req_id=BIG_ID + 5, oid=0),
    ActorReady(actor_id=30, error=None),
    ActorReady(actor_id=36, error=b"boom"),
    ActorInfo(req_id=37, actor_id=30, meta=b"meta", error=None),
    CreateActorRequest(
        req_id=38,
        fn_id=31,
        meta=b"m",
        options=b"o",
        args=b"",
        dep_positions=[],
        dep_ids=[],
        contained=[39],
    ),
    GetActorRequest(req_id=40, name="n", namespace=None),
    SubmitActorCall(
        actor_id=BIG_ID,
        method="m",
        options=b"o",
        args=b"a",
        dep_positions=[],
        dep_ids=[41],
        contained=[],
        return_ids=[BIG_ID + 3],
    ),
    KillActorRequest(actor_id=30, no_restart=False),
    ActorExited(actor_id=31, restart=True, reason="A.f() raised SystemExit(3)"),
]


def frame_of(messages) -> bytes:
    return encode(list(messages))


HEAD = protocol._HEADER.size


def body_of(messages) -> bytes:
    return encode(list(messages))[HEAD:]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def assert_same(got, expected) -> None:
    """Equal values *and* the same message classes (NamedTuples compare as plain tuples)."""
    assert got == expected
    assert [type(m) for m in got] == [type(m) for m in expected]


# ---- encode / decode ------------------------------------------------------------------------


def test_samples_cover_every_message_type():
    assert {type(m) for m in SAMPLES} == set(protocol._REGISTRY)
    assert len({cls.TAG for cls in protocol._REGISTRY}) == len(protocol._REGISTRY)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_each_message(msg):
    [out] = decode(body_of([msg]))
    assert_same([out], [msg])
    assert out._fields == msg._fields
    assert out._asdict() == msg._asdict()  # fields keep their names and order


def test_round_trip_preserves_field_types():
    sample = next(m for m in SAMPLES if type(m) is GetReply and m.values)
    [out] = decode(body_of([sample]))
    assert isinstance(out.values, list)
    assert isinstance(out.values[0], tuple)
    assert isinstance(out.values[0][1], bytes)


def test_round_trip_batch_in_one_frame():
    frame = frame_of(SAMPLES)
    length, _ = protocol._HEADER.unpack(frame[:HEAD])
    assert length == len(frame) - HEAD
    assert_same(decode(frame[HEAD:]), SAMPLES)
    assert_same(decode(memoryview(frame)[HEAD:]), SAMPLES)


def test_round_trip_of_a_worker_batch_with_shared_fields_and_worker_ids():
    # What a worker sends for a burst of tiny tasks: ids made in worker w are above 2**64,
    # and tasks of one function share the very same name object and empty lists.
    wid_base = 3 << protocol.ID_BITS
    name, empty = "noop", []
    batch = [
        TaskDone(wid_base + i, [b"\x80\x05K\x01."], [empty], None, 1e-6 * i, 1.7e9 + i / 3)
        for i in range(64)
    ] + [SubmitTask(wid_base + 99, 1, name, b"o", b"a", empty, empty, empty, [wid_base + 100])]
    got = decode(body_of(batch))
    assert_same(got, batch)
    assert [m.start for m in got[:64]] == [m.start for m in batch[:64]]  # floats exact
    got[0].contained[0].append(7)  # decoded fields are independent objects
    assert got[1].contained == [[]]


def test_empty_batch():
    assert decode(body_of([])) == []


# ---- Channel.feed ---------------------------------------------------------------------------


def test_feed_frame_split_at_every_byte(pair):
    msgs = SAMPLES[:4]
    frame = frame_of(msgs)
    for cut in range(len(frame) + 1):
        chan = Channel(pair[0])
        first = chan.feed(frame[:cut])
        second = chan.feed(frame[cut:])
        assert first == (msgs if cut == len(frame) else []), cut
        assert_same(first + second, msgs)


def test_feed_one_byte_at_a_time_over_several_frames(pair):
    batches = [SAMPLES[:2], [Unblocked()], SAMPLES[2:]]
    stream = b"".join(frame_of(b) for b in batches)
    ends = []
    pos = 0
    for b in batches:
        pos += len(frame_of(b))
        ends.append(pos)

    chan = Channel(pair[0])
    got: list = []
    for i in range(len(stream)):
        out = chan.feed(stream[i : i + 1])
        if i + 1 in ends:
            assert_same(out, batches[ends.index(i + 1)])
        else:
            assert out == []
        got += out
    assert_same(got, SAMPLES[:2] + [Unblocked()] + SAMPLES[2:])


def test_feed_several_frames_in_one_chunk(pair):
    first, second, third = [SAMPLES[0]], SAMPLES[1:5], [SAMPLES[-1]]
    chunk = frame_of(first) + frame_of(second) + frame_of(third)
    tail = frame_of(SAMPLES[5:7])
    chan = Channel(pair[0])
    assert_same(chan.feed(chunk + tail[:7]), first + second + third)
    assert_same(chan.feed(tail[7:]), SAMPLES[5:7])
    assert chan.feed(b"") == []


def test_feed_rejects_bytes_that_are_not_frames(pair):
    # What a task writing to the worker's socket by mistake sends: caught at its first bytes,
    # not read as the length of a frame to wait for.
    chan = Channel(pair[0])
    with pytest.raises(ConnectionError, match="not a frame"):
        chan.feed(b"hello from a stray write\n")
    chan = Channel(pair[0])
    assert_same(chan.feed(frame_of(SAMPLES[:2])), SAMPLES[:2])
    with pytest.raises(ConnectionError, match="not a frame"):
        chan.feed(struct.pack("<I", 0xFFFFFFFF) + b"junk" * 4)


def test_feed_rejects_a_frame_that_does_not_decode(pair):
    body = b"\xff" * 8  # not marshal data
    n = len(body)
    chan = Channel(pair[0])
    with pytest.raises(ConnectionError, match="does not decode"):
        chan.feed(protocol._HEADER.pack(n, n ^ protocol._CHECK) + body)


# ---- Channel over a socket ------------------------------------------------------------------


def test_queue_then_flush_sends_one_frame(pair):
    a, b = pair
    sender, receiver = Channel(a), Channel(b)
    assert not sender.has_output
    assert sender.queue(SAMPLES[0]) is True
    assert sender.queue(SAMPLES[1]) is False
    assert sender.has_output
    assert sender.flush() is True
    assert not sender.has_output
    assert sender.flush() is True  # nothing to send
    assert_same(receiver.receive(), SAMPLES[:2])


def test_plain_replies_join_the_tasks_done_queued_last_and_keep_their_order(pair):
    a, b = pair
    sender, receiver = Channel(a), Channel(b)
    sender.queue_done(1, b"r1", 0.5, 1.7e9)
    sender.queue_done(2, b"r2", 0.25, 1.8e9)
    sender.queue(Unblocked())  # another message: later replies go into a new TasksDone
    sender.queue_done(3, b"r3", 1e-6, 0.0)
    sender.flush()
    assert_same(
        receiver.receive(),
        [
            TasksDone([1, 2], [b"r1", b"r2"], [0.5, 0.25], [1.7e9, 1.8e9]),
            Unblocked(),
            TasksDone([3], [b"r3"], [1e-6], [0.0]),
        ],
    )


def test_queue_and_blocking_flush(pair):
    a, b = pair
    sender, receiver = Channel(a), Channel(b)
    sender.queue(CancelTask(task_id=1))
    sender.flush()
    assert not sender.has_output
    assert_same(receiver.receive(), [CancelTask(task_id=1)])


def test_nonblocking_flush_keeps_what_the_socket_does_not_take(pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.setblocking(False)
    b.settimeout(10)  # a broken flush fails the test instead of hanging it
    sender, receiver = Channel(a), Channel(b)

    big = FunctionDef(fn_id=1, payload=bytes(range(256)) * 8192)  # 2 MiB
    after = CancelTask(task_id=2)
    sender.queue(big)
    sender.queue(after)
    assert sender.flush(blocking=False) is False
    assert sender.has_output

    got: list = []
    flushes = 1
    while not got:
        msgs = receiver.receive()
        assert msgs is not None
        got += msgs
        if sender.has_output:
            done = sender.flush(blocking=False)
            flushes += 1
            assert done is not sender.has_output
    assert_same(got, [big, after])
    assert not sender.has_output
    assert flushes > 2  # it really went out in pieces

    # Messages queued later go out in a frame of their own, after the big one.
    sender.queue(Unblocked())
    assert sender.flush(blocking=False) is True
    assert_same(receiver.receive(), [Unblocked()])


def test_nonblocking_flush_on_a_full_socket_sends_nothing_and_loses_nothing(pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.setblocking(False)
    b.settimeout(10)
    filler = 0
    with pytest.raises(BlockingIOError):
        while True:
            filler += a.send(b"\0" * 4096)
    sender, receiver = Channel(a), Channel(b)
    sender.queue(SAMPLES[0])
    assert sender.flush(blocking=False) is False
    assert sender.has_output

    drained = 0
    while drained < filler:
        drained += len(b.recv(min(65536, filler - drained)))
    while not sender.flush(blocking=False):
        pass
    assert_same(receiver.receive(), [SAMPLES[0]])


def test_receive_returns_none_at_end_of_stream(pair):
    a, b = pair
    frame = frame_of(SAMPLES[:2])
    a.sendall(frame[:5])  # a partial frame, then the peer goes away
    a.close()
    receiver = Channel(b)
    assert receiver.receive() == []
    assert receiver.receive() is None


_FDS_AT_THE_LIMIT = """
import os, resource, socket
from raylite._local.protocol import Channel, FdsDropped, Unblocked
a, b = socket.socketpair()
sender, receiver = Channel(a), Channel(b)
fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(5)]
sender.queue(Unblocked(), fds)
sender.flush()
used = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (used, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
try:
    receiver.read()
except FdsDropped as exc:
    print("dropped:", exc)
"""


def test_fds_dropped_at_the_open_files_limit_are_an_error_naming_it():
    out = subprocess.run(
        [sys.executable, "-c", _FDS_AT_THE_LIMIT], capture_output=True, text=True, timeout=60
    )
    assert "dropped:" in out.stdout and "RLIMIT_NOFILE" in out.stdout, out.stdout + out.stderr

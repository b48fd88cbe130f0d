"""What a first ``put`` of a big array costs, next to a numpy copy of it (issue 14, item 4).

A put into *fresh* shared memory pays for every new page; a numpy copy of the same array
(fresh anonymous memory, which numpy asks to back with huge pages) is the yardstick. Each
way of writing a fresh memfd is timed in the same rounds, in a rotating order so machine
noise spreads evenly; the table shows medians, the spread, and the ratio to the numpy copy's
median in this run, in wall time and in the calling thread's CPU time (which a loaded machine
disturbs far less; a spare's own making runs on a background thread and is not in it).

    .venv/bin/python benchmarks/put_fresh.py [--mb 100] [--rounds 9]

Rows: ``raylite.put`` into fresh memory (the pool emptied and no spare: a first put with
spares off), ``raylite.put`` when a spare segment has been pre-faulted in the background
(what a put finds after an earlier big put, or after ``RAYLITE_PREFAULT_BYTES`` at
``init``: ``_local/spares.py``), and the raw ways it could write a new segment: ``pwrite`` (what ``write_segment`` does), a copy through a mapping made
with ``MAP_POPULATE`` (what it did before), through plain page faults, after
``MADV_POPULATE_WRITE``, after ``posix_fallocate``; then the floors: a segment whose pages
exist already (a recycled one, or a pre-faulted arena), written through a new mapping or
with ``pwrite``, and a plain memcpy into memory that is mapped already. Last, what freeing a
big segment costs the next call: a tiny put right after ``del`` of a big object.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

import raylite

MADV_POPULATE_WRITE = 23  # linux/mman.h (Linux 5.14+); Python 3.11's mmap lacks the name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="array size in MiB")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    n = args.mb << 20
    src = np.random.default_rng(0).integers(0, 255, n, dtype=np.uint8)
    raw = memoryview(src).cast("B")
    os.environ["RAYLITE_SPARE_FRACTION"] = "0.5"  # room for one spare of this size
    raylite.init(num_cpus=1, object_store_memory=3 * n)
    rt = raylite._runtime.current()
    lock, books = rt._lock, rt._objs.books  # type: ignore[attr-defined]  # the local runtime
    spare_limit = books.spare_limit

    def fresh_store() -> None:
        """No pooled segment (freed ones are recycled), no spare: a put gets fresh memory."""
        with lock:
            books.spare_limit = 0
            books.spares.cancel()
            books.pool.trim(0)

    def spare_ready() -> None:
        """The pool empty but for one spare of this size, pre-faulted in the background."""
        fresh_store()
        with lock:
            books.spare_limit = spare_limit
            books.want_spare(n)
        assert books.spares.wait(timeout=60), "no spare in 60 s"

    def numpy_copy() -> None:
        src.copy()

    def raylite_put() -> None:
        ref = raylite.put(src)
        del ref

    def through_mapping(flags: int, prepare: Callable[[int, mmap.mmap | None], None]) -> None:
        fd = os.memfd_create("bench", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, n)
            prepare(fd, None)
            m = mmap.mmap(fd, n, flags=mmap.MAP_SHARED | flags)
            prepare(fd, m)
            m[:] = raw
            m.close()
        finally:
            os.close(fd)

    def nothing(fd: int, m: mmap.mmap | None) -> None:
        pass

    def madvise(fd: int, m: mmap.mmap | None) -> None:
        if m is not None:
            m.madvise(MADV_POPULATE_WRITE)

    def fallocate(fd: int, m: mmap.mmap | None) -> None:
        if m is None:
            os.posix_fallocate(fd, 0, n)

    def pwrite() -> None:
        fd = os.memfd_create("bench", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, n)
            done = 0
            while done < n:
                done += os.pwrite(fd, raw[done:], done)
        finally:
            os.close(fd)

    warm_fd = os.memfd_create("bench-warm", os.MFD_CLOEXEC)
    os.ftruncate(warm_fd, n)
    os.pwrite(warm_fd, raw, 0)

    def recycled() -> None:
        m = mmap.mmap(warm_fd, n, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        m[:] = raw
        m.close()

    def recycled_pwrite() -> None:
        done = 0
        while done < n:
            done += os.pwrite(warm_fd, raw[done:], done)

    existing = src.copy()

    def numpy_copyto() -> None:
        np.copyto(existing, src)

    def unprepared() -> None:
        pass

    setup: dict[str, Callable[[], None]] = {
        "raylite.put (fresh segment)": fresh_store,
        "raylite.put (pre-faulted spare)": spare_ready,
    }
    ways: dict[str, Callable[[], None]] = {
        "numpy copy (fresh memory)": numpy_copy,
        "raylite.put (fresh segment)": raylite_put,
        "raylite.put (pre-faulted spare)": raylite_put,
        "pwrite into a fresh memfd": pwrite,
        "copy via MAP_POPULATE mapping": lambda: through_mapping(mmap.MAP_POPULATE, nothing),
        "copy via page faults": lambda: through_mapping(0, nothing),
        "copy after MADV_POPULATE_WRITE": lambda: through_mapping(0, madvise),
        "copy after posix_fallocate": lambda: through_mapping(mmap.MAP_POPULATE, fallocate),
        "copy into existing pages, mapped anew": recycled,
        "pwrite into existing pages": recycled_pwrite,
        "numpy copyto an existing array (memcpy)": numpy_copyto,
    }
    names = list(ways)
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            setup.get(name, unprepared)()
            t, c = time.perf_counter(), time.thread_time()
            ways[name]()
            cpu[name].append((time.thread_time() - c) * 1e3)
            times[name].append((time.perf_counter() - t) * 1e3)
            books.spares.wait(timeout=60)  # a spare a put asked for is not made during the next
    after_del = []  # ms: a tiny put right after `del` of a big object the pool cannot keep
    for _ in range(args.rounds):
        ref = raylite.put(src)
        books.spares.wait(timeout=60)
        del ref  # its segment is closed in the next section: by the caller, or (now) a thread
        t = time.perf_counter()
        raylite.put(1)
        after_del.append((time.perf_counter() - t) * 1e3)
    raylite.shutdown()
    os.close(warm_fd)

    base = statistics.median(times[names[0]])
    cpu_base = statistics.median(cpu[names[0]])
    print(f"{args.mb} MiB, {args.rounds} rounds, load {os.getloadavg()[0]:.1f}\n")
    print("| way | median ms | min-max ms | x numpy copy | CPU ms | min-max | x numpy copy |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        v, c = times[name], cpu[name]
        med, cmed = statistics.median(v), statistics.median(c)
        print(
            f"| {name} | {med:.1f} | {min(v):.1f}-{max(v):.1f} | {med / base:.2f} "
            f"| {cmed:.1f} | {min(c):.1f}-{max(c):.1f} | {cmed / cpu_base:.2f} |"
        )
    print(
        f"\nA tiny put right after `del` of a {args.mb} MiB object the pool cannot keep: "
        f"{statistics.median(after_del):.2f} ms ({min(after_del):.2f}-{max(after_del):.2f})"
    )


if __name__ == "__main__":
    main()

"""What a first ``put`` of a big array costs, next to a numpy copy of it (issue 14, item 4).

A put into *fresh* shared memory pays for every new page; a numpy copy of the same array
(fresh anonymous memory, which numpy asks to back with huge pages) is the yardstick. Each
way of writing a fresh memfd is timed in the same rounds, in a rotating order so machine
noise spreads evenly; the table shows medians, the spread, and the ratio to the numpy copy's
median in this run.

    .venv/bin/python benchmarks/put_fresh.py [--mb 100] [--rounds 9]

Rows: ``raylite.put`` (the real path: ``store.write_segment``), and the raw ways it could
write a new segment: ``pwrite`` (what ``write_segment`` does), a copy through a mapping made
with ``MAP_POPULATE`` (what it did before), through plain page faults, after
``MADV_POPULATE_WRITE``, after ``posix_fallocate``; then the floors: a segment whose pages
exist already (a recycled one, or a pre-faulted arena), written through a new mapping or
with ``pwrite``, and a plain memcpy into memory that is mapped already.
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
    # A store whose pool (a quarter of it) cannot keep a freed segment of this size: every
    # put gets fresh memory, as a first put does.
    raylite.init(num_cpus=1, object_store_memory=3 * n)

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

    ways: dict[str, Callable[[], None]] = {
        "numpy copy (fresh memory)": numpy_copy,
        "raylite.put (fresh segment)": raylite_put,
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
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t = time.perf_counter()
            ways[name]()
            times[name].append((time.perf_counter() - t) * 1e3)
    raylite.shutdown()
    os.close(warm_fd)

    base = statistics.median(times[names[0]])
    print(f"{args.mb} MiB, {args.rounds} rounds, load {os.getloadavg()[0]:.1f}\n")
    print("| way | median ms | min-max ms | x numpy copy |")
    print("|---|---|---|---|")
    for name in names:
        v = times[name]
        med = statistics.median(v)
        print(f"| {name} | {med:.1f} | {min(v):.1f}-{max(v):.1f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()

"""Async actors run many calls at once on one event loop; threaded actors on threads."""

import asyncio
import threading

import ray

ray.init(num_cpus=2)


@ray.remote
class AsyncWorker:
    def __init__(self, expected):
        self.expected = expected
        self.arrived = 0
        self.all_here = asyncio.Event()

    async def work(self, x):
        # Returns only once every call is running at the same time: async calls overlap.
        self.arrived += 1
        if self.arrived == self.expected:
            self.all_here.set()
        await asyncio.wait_for(self.all_here.wait(), timeout=30)
        return x * 2

    async def sum_of(self, refs):
        # Refs are awaitable inside async methods.
        values = await asyncio.gather(*refs)
        return sum(values)


worker = AsyncWorker.remote(6)
refs = [worker.work.remote(i) for i in range(6)]
assert ray.get(refs, timeout=60) == [0, 2, 4, 6, 8, 10]


@ray.remote
def make(x):
    return x


assert ray.get(worker.sum_of.remote([make.remote(i) for i in range(5)])) == 10


@ray.remote(max_concurrency=3)
class ThreadedWorker:
    def __init__(self):
        self.barrier = threading.Barrier(3, timeout=30)

    def work(self):
        self.barrier.wait()  # breaks (an error) unless three calls run at once
        return threading.get_ident()


threaded = ThreadedWorker.remote()
idents = ray.get([threaded.work.remote() for _ in range(3)], timeout=60)
assert len(set(idents)) == 3  # three threads at once


# Async code in the driver awaits refs too.
async def main():
    return await asyncio.gather(make.remote("a"), make.remote("b"))


assert asyncio.run(main()) == ["a", "b"]
ray.shutdown()
print("ok")

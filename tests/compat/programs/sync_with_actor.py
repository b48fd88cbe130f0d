"""Synchronizing tasks through an actor: a signal every task waits on, and a barrier."""

import asyncio
import time

import ray

ray.init(num_cpus=2)


@ray.remote(num_cpus=0)
class Signal:
    def __init__(self):
        self.event = asyncio.Event()

    def send(self):
        self.event.set()

    async def wait(self):
        await self.event.wait()


@ray.remote(num_cpus=0)
class Barrier:
    """Lets `parties` callers through once they have all arrived."""

    def __init__(self, parties):
        self.parties = parties
        self.arrived = 0
        self.event = asyncio.Event()

    async def arrive(self):
        self.arrived += 1
        if self.arrived == self.parties:
            self.event.set()
        await self.event.wait()
        return self.arrived


@ray.remote(num_cpus=0)
def waits_for(signal, value):
    ray.get(signal.wait.remote())
    return value


signal = Signal.remote()
refs = [waits_for.remote(signal, i) for i in range(4)]
ready, not_ready = ray.wait(refs, num_returns=len(refs), timeout=0.5)
assert ready == [], "a task ran past the signal before it was sent"
signal.send.remote()
assert ray.get(refs, timeout=60) == [0, 1, 2, 3]

barrier = Barrier.remote(3)


@ray.remote(num_cpus=0)
def meet(barrier, i):
    start = time.monotonic()
    seen = ray.get(barrier.arrive.remote())
    return i, seen, time.monotonic() - start


results = ray.get([meet.remote(barrier, i) for i in range(3)], timeout=60)
assert sorted(i for i, _, _ in results) == [0, 1, 2]
assert all(seen == 3 for _, seen, _ in results)  # nobody left before all three came
ray.shutdown()
print("ok")

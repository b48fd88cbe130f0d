"""ray.wait: results in completion order, a cap on tasks in flight, and pipelined work."""

import asyncio
import time

import ray

ray.init(num_cpus=2)


@ray.remote
def slow_echo(value, delay):
    time.sleep(delay)
    return value


@ray.remote(num_cpus=0)
class Gate:
    def __init__(self):
        self.opened = asyncio.Event()

    def open(self):
        self.opened.set()

    async def wait(self):
        await self.opened.wait()


@ray.remote
def behind_gate(gate, value):
    ray.get(gate.wait.remote())
    return value


# Process results as they finish, not in submission order: the first task cannot finish
# before the second one has.
gate = Gate.remote()
refs = [behind_gate.remote(gate, "slow"), slow_echo.remote("fast", 0.0)]
ready, not_ready = ray.wait(refs, num_returns=1)
assert len(ready) == 1 and len(not_ready) == 1
assert ray.get(ready[0]) == "fast"
gate.open.remote()
assert ray.get(not_ready) == ["slow"]

# wait() keeps the input order within each list and honours num_returns and timeout.
refs = [slow_echo.remote(i, 0) for i in range(5)]
ready, not_ready = ray.wait(refs, num_returns=5, timeout=60)
assert ready == refs and not_ready == []

# Backpressure: never more than MAX_IN_FLIGHT tasks pending.
MAX_IN_FLIGHT = 3
in_flight, results = [], []
for i in range(12):
    if len(in_flight) >= MAX_IN_FLIGHT:
        done, in_flight = ray.wait(in_flight, num_returns=1)
        results.extend(ray.get(done))
    in_flight.append(slow_echo.remote(i, 0.01))
results.extend(ray.get(in_flight))
assert sorted(results) == list(range(12))


# Pipelining: ask for the next work item before processing the current one.
@ray.remote
class WorkQueue:
    def __init__(self, items):
        self.items = list(items)

    def next_item(self):
        return self.items.pop(0) if self.items else None


@ray.remote
class PipelinedWorker:
    def __init__(self, work):
        self.work = work
        self.done = []

    def run(self):
        upcoming = self.work.next_item.remote()
        while True:
            item = ray.get(upcoming)
            if item is None:
                return self.done
            upcoming = self.work.next_item.remote()  # in flight while we compute
            self.done.append(item * 10)


work = WorkQueue.remote(range(8))
assert ray.get(PipelinedWorker.remote(work).run.remote()) == [i * 10 for i in range(8)]
ray.shutdown()
print("ok")

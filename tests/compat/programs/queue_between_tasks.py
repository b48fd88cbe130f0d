"""A queue shared by a producer task and consumer actors."""

import ray
from ray.util.queue import Empty, Queue

ray.init(num_cpus=2)

queue = Queue(maxsize=100)


@ray.remote
def produce(q, n):
    for i in range(n):
        q.put(i)
    return n


@ray.remote
class Consumer:
    def __init__(self, q):
        self.q = q
        self.seen = []

    def drain(self):
        # The producer has finished: whatever is left is in the queue already.
        while True:
            try:
                self.seen.append(self.q.get_nowait())
            except Empty:
                return len(self.seen)

    def items(self):
        return self.seen


assert ray.get(produce.remote(queue, 40)) == 40
consumers = [Consumer.remote(queue) for _ in range(2)]
counts = ray.get([c.drain.remote() for c in consumers])
assert sum(counts) == 40, counts
items = sorted(ray.get(consumers[0].items.remote()) + ray.get(consumers[1].items.remote()))
assert items == list(range(40))
assert queue.empty() and queue.qsize() == 0

# The driver uses the same queue, with the non-blocking calls too.
queue.put_nowait("x")
queue.put("y")
assert queue.size() == 2
assert [queue.get_nowait(), queue.get()] == ["x", "y"]
try:
    queue.get(timeout=0.1)
except Empty:
    pass
else:
    raise AssertionError("get on an empty queue did not raise Empty")
ray.shutdown()
print("ok")

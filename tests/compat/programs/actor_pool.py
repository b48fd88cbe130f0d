"""An ActorPool spreads work over a fixed set of actors."""

import ray
from ray.util import ActorPool

ray.init(num_cpus=2)


@ray.remote
class Squarer:
    def __init__(self, tag):
        self.tag = tag
        self.calls = 0

    def square(self, x):
        self.calls += 1
        return x * x

    def tagged(self, x):
        return (self.tag, x)

    def count(self):
        return self.calls


actors = [Squarer.remote(t) for t in ("a", "b", "c")]
pool = ActorPool(actors)

# map keeps the order of the inputs; map_unordered yields as results come.
assert list(pool.map(lambda actor, v: actor.square.remote(v), range(10))) == [
    v * v for v in range(10)
]
unordered = list(pool.map_unordered(lambda actor, v: actor.square.remote(v), range(10)))
assert sorted(unordered) == [v * v for v in range(10)]

# submit / get_next, one at a time.
for v in range(4):
    pool.submit(lambda actor, v: actor.tagged.remote(v), v)
results = []
while pool.has_next():
    results.append(pool.get_next())
assert [x for _, x in results] == [0, 1, 2, 3]
assert {tag for tag, _ in results} <= {"a", "b", "c"}

# Every actor took part in the 20 square() calls.
counts = ray.get([a.count.remote() for a in actors])
assert sum(counts) == 20 and all(c > 0 for c in counts), counts
ray.shutdown()
print("ok")

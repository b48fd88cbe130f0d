"""Getting started: tasks, objects, and a first actor."""

import ray

ray.init(num_cpus=2)


@ray.remote
def cube(x):
    return x**3


@ray.remote
def total(*values):
    return sum(values)


# Tasks run in parallel; get() waits for their results, in submission order.
refs = [cube.remote(i) for i in range(6)]
assert ray.get(refs) == [0, 1, 8, 27, 64, 125]

# Refs passed to a task are resolved to their values before it runs.
assert ray.get(total.remote(*refs)) == 225

# put() stores a value once; every task that gets the ref reads it.
table = ray.put({"a": 1, "b": 2})


@ray.remote
def lookup(mapping, key):
    return mapping[key]


assert ray.get([lookup.remote(table, "a"), lookup.remote(table, "b")]) == [1, 2]
assert ray.get(table) == {"a": 1, "b": 2}
assert isinstance(table, ray.ObjectRef)


@ray.remote
class Tally:
    def __init__(self, start=0):
        self.count = start

    def add(self, n=1):
        self.count += n
        return self.count

    def read(self):
        return self.count


tally = Tally.remote(10)
for _ in range(5):
    tally.add.remote()
assert ray.get(tally.add.remote(5)) == 20  # calls from one caller run in order
assert ray.get(tally.read.remote()) == 20

# Actor handles can be passed to tasks, which call the actor themselves.


@ray.remote
def bump(counter, times):
    for _ in range(times):
        ray.get(counter.add.remote())
    return "done"


assert ray.get([bump.remote(tally, 3) for _ in range(3)]) == ["done"] * 3
assert ray.get(tally.read.remote()) == 29
assert ray.is_initialized()
ray.shutdown()
assert not ray.is_initialized()
print("ok")

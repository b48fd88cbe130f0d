"""A gentle walkthrough of Ray Core: options, multiple returns, nested tasks, object refs
inside containers, resources and the runtime context."""

import ray

ray.init(num_cpus=2, resources={"db_connection": 2})


@ray.remote(num_returns=2)
def divmod_task(a, b):
    return a // b, a % b


q, r = divmod_task.remote(17, 5)
assert ray.get([q, r]) == [3, 2]


@ray.remote
def scale(x, factor=2):
    return x * factor


# .options() overrides the decorator's options for one call.
assert ray.get(scale.options(num_cpus=0.5, name="scaled").remote(4, factor=3)) == 12
q2, r2 = divmod_task.options(num_returns=2).remote(9, 4)
assert ray.get(r2) == 1


# Nested tasks: a task starts tasks of its own and waits for them.
@ray.remote
def fan_out(n):
    return sum(ray.get([scale.remote(i) for i in range(n)]))


assert ray.get(fan_out.remote(5)) == 20


# Refs inside a container are not resolved: the task gets the refs and may get them.
@ray.remote
def count_refs(items):
    assert all(isinstance(x, ray.ObjectRef) for x in items)
    return len(items), sum(ray.get(items))


assert ray.get(count_refs.remote([ray.put(1), ray.put(2)])) == (2, 3)


# A task may return a ref made inside it.
@ray.remote
def make_inner():
    return ray.put("inner value")


outer = make_inner.remote()
inner = ray.get(outer)
assert isinstance(inner, ray.ObjectRef) and ray.get(inner) == "inner value"

# Resources: what this machine has, and what is free.
total = ray.cluster_resources()
assert total["CPU"] == 2
assert 0 <= ray.available_resources().get("CPU", 0) <= 2


# A custom resource caps how many tasks holding it run at once.
@ray.remote(num_cpus=0)
class Gauge:
    def __init__(self):
        self.now = 0
        self.peak = 0

    def enter(self):
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self):
        self.now -= 1

    def peak_seen(self):
        return self.peak


@ray.remote(num_cpus=0, resources={"db_connection": 1})
def query(gauge, i):
    ray.get(gauge.enter.remote())
    ray.get(gauge.leave.remote())
    return i


gauge = Gauge.remote()
assert ray.get([query.remote(gauge, i) for i in range(8)]) == list(range(8))
assert 1 <= ray.get(gauge.peak_seen.remote()) <= 2
assert ray.cluster_resources()["db_connection"] == 2


@ray.remote
def who_am_i():
    ctx = ray.get_runtime_context()
    return ctx.get_task_id(), ctx.get_job_id()


task_id, job_id = ray.get(who_am_i.remote())
assert task_id and job_id == ray.get_runtime_context().get_job_id()


@ray.remote
class Accumulator:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)

    def get_actor_id(self):
        return ray.get_runtime_context().get_actor_id()

    def items_so_far(self):
        return list(self.items)


acc = Accumulator.remote()
ray.get([acc.add.remote(i) for i in range(3)])
assert ray.get(acc.items_so_far.remote()) == [0, 1, 2]
assert ray.get(acc.get_actor_id.remote())
ray.shutdown()
print("ok")

"""Values, functions, task arguments and errors to bytes and back."""

from __future__ import annotations

import os
import pickle
import threading

import cloudpickle
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import raylite
from raylite._local import serialization
from raylite._local.serialization import (
    INLINE_LIMIT,
    SerializationError,
    _format_user_traceback,
    dumps,
    dumps_args,
    dumps_error,
    dumps_function,
    load_value,
    load_values,
    loads,
    loads_args,
)
from raylite.exceptions import RayError, RayTaskError


def ref(oid: int) -> raylite.ObjectRef:
    return raylite.ObjectRef(oid, None)


def round_trip(value):
    data, contained = dumps(value)
    return loads(data), contained


class UserError(ValueError):
    """A module-level exception that takes its message like most do."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class NeedsTwoArgs(Exception):
    """Pickles, but cannot be rebuilt: ``args`` holds one value, ``__init__`` needs two."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}-{b}")


def raised(exc: BaseException) -> BaseException:
    """``exc`` with a traceback, as a task would have raised it."""
    try:
        raise exc
    except BaseException as caught:
        return caught


# ---- values ---------------------------------------------------------------------------------

PLAIN = [
    None,
    True,
    0,
    -(2**70),
    1.5,
    float("inf"),
    3 + 4j,
    "text é",
    b"\x00bytes",
    (),
    [1, "a", None],
    (1, (2.0, [b"x"])),
    {"a": 1, 2: [3, 4], None: (5,), b"k": {"nested": True}},
    list(range(64)),
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_values_take_the_fast_path(value, monkeypatch):
    def no_cloudpickle(*args, **kwargs):
        raise AssertionError("plain data must not go through cloudpickle")

    monkeypatch.setattr(cloudpickle, "dumps", no_cloudpickle)
    out, contained = round_trip(value)
    assert out == value
    assert type(out) is type(value)
    assert contained == []


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_dumps_plain_pickles_plain_values_as_serialize_does(value):
    payload = serialization.dumps_plain(value)
    assert payload is not None
    assert payload == serialization.serialize(value).payload
    out = loads(payload)
    assert out == value and type(out) is type(value)


@pytest.mark.parametrize(
    "value",
    [{1, 2}, [[[[1]]]], b"x" * serialization.INLINE_LIMIT, ref(3), [ref(3)]],
    ids=["set", "deep", "big-bytes", "ref", "ref-in-list"],
)
def test_dumps_plain_leaves_other_values_to_serialize(value):
    assert serialization.dumps_plain(value) is None


@pytest.mark.parametrize(
    "value",
    [{1, 2}, list(range(65)), [[[[1]]]], {(1, 2): "tuple key"}, frozenset({"a"})],
    ids=["set", "long-list", "deep", "tuple-key", "frozenset"],
)
def test_other_builtin_values_go_through_cloudpickle(value, monkeypatch):
    calls = []
    real = serialization._dumps  # cloudpickle's pickler (with raylite's reducers)

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(serialization, "_dumps", spy)
    out, contained = round_trip(value)
    assert out == value
    assert contained == []
    assert calls == [value]


def test_lambda_and_closure_round_trip():
    offset = 10

    def add(x):
        return x + offset

    fn, _ = round_trip(lambda x: add(x) * 2)
    assert fn(1) == 22
    assert loads(dumps_function(add))(5) == 15


def test_class_defined_in_a_function_round_trips():
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def norm2(self):
            return self.x**2 + self.y**2

    point, contained = round_trip(Point(3, 4))
    assert point.norm2() == 25
    assert type(point).__name__ == "Point"
    assert contained == []

    cls = loads(dumps_function(Point))
    assert cls(1, 2).norm2() == 5


def test_object_refs_inside_values_are_reported():
    value = {"a": [ref(7)], "b": (ref(8), {"c": ref(9)}), "d": 1}
    out, contained = round_trip(value)
    assert sorted(contained) == [7, 8, 9]
    assert out == {"a": [ref(7)], "b": (ref(8), {"c": ref(9)}), "d": 1}
    assert isinstance(out["a"][0], raylite.ObjectRef)


def test_object_ref_at_top_level_and_in_an_object():
    class Holder:
        def __init__(self, r):
            self.r = r

    assert round_trip(ref(3))[1] == [3]
    held, contained = round_trip(Holder(ref(4)))
    assert contained == [4]
    assert held.r == ref(4)


def test_refs_are_collected_per_call():
    assert dumps([ref(1)])[1] == [1]
    assert dumps([ref(2)])[1] == [2]  # nothing left over from the previous call
    assert dumps([1, 2])[1] == []


def test_unpicklable_value_raises_serialization_error_naming_the_cause():
    lock = threading.Lock()
    with pytest.raises(SerializationError, match=r"TypeError: .*lock") as info:
        dumps({"fine": 1, "bad": [lock]})
    assert isinstance(info.value, TypeError)  # callers may catch TypeError
    assert isinstance(info.value.__cause__, TypeError)


def test_unpicklable_function_names_the_function_and_the_fix():
    lock = threading.Lock()

    def uses_lock():
        with lock:
            return 1

    with pytest.raises(SerializationError) as info:
        dumps_function(uses_lock)
    text = str(info.value)
    assert "uses_lock" in text
    assert "lock" in text.replace("uses_lock", "")
    assert "inside the function" in text


# ---- task arguments -------------------------------------------------------------------------


def test_dumps_args_splits_top_level_refs_from_nested_ones():
    args = (1, ref(10), [ref(11)], ref(12))
    kwargs = {"k": ref(13), "n": 2, "m": {"deep": ref(14)}}
    s, positions, dep_ids = dumps_args(args, kwargs)
    payload, contained = s.payload, s.contained
    assert positions == [1, 3, "k"]
    assert dep_ids == [10, 12, 13]
    assert sorted(contained) == [11, 14]

    got_args, got_kwargs = loads_args(payload, positions, ["ten", "twelve", "thirteen"])
    assert got_args == [1, "ten", [ref(11)], "twelve"]
    assert got_kwargs == {"k": "thirteen", "n": 2, "m": {"deep": ref(14)}}


def test_dumps_args_does_not_modify_the_callers_arguments():
    args, kwargs = (ref(1),), {"k": ref(2)}
    dumps_args(args, kwargs)
    assert args == (ref(1),) and kwargs == {"k": ref(2)}


def test_no_arguments_is_an_empty_payload():
    s, positions, dep_ids = dumps_args((), {})
    assert (s.payload, s.buffers, s.contained, positions, dep_ids) == (b"", [], [], [], [])
    args, kwargs = loads_args(b"", [], [])
    assert (list(args), kwargs) == ([], {})


def test_only_ref_arguments():
    s, positions, dep_ids = dumps_args((ref(5),), {})
    assert (positions, dep_ids, s.contained) == ([0], [5], [])
    assert loads_args(s.payload, positions, ["five"]) == (["five"], {})


def test_plain_arguments_have_no_dependencies():
    s, positions, dep_ids = dumps_args((1, "a"), {"x": [1.5]})
    assert (positions, dep_ids, s.contained) == ([], [], [])
    args, kwargs = loads_args(s.payload, [], [])
    assert (list(args), kwargs) == ([1, "a"], {"x": [1.5]})


@pytest.mark.parametrize(
    "args, kwargs",
    [((1, 2.5, "s", None, True, 3j), {}), ((7,), {"k": "v", "n": None}), ((), {"only": 1})],
    ids=["positional", "mixed", "keywords"],
)
def test_scalar_arguments_are_pickled_in_one_c_call(args, kwargs, monkeypatch):
    def no_walk(*a, **k):
        raise AssertionError("scalar arguments must not be walked or split")

    monkeypatch.setattr(serialization, "split_refs", no_walk)
    monkeypatch.setattr(serialization, "_is_plain", no_walk)
    s, positions, dep_ids = dumps_args(args, kwargs)
    assert (positions, dep_ids, s.buffers, s.contained) == ([], [], [], [])
    got_args, got_kwargs = loads_args(s.payload, [], [])
    assert (list(got_args), got_kwargs) == (list(args), kwargs)


def test_scalar_argument_then_ref_argument_each_get_their_own_path():
    plain = dumps_args((1, "a"), {})
    with_ref = dumps_args((1, ref(9)), {"x": ref(11), "y": 2})
    assert plain[1:] == ([], [])
    assert with_ref[1:] == ([1, "x"], [9, 11])
    assert loads_args(with_ref[0].payload, with_ref[1], ["nine", "eleven"]) == (
        [1, "nine"], {"x": "eleven", "y": 2}
    )  # fmt: skip


def test_big_buffer_argument_still_goes_out_of_band():
    big = np.arange(INLINE_LIMIT, dtype=np.uint8)
    s, _, _ = dumps_args((1, big), {})
    assert [b.nbytes for b in s.buffers] == [INLINE_LIMIT]
    args, kwargs = loads_args(s.payload, [], [], s.buffers)
    assert args[0] == 1 and np.array_equal(args[1], big) and kwargs == {}


def test_bytes_arguments_take_the_general_path(monkeypatch):
    walked = []
    real = serialization.split_refs
    monkeypatch.setattr(serialization, "split_refs", lambda *a: walked.append(1) or real(*a))
    s, _, _ = dumps_args((1,), {"data": b"x" * INLINE_LIMIT})  # bytes: size matters
    assert walked == [1]
    args, kwargs = loads_args(s.payload, [], [], s.buffers)
    assert (list(args), kwargs) == ([1], {"data": b"x" * INLINE_LIMIT})


def test_load_values_reads_each_and_raises_the_first_error():
    items = [(dumps(v)[0], False, None) for v in (1, "two", [3])]
    assert load_values(items, [1, 2, 3], str) == [1, "two", [3]]
    failed = (pickle.dumps(ValueError("second")), True, None)
    broken = (b"not a pickle", False, None)
    with pytest.raises(ValueError, match="second"):
        load_values([items[0], failed, broken], [1, 2, 3], str)
    with pytest.raises(RayError, match="could not deserialize object 3 in this process"):
        load_values([items[0], broken, failed], [1, 3, 2], lambda oid: f"object {oid}")


def test_unpicklable_argument_raises_serialization_error():
    with pytest.raises(SerializationError, match="lock"):
        dumps_args((threading.Lock(),), {})


# ---- errors ---------------------------------------------------------------------------------


def test_user_error_arrives_as_both_types():
    data = dumps_error("compute", raised(UserError("bad input", code=7)), pid=4242)
    with pytest.raises(UserError) as info:
        load_value(data, is_error=True)
    err = info.value
    assert isinstance(err, RayTaskError)
    assert err.args == ("bad input",)
    assert err.code == 7  # the user's attributes stay reachable
    assert err.pid == 4242
    assert err.function_name == "compute"
    text = str(err)
    assert text.startswith("compute() (pid=4242)")
    assert "UserError: bad input" in text
    assert "raise exc" in text  # the remote traceback travels


def test_error_class_defined_in_a_function_arrives_as_both_types():
    class LocalError(KeyError):
        pass

    data = dumps_error("f", raised(LocalError("missing")), pid=1)
    with pytest.raises(RayTaskError) as info:
        load_value(data, is_error=True)
    assert isinstance(info.value, LocalError)
    assert isinstance(info.value, KeyError)


def test_error_that_cannot_be_rebuilt_arrives_as_plain_task_error():
    data = dumps_error("f", raised(NeedsTwoArgs("x", "y")), pid=1)
    with pytest.raises(RayTaskError) as info:
        load_value(data, is_error=True)
    err = info.value
    assert type(err) is RayTaskError
    assert not isinstance(err, NeedsTwoArgs)
    assert isinstance(err.cause, RayError) and "NeedsTwoArgs" in str(err.cause)
    assert "NeedsTwoArgs: x-y" in str(err)


def test_error_of_a_class_task_errors_already_are_stays_a_plain_task_error():
    # As Ray: RayTaskError is an Exception (and a RayError) already, so no dual class.
    for exc in (Exception("plain"), RayError("raylite's own")):
        with pytest.raises(RayTaskError) as info:
            load_value(dumps_error("f", raised(exc), pid=1), is_error=True)
        assert type(info.value) is RayTaskError
        assert type(info.value.cause) is type(exc)


def test_error_that_cannot_be_pickled_keeps_its_text():
    exc = raised(UserError("holds a lock"))
    exc.lock = threading.Lock()  # type: ignore[attr-defined]
    data = dumps_error("f", exc, pid=1)
    with pytest.raises(RayTaskError) as info:
        load_value(data, is_error=True)
    assert type(info.value) is RayTaskError
    assert "UserError: holds a lock" in str(info.value)
    cause = info.value.cause
    assert type(cause) is RayError  # as on Ray: the cause says why the exception is missing
    assert "UserError" in str(cause) and "cannot pickle '_thread.lock'" in str(cause)
    assert "holds a lock" in str(cause)  # with the original traceback


def test_load_value_returns_values_and_raises_other_errors():
    assert load_value(dumps([1, 2])[0], is_error=False) == [1, 2]
    with pytest.raises(ValueError, match="plain"):
        load_value(pickle.dumps(ValueError("plain")), is_error=True)


# ---- property -------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_keys = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.binary(max_size=10)
)
_nested = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=8),
        st.lists(children, max_size=8).map(tuple),
        st.dictionaries(_keys, children, max_size=8),
    ),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(_nested)
def test_nested_containers_round_trip(value):
    out, contained = round_trip(value)
    assert out == value
    assert repr(out) == repr(value)  # same types all the way down (True is not 1, () is not [])
    assert contained == []


def module_level_function(x: int) -> int:
    return x + 1


class ModuleLevelClass:
    pass


def test_functions_and_classes_of_importable_modules_travel_by_reference():
    assert loads(dumps_function(module_level_function)) is module_level_function
    assert loads(dumps(ModuleLevelClass)[0]) is ModuleLevelClass
    assert type(loads(dumps(ModuleLevelClass())[0])) is ModuleLevelClass


def test_code_sent_by_value_keeps_its_file_and_lines():
    @raylite.remote
    def decorated(x):  # not reachable by its name: travels by value, as on Ray
        return x * 2

    shipped = loads(dumps_function(decorated._function))
    assert shipped is not decorated._function and shipped(4) == 8
    code = shipped.__code__
    assert code.co_filename == __file__  # cloudpickle alone makes it "<dynamic-code>"
    assert code.co_firstlineno == decorated._function.__code__.co_firstlineno
    nested = loads(dumps(lambda: (lambda: 1))[0])
    assert nested.__code__.co_filename == __file__
    assert nested()() == 1


def test_task_error_text_is_the_traceback_as_ray_shows_it():
    def inner():
        raise KeyError("deep")

    text = _format_user_traceback(raised_from(inner))
    assert "in raised_from" in text and "in inner" in text
    assert 'raise KeyError("deep")' in text  # the source line, read from this file
    assert text.startswith("  File ")  # as Ray: no header, the frames follow the task's name


def test_task_error_drops_raylites_frames(rl_local):
    @raylite.remote
    def fails():
        raise KeyError("deep")

    @raylite.remote
    def calls_fails():
        return raylite.get(fails.remote())

    @raylite.remote
    class Host:
        def fails(self):
            raise KeyError("deep")

    for ref, name in [
        (fails.remote(), "fails"),
        (calls_fails.remote(), "calls_fails"),
        (Host.remote().fails.remote(), "fails"),
    ]:
        with pytest.raises(KeyError) as info:
            raylite.get(ref)
        text = str(info.value)
        assert f'File "{__file__}", line ' in text and f"in {name}" in text
        assert 'raise KeyError("deep")' in text
        assert "raylite" + os.sep not in text.replace(__file__, "")  # no worker/get frames


def raised_from(fn):
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


@pytest.fixture
def rl_local():
    raylite.init(num_cpus=1)
    try:
        yield raylite
    finally:
        raylite.shutdown()

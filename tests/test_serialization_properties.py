"""Property tests: every value a user passes comes back exactly, through ``put``/``get`` and
through a task's argument and result (in band, and out of band through shared memory for
buffers of ``INLINE_LIMIT`` bytes and up).

"Exactly" means: the same type (container types included), the same dtype, shape and bytes
for arrays (so NaN payloads, -0.0 and byte order too), a kept Fortran order, and NaN equal
to NaN. One raylite session serves the whole module.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import raylite
from raylite._local.serialization import INLINE_LIMIT

np = pytest.importorskip("numpy")
hnp = pytest.importorskip("hypothesis.extra.numpy")

pytestmark = pytest.mark.local_only("the local runtime's serialization and object store")

PROPERTY = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def session() -> Iterator[None]:
    raylite.init(num_cpus=2)
    try:
        yield
    finally:
        raylite.shutdown()


@pytest.fixture(autouse=True)
def _no_session_leaks() -> Iterator[None]:
    """Replaces conftest's check: this module keeps one session open on purpose (the
    ``session`` fixture shuts it down), so examples do not pay for an ``init`` each."""
    yield


@raylite.remote
def ident(x: Any) -> Any:
    return x


def round_trips(value: Any) -> None:
    """``value`` comes back the same through put/get, a task, and a task inside a list."""
    assert_same(value, raylite.get(raylite.put(value)))
    assert_same(value, raylite.get(ident.remote(value), timeout=60))
    [back] = raylite.get(ident.remote([value]), timeout=60)
    assert_same(value, back)


def assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b), f"{type(a).__name__} came back as {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        if a.dtype.hasobject:
            for x, y in zip(a.reshape(-1), b.reshape(-1), strict=True):
                assert_same(x, y)
        else:
            assert a.tobytes() == b.tobytes()
        if a.flags.f_contiguous and not a.flags.c_contiguous:
            assert b.flags.f_contiguous, "a Fortran-ordered array lost its order"
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
        ), (a, b)
    elif isinstance(a, complex):
        assert_same(a.real, b.real)
        assert_same(a.imag, b.imag)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)  # same keys, same order
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, memoryview):
        assert (a.format, a.shape, a.tobytes()) == (b.format, b.shape, b.tobytes())
    else:
        assert a == b


# ---- strategies -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),  # big ints
    st.floats(),  # nan, inf, -0.0 included
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0]),
    st.complex_numbers(),
    st.text(),  # unicode, surrogates excluded (not encodable)
    st.binary(max_size=64),
)
hashables = st.one_of(st.integers(), st.text(max_size=8), st.booleans(), st.none())

nested = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=5),
        st.sets(hashables, max_size=5),
        st.frozensets(hashables, max_size=5),
    ),
    max_leaves=25,
)

# Sizes on both sides of the out-of-band threshold, and small ones.
sizes = st.one_of(
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=INLINE_LIMIT - 3, max_value=INLINE_LIMIT + 3),
    st.sampled_from([4 * INLINE_LIMIT + 1]),
)


@st.composite
def byte_buffers(draw: st.DrawFn) -> Any:
    n = draw(sizes)
    data = (bytes(range(draw(st.integers(0, 255)), 256)) + bytes(range(256))) * (n // 256 + 2)
    data = data[:n]
    kind = draw(st.sampled_from(["bytes", "bytearray", "memoryview", "memoryview-of-bytearray"]))
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    return memoryview(bytearray(data))


dtypes = st.one_of(
    hnp.scalar_dtypes(),  # bool, ints, floats, complex, datetimes, timedeltas, native order
    hnp.integer_dtypes(endianness=">"),
    hnp.floating_dtypes(endianness=">"),
    hnp.complex_number_dtypes(endianness=">"),
    hnp.byte_string_dtypes(max_len=6),
    hnp.unicode_string_dtypes(max_len=6),
    hnp.array_dtypes(max_size=3),  # structured
)


def views(array: Any) -> st.SearchStrategy[Any]:
    """The array as it is, Fortran-ordered, transposed, or a strided (non-contiguous) view."""
    return st.sampled_from(
        [
            array,
            np.asfortranarray(array),
            array.T,
            array[::2] if array.ndim else array,
            array[..., ::-1] if array.ndim else array,
        ]
    )


small_arrays = hnp.arrays(
    dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
).flatmap(views)

object_arrays = hnp.arrays(
    np.dtype(object),
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=4),
    elements=st.one_of(scalars, st.lists(st.integers(), max_size=3)),
).flatmap(views)


@st.composite
def big_arrays(draw: st.DrawFn) -> Any:
    """Arrays of about ``INLINE_LIMIT`` bytes (out of band when big enough), any layout."""
    dtype = np.dtype(
        draw(st.sampled_from(["<f8", ">f8", "<i2", ">i4", "u1", "?", "<c16", "S3", "<U2"]))
    )
    around = INLINE_LIMIT // dtype.itemsize
    n = draw(st.integers(min_value=around - 2, max_value=around + 2)) * draw(
        st.sampled_from([1, 2])
    )
    raw = np.arange(n * dtype.itemsize, dtype=np.uint8) * draw(st.integers(1, 255))
    array = raw.view(dtype)
    shape = draw(st.sampled_from([(n,), (2, n // 2), (n // 4, 2, 2)]))
    array = array[: int(np.prod(shape))].reshape(shape)
    return draw(views(array))


# ---- properties -----------------------------------------------------------------------------


@PROPERTY
@given(nested)
def test_nested_containers_of_builtins_round_trip(value):
    round_trips(value)


@PROPERTY
@given(byte_buffers())
def test_bytes_bytearray_and_memoryview_round_trip_around_the_threshold(value):
    round_trips(value)


@PROPERTY
@given(small_arrays)
def test_numpy_arrays_of_every_dtype_and_layout_round_trip(value):
    round_trips(value)


@PROPERTY
@given(object_arrays)
def test_object_arrays_round_trip(value):
    round_trips(value)


@PROPERTY
@given(big_arrays())
def test_arrays_around_the_out_of_band_threshold_round_trip(value):
    round_trips(value)


@PROPERTY
@given(st.lists(st.one_of(small_arrays, byte_buffers(), nested), min_size=1, max_size=3))
def test_mixed_containers_of_arrays_buffers_and_builtins_round_trip(value):
    round_trips(value)

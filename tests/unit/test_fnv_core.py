"""FNV in C against the Python reference (ftmap._fnv): vectors, differential tests, errors, placement."""

from __future__ import annotations

import array
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftmap import _fnv, _impl
from tests.hostile import HashRaises, HostileError

FUNCTIONS = ["fnv1_32", "fnv1a_32", "fnv1a_64"]
IMPLEMENTATIONS = sorted(_impl.variants("fnv1a_32"))  # ["c", "python"] or ["python"]
needs_c = pytest.mark.skipif("c" not in _impl.variants("shard_of"), reason="no C core here")


def both(name: str) -> dict[str, Callable[..., Any]]:
    return _impl.variants(name)


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """("ok", result) or ("raises", (exception type, message)): what differential tests compare."""
    try:
        return "ok", fn(*args)
    except Exception as error:
        return "raises", (type(error), str(error))


# -- the published vectors, for every implementation ------------------------------------------

VECTORS = {
    "fnv1_32": {b"": 0x811C9DC5, b"a": 0x050C5D7E, b"foobar": 0x31F0B262},
    "fnv1a_32": {b"": 0x811C9DC5, b"a": 0xE40C292C, b"foobar": 0xBF9CF968},
    "fnv1a_64": {b"": 0xCBF29CE484222325, b"a": 0xAF63DC4C8601EC8C, b"foobar": 0x85944171F73967E8},
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_published_vectors(name: str, implementation: str) -> None:
    fn = both(name)[implementation]
    for data, expected in VECTORS[name].items():
        assert fn(data) == expected, (name, implementation, data)


@needs_c
@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_megabyte_hashes_the_same(name: str) -> None:
    data = bytes(range(256)) * 4096
    assert both(name)["c"](data) == both(name)["python"](data)


# -- differential: every bytes-like input, every bad input ---------------------------------------


def bytes_likes(data: bytes) -> list[Any]:
    """The same bytes as many kinds of buffer; all must hash alike (as the bytes)."""
    kinds: list[Any] = [data, bytearray(data), memoryview(data), array.array("B", data)]
    if len(data) % 2 == 0:
        kinds += [array.array("H", data), memoryview(data).cast("H")]
    if len(data) % 8 == 0 and data:
        kinds.append(memoryview(data).cast("B", shape=[len(data) // 8, 8]))
    return kinds


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_c_and_python_agree_on_every_bytes_like_input(data: bytes) -> None:
    for name in FUNCTIONS:
        c, python = both(name)["c"], both(name)["python"]
        expected = python(data)
        for kind in bytes_likes(data):
            assert c(kind) == expected == python(kind), (name, type(kind))
        doubled = memoryview(data + data)[::2]  # not contiguous: hashed as its bytes in C order
        assert c(doubled) == python(doubled) == python(doubled.tobytes())


BAD_INPUTS = ["text", 1, 2.5, None, [1, 2], (1,), {"a": 1}, object()]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda v: type(v).__name__)
def test_bad_input_raises_a_clear_type_error(name: str, implementation: str, bad: Any) -> None:
    with pytest.raises(
        TypeError, match=rf"^{name}\(\) argument must be a bytes-like object, not '{type(bad).__name__}'$"
    ):
        both(name)[implementation](bad)


@needs_c
@pytest.mark.parametrize("name", FUNCTIONS)
def test_c_and_python_fail_alike(name: str) -> None:
    released = memoryview(b"abc")
    released.release()
    for bad in [*BAD_INPUTS, released]:
        assert outcome(both(name)["c"], bad) == outcome(both(name)["python"], bad), bad


# -- shard placement ---------------------------------------------------------------------------

keys = st.one_of(
    st.integers(),
    st.integers(min_value=0, max_value=64).map(lambda shift: 1 << shift),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
    st.tuples(st.integers(), st.text(max_size=5)),
)


@needs_c
@settings(max_examples=500, deadline=None)
@given(keys, st.integers(min_value=0, max_value=20))
def test_c_and_python_place_every_key_alike(key: Any, bits: int) -> None:
    index = both("shard_of")["c"](key, bits)
    assert index == both("shard_of")["python"](key, bits)
    assert 0 <= index < (1 << bits)


@needs_c
def test_c_and_python_fail_alike_on_bad_placement_input() -> None:
    c, python = both("shard_of")["c"], both("shard_of")["python"]
    for args in [(1, True), (1, 1.0), (1, "3"), (1, None), (1, -1), (1, 21), (1, 2**70), (1, -(2**70))]:
        assert outcome(c, *args) == outcome(python, *args), args
        assert outcome(c, *args)[0] == "raises", args
    for key in ([1], {}, HashRaises()):
        assert outcome(c, key, 5) == outcome(python, key, 5), key
    with pytest.raises(HostileError):
        c(HashRaises(), 5)
    for args in [(), (1,), (1, 2, 3)]:
        with pytest.raises(TypeError):
            c(*args)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_equal_keys_share_a_shard(implementation: str) -> None:
    shard_of = both("shard_of")[implementation]
    for bits in (0, 1, 5, 10, 20):
        assert shard_of(1, bits) == shard_of(1.0, bits) == shard_of(True, bits)
        assert shard_of(0, bits) == shard_of(-0.0, bits) == shard_of(False, bits)
    assert all(shard_of(key, 0) == 0 for key in ("a", 1, (2, 3)))


def chi_square_p(counts: list[int]) -> float:
    """Upper-tail p of the chi-square statistic for uniform counts (Wilson-Hilferty), as in
    tests/unit/test_sharded.py."""
    total, k = sum(counts), len(counts)
    expected = total / k
    x2 = sum((c - expected) ** 2 / expected for c in counts)
    z = ((x2 / (k - 1)) ** (1 / 3) - (1 - 2 / (9 * (k - 1)))) / math.sqrt(2 / (9 * (k - 1)))
    return 0.5 * math.erfc(z / math.sqrt(2))


# test_sharded.py's families, and the ones that broke FNV with a plain fold.
FAMILIES: dict[str, list[Any]] = {
    "sequential ints": list(range(50_000)),
    "multiples of the shard count": [i * 64 for i in range(50_000)],
    "multiples of 1024": [i * 1024 for i in range(50_000)],
    "multiples of 2**20": [i << 20 for i in range(50_000)],
    "multiples of 2**40": [i << 40 for i in range(50_000)],
    "negative ints": [-i for i in range(50_000)],
    "strings with a long common prefix": [f"https://example.com/api/v1/items/{i}" for i in range(50_000)],
    "tuples": [(i, i % 7, "x") for i in range(50_000)],
    "a grid of pairs": [(i, j) for i in range(224) for j in range(224)],
    "floats": [i / 8 for i in range(50_000)],
}
SHARDS = [2, 4, 16, 32, 64, 256, 1024]
# As in tests/unit/test_sharded.py: str hashes (and those of tuples holding one) change with the
# process's hash seed, so for those families p is a fresh uniform draw on every run, over 7 shard
# counts, 2 implementations and every make test run: a 0.001 bar failed CI by chance (p=0.0006,
# 16 shards). A placement that really clumps gives p far below 1e-9 whatever the seed (the plain
# fold below: < 1e-6 on 32 shards), so the seeded families use 1e-7. The others are deterministic.
SEEDED_FAMILIES = {"strings with a long common prefix", "tuples"}
_top_cache: dict[tuple[str, str], list[int]] = {}


def placements_at_20_bits(implementation: str, family: str) -> list[int]:
    # shard_of(key, b) == shard_of(key, 20) >> (20 - b): the top bits. One pass per family.
    key = (implementation, family)
    if key not in _top_cache:
        shard_of = both("shard_of")[implementation]
        _top_cache[key] = [shard_of(k, 20) for k in FAMILIES[family]]
    return _top_cache[key]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_fnv_placement_spreads_keys_uniformly(implementation: str, family: str) -> None:
    top = placements_at_20_bits(implementation, family)
    shard_of = both("shard_of")[implementation]
    sample = FAMILIES[family][:: max(1, len(top) // 200)]
    for shards in SHARDS:
        bits = shards.bit_length() - 1
        assert all(shard_of(k, bits) == shard_of(k, 20) >> (20 - bits) for k in sample)
        counts = [0] * shards
        for index in top:
            counts[index >> (20 - bits)] += 1
        alpha = 1e-7 if family in SEEDED_FAMILIES else 0.001
        assert chi_square_p(counts) >= alpha, (family, shards, counts[:16])


def fnv_plain_fold(key: Any, bits: int) -> int:
    """The design without the finaliser: FNV-1a 64 over hash(key), xor-folded to the shard bits."""
    x = _fnv.fnv1a_64((hash(key) & _fnv.MASK_64).to_bytes(8, "little"))
    y = (x ^ (x >> 32)) & _fnv.MASK_32
    return ((y >> bits) ^ y) & ((1 << bits) - 1)


def test_the_distribution_test_rejects_fnv_with_a_plain_fold() -> None:
    # The test above can fail: the same check rejects the placement the finaliser fixes.
    counts = [0] * 32
    for key in FAMILIES["multiples of 2**20"][:20_000]:
        counts[fnv_plain_fold(key, 5)] += 1
    assert chi_square_p(counts) < 1e-6, counts

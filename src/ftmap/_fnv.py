"""FNV hashes over bytes (Fowler-Noll-Vo), exactly as published, and the FNV shard placement.

This module is the reference implementation and the pure-Python fallback; ftmap._core has the
same functions at C speed (ftmap.fnv1_32 etc. are the C ones when ftmap.implementation is "c"),
and tests/unit/test_fnv_core.py checks that both give identical results and identical errors.

fnv1_32 over a string's UTF-8 bytes is the hash Go's orcaman/concurrent-map
shards by, so ``ShardedMap(hasher=lambda k: fnv1_32(k.encode()))`` places
string keys on the same shard as orcaman does for the same shard count.

The input is any bytes-like object (bytes, bytearray, memoryview, array, ...): its bytes, in C
order for a non-contiguous view. Anything else (str, int, a list of ints) raises TypeError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from 3.12 on

__all__ = ["SHARD_BITS_MAX", "fnv1_32", "fnv1a_32", "fnv1a_64", "shard_of"]

OFFSET_32 = 0x811C9DC5
PRIME_32 = 0x01000193
OFFSET_64 = 0xCBF29CE484222325
PRIME_64 = 0x100000001B3
MASK_32 = 0xFFFFFFFF
MASK_64 = 0xFFFFFFFFFFFFFFFF
SHARD_BITS_MAX = 20  # ShardedMap allows up to 2**20 shards


def _bytes_of(data: object, name: str) -> bytes:
    if type(data) is bytes:
        return data
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name}() argument must be a bytes-like object, not {type(data).__name__!r}"
        ) from None
    with view:
        return view.tobytes()


def fnv1_32(data: Buffer) -> int:
    """FNV-1, 32 bits: multiply, then xor each byte."""
    h = OFFSET_32
    for byte in _bytes_of(data, "fnv1_32"):
        h = ((h * PRIME_32) & MASK_32) ^ byte
    return h


def fnv1a_32(data: Buffer) -> int:
    """FNV-1a, 32 bits: xor each byte, then multiply."""
    h = OFFSET_32
    for byte in _bytes_of(data, "fnv1a_32"):
        h = ((h ^ byte) * PRIME_32) & MASK_32
    return h


def fnv1a_64(data: Buffer) -> int:
    """FNV-1a, 64 bits."""
    h = OFFSET_64
    for byte in _bytes_of(data, "fnv1a_64"):
        h = ((h ^ byte) * PRIME_64) & MASK_64
    return h


def _fmix64(x: int) -> int:
    """MurmurHash3's 64-bit finaliser: every input bit reaches every output bit."""
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & MASK_64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & MASK_64
    return x ^ (x >> 33)


def shard_of(key: Any, bits: int) -> int:
    """The shard in ``[0, 2**bits)`` of key, for ``2**bits`` shards (bits from 0 to 20).

    FNV-1a 64 over the 8 bytes of ``hash(key)`` (as an unsigned 64-bit little-endian integer),
    then MurmurHash3's fmix64 finaliser, xor-folded to 32 bits, top ``bits`` bits. The
    finaliser is needed: FNV's final multiply leaves the low bits depending only on low input
    bits, and FNV plus a plain fold put multiples of 2**20 or 2**40 on a few shards (chi-square
    p < 1e-25). Equal keys hash equally, so 1, 1.0 and True share a shard.
    """
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int, not {type(bits).__name__}")
    if not 0 <= bits <= SHARD_BITS_MAX:
        raise ValueError(f"bits must be from 0 to {SHARD_BITS_MAX}, not {bits!r}")
    h = hash(key) & MASK_64
    x = OFFSET_64
    for _ in range(8):
        x = ((x ^ (h & 0xFF)) * PRIME_64) & MASK_64
        h >>= 8
    x = _fmix64(x)
    folded = (x ^ (x >> 32)) & MASK_32
    return folded >> (32 - bits) if bits else 0

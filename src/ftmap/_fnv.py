"""FNV hashes over bytes (Fowler-Noll-Vo), exactly as published.

fnv1_32 over a string's UTF-8 bytes is the hash Go's orcaman/concurrent-map
shards by, so ``ShardedMap(hasher=lambda k: fnv1_32(k.encode()))`` places
string keys on the same shard as orcaman does for the same shard count.
"""

from __future__ import annotations

__all__ = ["fnv1_32", "fnv1a_32", "fnv1a_64"]

OFFSET_32 = 0x811C9DC5
PRIME_32 = 0x01000193
OFFSET_64 = 0xCBF29CE484222325
PRIME_64 = 0x100000001B3
MASK_32 = 0xFFFFFFFF
MASK_64 = 0xFFFFFFFFFFFFFFFF


def fnv1_32(data: bytes) -> int:
    """FNV-1, 32 bits: multiply, then xor each byte."""
    h = OFFSET_32
    for byte in data:
        h = ((h * PRIME_32) & MASK_32) ^ byte
    return h


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bits: xor each byte, then multiply."""
    h = OFFSET_32
    for byte in data:
        h = ((h ^ byte) * PRIME_32) & MASK_32
    return h


def fnv1a_64(data: bytes) -> int:
    """FNV-1a, 64 bits."""
    h = OFFSET_64
    for byte in data:
        h = ((h ^ byte) * PRIME_64) & MASK_64
    return h

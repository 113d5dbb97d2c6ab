"""Kafka's default partitioner (murmur2 of the key), to find a customer's owning partition
(CONTRACT §10) exactly as the Java client, kafka-python and aiokafka place keyed records."""

from __future__ import annotations

import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 as ``org.apache.kafka.common.utils.Utils.murmur2``, as an unsigned 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    # Unpacking every 4-byte word at once keeps the Python loop to the arithmetic.
    for k in struct.unpack_from(f"<{whole // 4}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra >= 3:
        h ^= data[whole + 2] << 16
    if extra >= 2:
        h ^= data[whole + 1] << 8
    if extra >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (UTF-8) among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    raw = key.encode() if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


def customer_partition(workspace_id: str, customer_id: str, partitions: int) -> int:
    """The owning input partition of a customer: that of the key ``"<workspace_id>:<customer_id>"``."""
    return partition_for(f"{workspace_id}:{customer_id}", partitions)

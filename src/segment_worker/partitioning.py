"""Kafka's default partitioner (murmur2 of the key), to find a customer's owning partition
(CONTRACT §10) exactly as the Java client, kafka-python and aiokafka place keyed records."""

from __future__ import annotations

from murmurhash2 import murmurhash2 as _murmurhash2

# Kafka's seed (org.apache.kafka.common.utils.Utils.murmur2): the library's MurmurHash2 is the
# same algorithm (tests compare it with aiokafka's Python copy and Java's values); compiled, it is
# ~20x faster, which the outbox feels — one hash per CloudEvent (3.5 of ~12 µs per row).
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """MurmurHash2 as ``org.apache.kafka.common.utils.Utils.murmur2``, as an unsigned 32-bit int."""
    return _murmurhash2(data, _SEED)


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (UTF-8) among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    raw = key.encode() if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


def customer_partition(workspace_id: str, customer_id: str, partitions: int) -> int:
    """The owning input partition of a customer: that of the key ``"<workspace_id>:<customer_id>"``."""
    return partition_for(f"{workspace_id}:{customer_id}", partitions)

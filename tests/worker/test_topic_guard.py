"""``TopicGuard`` without servers: when deliveries say a log went back, and when a check may open
the guard again. The broker restarts behind it are in ``tests/faults/test_fault_servers.py``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from segment_worker.worker.topics import TopicGuard


@dataclass(frozen=True)
class Md:
    """The fields of aiokafka's ``RecordMetadata`` the guard reads."""

    topic: str
    partition: int
    offset: int


def test_offsets_that_grow_pass_and_one_that_goes_back_suspects_the_topics() -> None:
    g = TopicGuard()
    assert g.delivered([Md("out", 0, 0), Md("out", 1, 0)])
    assert g.delivered([Md("out", 0, 5), Md("out", 0, 9), Md("dlq", 0, 3)])
    assert g.verified
    # Another producer's records in between only move offsets further.
    assert g.delivered([Md("out", 0, 40)])
    # The broker came back empty: offset 0 again (Tansu also answers 0 for a topic it lacks).
    assert not g.delivered([Md("out", 0, 0), Md("out", 0, 1)])
    assert not g.verified
    # The same offset twice is no progress either.
    g2 = TopicGuard()
    assert g2.delivered([Md("out", 3, 7)])
    assert not g2.delivered([Md("out", 3, 7)])


def test_after_a_suspicion_the_new_logs_are_accepted_from_their_start() -> None:
    g = TopicGuard()
    assert g.delivered([Md("out", 0, 10), Md("dlq", 0, 4)])
    assert not g.delivered([Md("out", 0, 0)])
    g.confirmed(1, recreated=False)  # the topics task found the (auto-created) topic
    assert g.verified
    assert g.delivered([Md("out", 0, 0)])  # the re-send to the new log
    assert g.delivered([Md("dlq", 0, 0)])  # the DLQ may have started again too


def test_a_periodic_check_keeps_the_offsets_unless_it_recreated_a_topic() -> None:
    g = TopicGuard()
    assert g.delivered([Md("out", 0, 10)])
    g.confirmed(0, recreated=False)
    assert not g.delivered([Md("out", 0, 3)])
    g2 = TopicGuard()
    assert g2.delivered([Md("out", 0, 10)])
    g2.confirmed(0, recreated=True)
    assert g2.delivered([Md("out", 0, 0)])


async def test_a_suspicion_during_a_check_keeps_the_guard_closed_until_the_next_check() -> None:
    g = TopicGuard()
    g.suspect("test")
    ticket = await g.wait_check(60)  # suspected: due at once
    g.suspect("again, while the check ran")
    g.confirmed(ticket, recreated=False)
    assert not g.verified
    ticket = await asyncio.wait_for(g.wait_check(60), 1)  # the second suspicion is due at once too
    g.confirmed(ticket, recreated=True)
    assert g.verified
    assert await g.wait_verified(0.01)


async def test_without_a_suspicion_a_check_waits_its_period() -> None:
    g = TopicGuard()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await g.wait_check(0.2)
    assert loop.time() - started >= 0.19
    g.confirmed(0, recreated=False)
    assert g.verified


async def test_a_check_that_failed_is_due_again_at_once_while_the_guard_is_closed() -> None:
    g = TopicGuard()
    g.suspect("test")
    await g.wait_check(60)
    # The check raised (the broker still down): nothing confirmed; the next one does not wait
    # out the period with sends and batches held.
    ticket = await asyncio.wait_for(g.wait_check(60), 1)
    g.confirmed(ticket, recreated=False)
    assert g.verified

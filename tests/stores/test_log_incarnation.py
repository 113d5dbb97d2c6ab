"""Positions stored for a log the broker lost are void once the topic is recreated (migration 010)."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from segment_worker.stores import postgres as pg


async def test_positions_of_an_earlier_incarnation_are_void(
    conn: asyncpg.Connection, unique_name: Callable[[str], str]
) -> None:
    topic, group = unique_name("topic"), unique_name("group")
    await pg.record_topic(conn, topic, 4)
    assert await pg.new_incarnation(conn, topic) is None  # first creation: nothing stored, nothing voided
    await pg.save_offsets(conn, group, topic, {0: 50, 1: 70})
    assert await pg.load_positions(conn, group, topic, [0, 1, 2]) == ({0: 50, 1: 70}, {})
    assert await pg.new_incarnation(conn, topic) == 1  # the broker lost the log; the topic is new
    assert await pg.load_positions(conn, group, topic, [0, 1, 2]) == ({}, {0: 50, 1: 70})
    assert await pg.load_offsets(conn, group, topic, [0, 1]) == {}
    await pg.save_offsets(conn, group, topic, {1: 3})  # consumed from the new log
    assert await pg.load_positions(conn, group, topic, [0, 1]) == ({1: 3}, {0: 50})

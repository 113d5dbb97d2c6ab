"""The servers fail under the workers: PostgreSQL backends terminated and PostgreSQL restarted in
immediate mode; Redis emptied (FLUSHALL, kill -9 and restart), or a key of the wrong type; the
broker restarted (its log is in memory: a log that went back to the start). Each time the result
is exact, Redis equals PostgreSQL again within 60 s with no operator, and nothing produced after
a broker restart is skipped.

Scenarios that restart or empty a server use servers of this module alone (``own_servers``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from faults.checks import pg_members, wait_redis_equal
from faults.feed import ends
from faults.oracle import Oracle
from faults.run import FaultRun, positions, scaled, sleep_until, wait_owning
from faults.servers import OwnServers
from helpers.scenario import encode, mixed_events
from segment_worker.config import Settings
from segment_worker.kafka import ensure_topics, topic_partition_count
from segment_worker.stores.keys import segment_key

log = logging.getLogger("faults")
pytestmark = pytest.mark.timeout(400)

REDIS_HEAL_S = 60.0  # CONTRACT §6: rebuilt by the running service within 60 s


async def _two_workers(run: FaultRun) -> None:
    run.cluster.start(0)
    run.cluster.start(1)
    await wait_owning(run, [0, 1])


async def test_postgres_backends_terminated_under_load(
    unique_settings: Settings, workspace_id: str, tmp_path: Path
) -> None:
    run = await FaultRun.open(unique_settings, workspace_id, tmp_path)
    try:
        records = [encode(e) for e in mixed_events(run.ws.id, 400, scaled(6_000, 1_000), seed=51)]
        await _two_workers(run)
        step = max(100, len(records) // 12)
        terminated = 0
        for i in range(0, len(records), step):
            await run.produce(records[i : i + step])
            await asyncio.sleep(0.7)
            # Every backend of the test database but ours: the workers' pools, listeners, locks.
            terminated += await run.conn.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()) t"
            )
        assert terminated >= 12
        await run.finish(limit_s=120)
    finally:
        await run.close()


async def test_postgres_immediate_restart(own_servers: OwnServers, workspace_id: str, tmp_path: Path) -> None:
    run = await FaultRun.open(await own_servers.settings("pgrestart"), workspace_id, tmp_path)
    try:
        records = [encode(e) for e in mixed_events(run.ws.id, 400, scaled(6_000, 1_000), seed=52)]
        await _two_workers(run)
        third = len(records) // 3
        for n in range(3):
            await run.produce(records[n * third : (n + 1) * third])
            if n < 2:
                await asyncio.sleep(1.5)  # mid-stream
                await asyncio.to_thread(own_servers.restart_postgres_immediate)
                await run.reconnect()
        await run.finish(limit_s=150)
    finally:
        await run.close()


async def _redis_heals(
    own_servers: OwnServers,
    workspace_id: str,
    tmp_path: Path,
    name: str,
    fault: Callable[[FaultRun], Awaitable[None]],
) -> float:
    """Half the input, then ``fault``, then *no input at all*: Redis must equal PostgreSQL again
    within 60 s by itself; then the other half, and every check."""
    run = await FaultRun.open(await own_servers.settings(name), workspace_id, tmp_path)
    try:
        records = [encode(e) for e in mixed_events(run.ws.id, 400, scaled(4_000, 800), seed=53)]
        await _two_workers(run)
        half = len(records) // 2
        await run.produce(records[:half])
        await run.wait_out(90)
        await fault(run)
        try:
            healed = await wait_redis_equal(run.conn, run.redis, run.ws, REDIS_HEAL_S)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}\n{run.cluster.logs_tail(15)}") from None
        await run.produce(records[half:])
        await run.finish(limit_s=120)
        log.warning("%s: Redis equal to PostgreSQL again %.1f s after the fault", name, healed)
        return healed
    finally:
        await run.close()


async def test_redis_flushall(own_servers: OwnServers, workspace_id: str, tmp_path: Path) -> None:
    async def fault(run: FaultRun) -> None:
        await run.redis.flushall()

    await _redis_heals(own_servers, workspace_id, tmp_path, "flushall", fault)


async def test_redis_killed_and_restarted_empty(
    own_servers: OwnServers, workspace_id: str, tmp_path: Path
) -> None:
    async def fault(run: FaultRun) -> None:
        await asyncio.to_thread(own_servers.restart_redis_empty)

    await _redis_heals(own_servers, workspace_id, tmp_path, "redis-restart", fault)


async def test_redis_wrong_type_key(own_servers: OwnServers, workspace_id: str, tmp_path: Path) -> None:
    """A segment's key overwritten with a string (something outside the project wrote it): it is
    repaired, and that partition's output is not held back for good."""

    async def fault(run: FaultRun) -> None:
        await run.redis.set(segment_key(run.ws.id, run.ws.segments["VIP"]), "x")

    await _redis_heals(own_servers, workspace_id, tmp_path, "wrong-type", fault)


@pytest.mark.parametrize("workers", ["running", "frozen_meanwhile"])
async def test_broker_restart_is_a_log_that_went_back(
    workers: str, own_servers: OwnServers, workspace_id: str, tmp_path: Path
) -> None:
    """The broker restarts empty while the workers run: topics are recreated by the running
    workers, and every record produced after the restart is applied. ``frozen_meanwhile``: the
    workers are SIGSTOPped across the restart and the new log grows past the positions they
    stored before (the topics recreated by an operator); thawed, they must not seek to those
    positions and skip the records before them."""
    run = await FaultRun.open(await own_servers.settings("broker"), workspace_id, tmp_path)
    try:
        events = mixed_events(run.ws.id, 300, scaled(6_000, 1_200), seed=54)
        before, after = events[: len(events) // 5], events[len(events) // 5 :]  # the new log is longer
        await _two_workers(run)
        await run.produce([encode(e) for e in before])
        await run.wait_out(90)
        frozen = workers == "frozen_meanwhile"
        if frozen:
            for w in run.cluster.slots.values():
                w.signal(signal.SIGSTOP)
        await asyncio.to_thread(own_servers.restart_broker)
        s = run.settings
        if frozen:
            await ensure_topics(s)
            await run.produce([encode(e) for e in after], log_no=1)
            assert all(
                e > 2 * len(before) // s.input_partitions for e in ends(run.produced[len(before) :]).values()
            )
            for w in run.cluster.slots.values():
                w.signal(signal.SIGCONT)

        async def topic_back() -> bool:
            # Only looks (admin metadata): a producer's metadata request could auto-create it.
            try:
                return await topic_partition_count(s, s.topic_events) == s.input_partitions
            except Exception:
                return False

        try:
            await sleep_until(topic_back, 60, "the workers recreated the input topic", every_s=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{run.cluster.logs_tail(15)}") from None
        if not frozen:
            await run.produce([encode(e) for e in after], log_no=1)

        # First the input: every record after the restart applied (PostgreSQL == the oracle);
        # then everything, the output topic included (its events from before the restart are gone).
        want = Oracle(run.ws).fold(run.produced)

        async def applied() -> bool:
            return await pg_members(run.conn, run.ws) == want.members

        try:
            await sleep_until(applied, 120, "every record produced after the restart applied", every_s=1)
        except AssertionError as exc:
            got = await pg_members(run.conn, run.ws)
            short = {str(sid): len(want.members[sid] ^ got.get(sid, set())) for sid in want.members}
            raise AssertionError(
                f"{exc}: members differing per segment {short}; stored positions {await positions(run)}"
                f"\n{run.cluster.logs_tail(20)}"
            ) from None

        async def outputs_back() -> bool:
            # The running workers recreate the output and DLQ topics on their own schedule (seen:
            # 7 s after the restart); the input can be applied before that.
            try:
                return all([await topic_partition_count(s, t) > 0 for t in (s.topic_membership, s.topic_dlq)])
            except Exception:
                return False

        try:
            await sleep_until(outputs_back, 60, "the workers recreated the output and DLQ topics", every_s=1)

            async def verified() -> bool:
                try:
                    await run.verify(lost_output_before_log=1)
                except AssertionError:
                    return False
                return True

            # Then the outbox held back meanwhile goes out; exact within 60 s, or the difference.
            if not await _within(verified, 60):
                await run.verify(lost_output_before_log=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{run.cluster.logs_tail(20)}") from None
        run.cluster.assert_all_alive()
    finally:
        await run.close()


async def _within(cond: Callable[[], Awaitable[bool]], limit_s: float) -> bool:
    try:
        await sleep_until(cond, limit_s, "", every_s=2)
    except AssertionError:
        return False
    return True

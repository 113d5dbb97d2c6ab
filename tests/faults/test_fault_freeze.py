"""A worker frozen (SIGSTOP) past its session timeout — between batches, or inside one with its
transaction open and its locks held — then thawed (SIGCONT): the others process its partitions
again within the session timeout + 30 s (issue 13, "No worker can block another"), and the thawed
zombie writes nothing that survives, in PostgreSQL or Redis."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import pytest

from faults.cluster import owners, stop_at
from faults.feed import ends
from faults.run import FaultRun, scaled, sleep_until, wait_owning, wait_positions
from helpers.scenario import encode, mixed_events
from segment_worker.config import Settings

log = logging.getLogger("faults")
pytestmark = pytest.mark.timeout(300)

SESSION_TIMEOUT_S = 2.0  # WorkerProcess runs with --session-timeout-ms 2000
BOUND_S = SESSION_TIMEOUT_S + 30


@pytest.mark.parametrize("where", ["idle", "in_batch"])
async def test_frozen_worker_is_replaced_and_writes_nothing(
    where: str, unique_settings: Settings, workspace_id: str, tmp_path: Path
) -> None:
    run = await FaultRun.open(
        unique_settings.model_copy(update={"input_partitions": 6}), workspace_id, tmp_path
    )
    try:
        total = scaled(6_000, 1_200)
        records = [encode(e) for e in mixed_events(run.ws.id, 400, total, seed=41)]
        first, during, after = (
            records[: total // 3],
            records[total // 3 : 2 * total // 3],
            records[2 * total // 3 :],
        )
        # in_batch: its 2nd batch freezes itself after its writes, inside its
        # transaction (partition locks and row locks held), exactly like a stalled VM.
        run.cluster.start(0, stop_at("batch_written", 2) if where == "in_batch" else None)
        run.cluster.start(1)
        run.cluster.start(2)
        await wait_owning(run, [0, 1, 2])
        frozen = run.cluster.slots[0]
        if where == "idle":
            await run.produce(first)
            await run.wait_out(90)
            frozen.signal(signal.SIGSTOP)
        else:
            await run.produce(first)
            await sleep_until(lambda: _async(frozen.stopped()), 60, "slot 0 froze in a batch")
        t_frozen = time.monotonic()
        held = {p for p, pid in (await owners(run.conn, 6)).items() if pid == frozen.pid}
        assert held, "the frozen worker owned nothing"
        # Records for every partition (its own included) arrive while it is frozen.
        more = await run.produce(during)
        want = {p: e for p, e in ends(run.produced).items() if p in held}
        took = await wait_positions(run, want, BOUND_S + 30)
        moved_after = time.monotonic() - t_frozen
        assert moved_after <= BOUND_S, (
            f"its partitions {sorted(held)} were processed again only {moved_after:.1f} s after the"
            f" freeze (bound {BOUND_S:.0f} s)"
        )
        assert more and took >= 0
        # Thaw the zombie: it carries on from where it stopped (in_batch: its commit) and must be
        # fenced out of everything it would write.
        frozen.signal(signal.SIGCONT)
        await asyncio.sleep(5)
        await run.produce(after)
        await run.finish(limit_s=120)
        log.warning(
            "%s: partitions %s processed again %.1f s after the freeze", where, sorted(held), moved_after
        )
    finally:
        await run.close()


async def _async(value: bool) -> bool:
    return value

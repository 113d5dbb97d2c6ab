"""Segment operations through the service layer: synchronous recompute, exact diffs, deletion,
duplication, defaults, limits — checked in PostgreSQL, Redis and the outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from helpers.service import incoming, pg_members, redis_members, seed, tags, transitions, upsert
from segment_worker.errors import Conflict, NotFound, ValidationFailed
from segment_worker.partitioning import partition_for
from segment_worker.service import segments as svc
from segment_worker.service.context import ServiceContext
from segment_worker.service.workspaces import update_workspace
from segment_worker.stores.keys import segment_key
from segment_worker.text import fold

VIP = {"field": "tags", "op": "has", "value": "vip"}
LEAD = {"field": "tags", "op": "has", "value": "lead"}


async def _consistent(ctx: ServiceContext, ws: str, seg: svc.Segment, expected: set[str]) -> None:
    assert seg.member_count == len(expected)
    assert await pg_members(ctx, seg.id) == expected
    assert await redis_members(ctx, ws, seg.id) == expected
    assert (await svc.get_segment(ctx, ws, seg.id)).member_count == len(expected)


async def test_create_dynamic_segment_is_populated_before_it_returns(
    ctx: ServiceContext, workspace_id: str
) -> None:
    ws = workspace_id
    await seed(ctx, ws, {"a": [tags("VIP")], "b": [tags("lead")], "c": [tags("vip", "lead")]})
    version = "SELECT catalog_version FROM workspaces WHERE id = $1"
    assert await ctx.pool.fetchval(version, ws) is None  # the workspace is named first here
    seg = await svc.create_segment(ctx, ws, name="VIPs", type="dynamic", rules=VIP)
    assert await ctx.pool.fetchval(version, ws) == 1  # workers reload the catalogue
    await _consistent(ctx, ws, seg, {"a", "c"})
    rows = await transitions(ctx, seg.id)
    assert sorted((r["customer_id"], r["seq"], r["kind"], r["cause"]) for r in rows) == [
        ("a", 1, "entered", {"kind": "rules_changed"}),
        ("c", 1, "entered", {"kind": "rules_changed"}),
    ]
    assert {r["segment_name"] for r in rows} == {"VIPs"}
    assert all(r["at"].microsecond % 1000 == 0 for r in rows)  # commit time at ms precision
    await svc.update_segment(ctx, ws, seg.id, description="d")
    assert await ctx.pool.fetchval(version, ws) == 2


async def test_rule_edit_emits_exactly_the_difference(ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    await seed(
        ctx,
        ws,
        {
            "only-vip": [tags("vip")],
            "both": [tags("vip", "lead")],
            "only-lead": [tags("lead")],
            "none": [upsert(name="N")],
        },
    )
    seg = await svc.create_segment(ctx, ws, name="S", type="dynamic", rules=VIP)
    before = await pg_members(ctx, seg.id)
    n_before = len(await transitions(ctx, seg.id))
    seg = await svc.update_segment(ctx, ws, seg.id, rules=LEAD)
    after = {"both", "only-lead"}
    await _consistent(ctx, ws, seg, after)
    new = (await transitions(ctx, seg.id))[n_before:]
    assert {r["customer_id"] for r in new if r["kind"] == "entered"} == after - before
    assert {r["customer_id"] for r in new if r["kind"] == "exited"} == before - after
    assert len(new) == len(after ^ before)
    assert all(r["cause"] == {"kind": "rules_changed"} for r in new)
    assert [(r["customer_id"], r["seq"]) for r in new if r["kind"] == "exited"] == [("only-vip", 2)]
    # Back again: the pair's seq continues (3), never restarts.
    await svc.update_segment(ctx, ws, seg.id, rules=VIP)
    last = {r["customer_id"]: (r["seq"], r["kind"]) for r in await transitions(ctx, seg.id)}
    assert last["only-vip"] == (3, "entered") and last["only-lead"] == (2, "exited")


async def test_editing_only_the_name_moves_nobody(ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    await seed(ctx, ws, {"a": [tags("vip")]})
    seg = await svc.create_segment(ctx, ws, name="Old", type="dynamic", rules=VIP)
    updated = await svc.update_segment(ctx, ws, seg.id, name="New", description="d")
    assert (updated.name, updated.description, updated.member_count) == ("New", "d", 1)
    assert updated.updated_at >= seg.updated_at
    assert len(await transitions(ctx, seg.id)) == 1
    cleared = await svc.update_segment(ctx, ws, seg.id, description=None)
    assert cleared.description is None and cleared.name == "New"


async def test_invalid_input_is_refused_with_paths(ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    with pytest.raises(ValidationFailed) as err:
        await svc.create_segment(
            ctx, ws, name="x", type="dynamic", rules={"all": [{"field": "nope", "op": "eq", "value": 1}]}
        )
    assert err.value.details[0]["path"] == "$.rules.all[0].field"
    with pytest.raises(ValidationFailed, match="static segment has no rules"):
        await svc.create_segment(ctx, ws, name="x", type="static", rules=VIP)
    with pytest.raises(ValidationFailed, match="needs rules"):
        await svc.create_segment(ctx, ws, name="x", type="dynamic")
    with pytest.raises(ValidationFailed, match="1–100"):
        await svc.create_segment(ctx, ws, name="x" * 101, type="static")
    with pytest.raises(ValidationFailed, match="1–100"):
        await svc.create_segment(ctx, ws, name="   ", type="static")
    with pytest.raises(ValidationFailed, match="500"):
        await svc.create_segment(ctx, ws, name="x", type="static", description="d" * 501)
    with pytest.raises(ValidationFailed):
        await svc.create_segment(ctx, "bad:ws", name="x", type="static")
    assert (await svc.list_segments(ctx, ws)).total == 0


async def test_names_are_unique_ignoring_case(ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    await svc.create_segment(ctx, ws, name="Newsletter Subscribers", type="static")
    with pytest.raises(Conflict, match="already exists"):
        await svc.create_segment(ctx, ws, name="NEWSLETTER subscribers", type="static")
    other = await svc.create_segment(ctx, ws, name="Other", type="static")
    with pytest.raises(Conflict):
        await svc.update_segment(ctx, ws, other.id, name="newsletter SUBSCRIBERS")
    renamed = await svc.update_segment(ctx, ws, other.id, name="OTHER")  # its own name, new case
    assert renamed.name == "OTHER"


async def test_type_cannot_change(ctx: ServiceContext, workspace_id: str) -> None:
    seg = await svc.create_segment(ctx, workspace_id, name="s", type="static")
    with pytest.raises(ValidationFailed, match="type cannot change"):
        await svc.update_segment(ctx, workspace_id, seg.id, type="dynamic")
    with pytest.raises(ValidationFailed, match="static segment has no rules"):
        await svc.update_segment(ctx, workspace_id, seg.id, rules=VIP)
    assert (await svc.update_segment(ctx, workspace_id, seg.id, type="static")).type == "static"
    assert (await svc.update_segment(ctx, workspace_id, seg.id, rules=None)).rules is None


async def test_the_500th_segment_is_the_last(ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    first = await svc.create_segment(ctx, ws, name="first", type="static")
    now = datetime.now(UTC)
    await ctx.pool.executemany(
        "INSERT INTO segments (id, workspace_id, name, name_folded, type, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, 'static', $5, $5)",
        [(uuid.uuid4(), ws, f"s{i}", fold(f"s{i}"), now) for i in range(498)],
    )
    await svc.create_segment(ctx, ws, name="the 500th", type="static")
    with pytest.raises(Conflict, match="at most 500 segments"):
        await svc.create_segment(ctx, ws, name="the 501st", type="static")
    with pytest.raises(Conflict, match="at most 500"):
        await svc.duplicate_segment(ctx, ws, first.id, name="copy")
    with pytest.raises(Conflict, match="at most 500"):
        await svc.create_default_segments(ctx, ws)


async def test_delete_removes_set_and_memberships_and_emits_one_deleted_event(
    ctx: ServiceContext, workspace_id: str
) -> None:
    ws = workspace_id
    await seed(ctx, ws, {"a": [tags("vip")], "b": [tags("vip")]})
    seg = await svc.create_segment(ctx, ws, name="Doomed", type="dynamic", rules=VIP)
    assert await ctx.redis.exists(segment_key(ws, seg.id))
    await svc.delete_segment(ctx, ws, seg.id)
    assert not await ctx.redis.exists(segment_key(ws, seg.id))
    assert await pg_members(ctx, seg.id) == set()
    assert await ctx.pool.fetchval("SELECT count(*) FROM memberships WHERE segment_id = $1", seg.id) == 0
    rows = await transitions(ctx, seg.id)
    assert [r["kind"] for r in rows] == ["entered", "entered", "deleted"]  # no exit events
    deleted = rows[-1]
    assert deleted["customer_id"] is None and deleted["cause"] == {"kind": "manual"}
    assert deleted["partition"] == partition_for(f"{ws}:{seg.id}", 4)
    assert await ctx.pool.fetchval("SELECT count(*) FROM customers WHERE workspace_id = $1", ws) == 2
    with pytest.raises(NotFound):
        await svc.get_segment(ctx, ws, seg.id)
    with pytest.raises(NotFound):
        await svc.delete_segment(ctx, ws, seg.id)


async def test_segments_of_another_workspace_are_not_found(ctx: ServiceContext, workspace_id: str) -> None:
    seg = await svc.create_segment(ctx, workspace_id, name="mine", type="static")
    with pytest.raises(NotFound):
        await svc.get_segment(ctx, workspace_id + "-other", seg.id)
    with pytest.raises(NotFound):
        await svc.delete_segment(ctx, workspace_id + "-other", seg.id)
    with pytest.raises(NotFound):
        await svc.get_segment(ctx, workspace_id, "not-a-uuid")


async def test_duplicate_copies_rules_or_members(ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    await seed(ctx, ws, {"a": [tags("vip")], "b": [tags("vip")], "c": [upsert(name="C")]})
    dyn = await svc.create_segment(ctx, ws, name="Dyn", type="dynamic", rules=VIP, description="vips")
    copy = await svc.duplicate_segment(ctx, ws, dyn.id, name="Dyn copy")
    assert (copy.type, copy.rules, copy.description) == ("dynamic", dyn.rules, "vips")
    await _consistent(ctx, ws, copy, {"a", "b"})
    assert {r["cause"]["kind"] for r in await transitions(ctx, copy.id)} == {"rules_changed"}

    from segment_worker.service.members import add_members

    static = await svc.create_segment(ctx, ws, name="Static", type="static")
    await add_members(ctx, ws, static.id, ["a", "c"])
    scopy = await svc.duplicate_segment(ctx, ws, static.id, name="Static copy", description=None)
    assert scopy.description is None and scopy.rules is None
    await _consistent(ctx, ws, scopy, {"a", "c"})
    assert {(r["kind"], r["cause"]["kind"]) for r in await transitions(ctx, scopy.id)} == {
        ("entered", "manual")
    }
    with pytest.raises(Conflict):
        await svc.duplicate_segment(ctx, ws, static.id, name="static")


async def test_defaults_are_the_five_and_skip_existing_names(ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    old = datetime.now(UTC) - timedelta(days=40)
    await seed(
        ctx,
        ws,
        {
            "new-quiet": [upsert(name="n", country="om")],
            "old-quiet": [upsert(at=old, name="o", language="AR")],
            "old-talker": [upsert(at=old, name="t"), incoming(old)],
            "new-talker": [upsert(name="x"), incoming(datetime.now(UTC)), tags("vip")],
        },
    )
    await svc.create_segment(ctx, ws, name="has TAGS", type="static")
    result = await svc.create_default_segments(ctx, ws)
    assert result.skipped == ("Has tags",)
    members = {s.name: await pg_members(ctx, s.id) for s in result.created}
    assert members == {
        "Created in the last 7 days": {"new-quiet", "new-talker"},
        "Inactive for more than 30 days": {"old-talker"},
        "Country known": {"new-quiet"},
        "Language known": {"old-quiet"},
    }
    for s in result.created:
        assert await redis_members(ctx, ws, s.id) == members[s.name] and s.member_count == len(
            members[s.name]
        )
    again = await svc.create_default_segments(ctx, ws)
    assert again.created == () and len(again.skipped) == 5


async def test_list_newest_first_with_search_and_pages(ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    names = ["Alpha", "beta", "Gamma 50%", "ALPHABET", "delta_x"]
    for n in names:
        await svc.create_segment(ctx, ws, name=n, type="static")
    page = await svc.list_segments(ctx, ws, limit=2)
    assert [s.name for s in page.items] == ["delta_x", "ALPHABET"] and page.total == 5
    seen = [s.name for s in page.items]
    while page.next_cursor:
        page = await svc.list_segments(ctx, ws, limit=2, cursor=page.next_cursor)
        seen += [s.name for s in page.items]
    assert seen == list(reversed(names))
    assert [s.name for s in (await svc.list_segments(ctx, ws, q="alpha")).items] == ["ALPHABET", "Alpha"]
    assert [s.name for s in (await svc.list_segments(ctx, ws, q="%")).items] == ["Gamma 50%"]
    assert [s.name for s in (await svc.list_segments(ctx, ws, q="_")).items] == ["delta_x"]
    assert (await svc.list_segments(ctx, ws + "-unknown")).total == 0
    with pytest.raises(ValidationFailed, match="cursor"):
        await svc.list_segments(ctx, ws, cursor="garbage")
    with pytest.raises(ValidationFailed, match="limit"):
        await svc.list_segments(ctx, ws, limit=501)


async def test_new_timezone_recomputes_calendar_segments_only(ctx: ServiceContext, workspace_id: str) -> None:
    ws = workspace_id
    late = datetime(2026, 1, 1, 22, 0, tzinfo=UTC)  # Jan 2 in Muscat (UTC+4)
    await seed(ctx, ws, {"late": [upsert(at=late, name="L"), tags("vip")]})
    day = await svc.create_segment(
        ctx,
        ws,
        name="Jan 2",
        type="dynamic",
        rules={"field": "created_at", "op": "on", "value": "2026-01-02"},
    )
    vip = await svc.create_segment(ctx, ws, name="VIP", type="dynamic", rules=VIP)
    assert day.member_count == 0 and vip.member_count == 1
    w = await update_workspace(ctx, ws, timezone="Asia/Muscat")
    assert (w.timezone, w.default_region) == ("Asia/Muscat", None)
    assert await pg_members(ctx, day.id) == {"late"} == await redis_members(ctx, ws, day.id)
    assert [(r["kind"], r["cause"]) for r in await transitions(ctx, day.id)] == [
        ("entered", {"kind": "rules_changed"})
    ]
    assert len(await transitions(ctx, vip.id)) == 1
    w = await update_workspace(ctx, ws, default_region="om")
    assert (w.timezone, w.default_region) == ("Asia/Muscat", "OM")
    with pytest.raises(ValidationFailed, match="timezone"):
        await update_workspace(ctx, ws, timezone="Mars/Olympus")
    with pytest.raises(ValidationFailed):
        await update_workspace(ctx, ws, default_region="XX")

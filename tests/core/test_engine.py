"""The pure engine: events → states and enter/exit transitions, with real compiled rules."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from segment_worker.engine import ProcessResult, SegmentDef, WorkspaceView, build_view, process
from segment_worker.events import AnyInputEvent, parse_event
from segment_worker.partitioning import customer_partition
from segment_worker.rules.compiled import CompiledRule, compile_rule
from segment_worker.rules.model import Catalog, FieldDef, FieldType
from segment_worker.rules.timectx import TimeContext
from segment_worker.rules.validate import parse_rule
from segment_worker.state import CustomerRecord, CustomerState, Membership

NOW = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
AT = datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=UTC)
CATALOG = Catalog.for_workspace(
    {"tier": FieldDef("attributes.tier", FieldType.SELECT, ("gold", "platinum"))}, timezone="Asia/Muscat"
)
VIP, ARABIC, GOLD, NEW, STATIC = (uuid.UUID(int=i) for i in range(1, 6))
PARTITIONS = 12


@dataclass
class Counting:
    """A real compiled rule that counts how often it is bound and evaluated."""

    inner: CompiledRule
    evaluated: int = 0
    bound: int = 0
    calls: list[str] = field(default_factory=list)

    @property
    def fields(self) -> frozenset[str]:
        return self.inner.fields

    @property
    def time_relative(self) -> bool:
        return self.inner.time_relative

    def bind(self, ctx: TimeContext) -> tuple[object, ...]:
        self.bound += 1
        return self.inner.bind(ctx)

    @property
    def matches(self) -> Callable[[CustomerState, tuple[object, ...]], bool]:
        def counted(state: CustomerState, bound: tuple[object, ...]) -> bool:
            self.evaluated += 1
            self.calls.append(state.customer_id)
            return self.inner.matches(state, bound)

        return counted


def rule(doc: dict[str, Any]) -> Counting:
    return Counting(compile_rule(parse_rule(doc, CATALOG), CATALOG))


def make_view() -> tuple[WorkspaceView, dict[uuid.UUID, Counting]]:
    rules = {
        VIP: rule({"field": "tags", "op": "has", "value": "VIP"}),
        ARABIC: rule(
            {
                "all": [
                    {"field": "language", "op": "eq", "value": "ar"},
                    {"field": "country", "op": "is_not_empty"},
                ]
            }
        ),
        GOLD: rule({"field": "attributes.tier", "op": "in", "value": ["gold", "platinum"]}),
        NEW: rule({"field": "created_at", "op": "in_last_days", "value": 7}),
    }
    names = {VIP: "VIP", ARABIC: "Arabic speakers", GOLD: "Gold", NEW: "New"}
    segments = [SegmentDef(sid, "ws1", names[sid], "dynamic", r) for sid, r in rules.items()]
    segments.append(SegmentDef(STATIC, "ws1", "Hand-picked", "static"))
    return build_view("ws1", CATALOG, segments, default_region="OM"), rules


def ev(
    kind: str, data: dict[str, Any], *, eid: str, cid: str = "c1", days_ago: float = 0, ws: str = "ws1"
) -> AnyInputEvent:
    at = (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")
    return parse_event(
        orjson.dumps(
            {
                "event_id": eid,
                "type": f"customer.{kind}",
                "workspace_id": ws,
                "customer_id": cid,
                "occurred_at": at,
                "data": data,
            }
        )
    )


def summary(result: ProcessResult) -> list[tuple[str, str, str, int, str]]:
    names = {VIP: "VIP", ARABIC: "ARABIC", GOLD: "GOLD", NEW: "NEW", STATIC: "STATIC"}
    return [(t.customer_id, names[t.segment_id], t.kind, t.seq, t.cause["kind"]) for t in result.transitions]


def test_build_view_indexes_dynamic_segments_by_field() -> None:
    view, _ = make_view()
    assert view.all_dynamic == (VIP, ARABIC, GOLD, NEW)
    assert dict(view.index) == {
        "tags": (VIP,),
        "language": (ARABIC,),
        "country": (ARABIC,),
        "attributes.tier": (GOLD,),
        "created_at": (NEW,),
    }
    assert set(view.attrs) == {"tier"} and view.segments[STATIC].rule is None


def test_enter_then_exit_across_batches() -> None:
    view, _ = make_view()
    records: dict[tuple[str, str], CustomerRecord] = {}
    r1 = process(
        [ev("tags_added", {"tags": ["vip"]}, eid="e1", days_ago=30)],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    assert summary(r1) == [("c1", "VIP", "entered", 1, "event")]
    t = r1.transitions[0]
    assert (t.workspace_id, t.segment_name, t.at, t.cause) == (
        "ws1",
        "VIP",
        AT,
        {"kind": "event", "event_id": "e1"},
    )
    assert t.partition == customer_partition("ws1", "c1", PARTITIONS)
    rec = records[("ws1", "c1")]
    assert rec.memberships[VIP] == Membership(True, 1)  # records keep no joined_at
    assert r1.changed == [("ws1", "c1")] and r1.rejected == [] and r1.optouts == []

    r2 = process(
        [ev("tags_removed", {"tags": ["VIP"]}, eid="e2", days_ago=29)],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    assert summary(r2) == [("c1", "VIP", "exited", 2, "event")]
    assert rec.memberships[VIP] == Membership(False, 2)


def test_enter_and_exit_within_one_batch() -> None:
    view, _ = make_view()
    records: dict[tuple[str, str], CustomerRecord] = {}
    events = [
        ev("upserted", {"language": "AR", "country": "om"}, eid="a", days_ago=20),
        ev("tags_added", {"tags": ["VIP"]}, eid="b", days_ago=19),
        ev("upserted", {"country": None}, eid="c", days_ago=18),
        ev("tags_removed", {"tags": ["vip"]}, eid="d", days_ago=17),
        ev("tags_added", {"tags": ["Vip"]}, eid="e", days_ago=16),
    ]
    result = process(events, records, {"ws1": view}, NOW, partitions=PARTITIONS)
    assert summary(result) == [
        ("c1", "ARABIC", "entered", 1, "event"),
        ("c1", "VIP", "entered", 1, "event"),
        ("c1", "ARABIC", "exited", 2, "event"),
        ("c1", "VIP", "exited", 2, "event"),
        ("c1", "VIP", "entered", 3, "event"),
    ]
    assert [t.cause["event_id"] for t in result.transitions] == ["a", "b", "c", "d", "e"]
    assert result.changed == [("ws1", "c1")]


def test_seq_continues_after_delete_and_recreate_and_static_exits() -> None:
    view, _ = make_view()
    records = {("ws1", "c1"): CustomerRecord(None, {STATIC: Membership(True, 4, AT - timedelta(days=1))})}
    first = process(
        [ev("tags_added", {"tags": ["VIP"]}, eid="a", days_ago=2)],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    # Created 2 days ago: VIP and "New" (created_at in the last 7 days) both enter.
    assert summary(first) == [("c1", "VIP", "entered", 1, "event"), ("c1", "NEW", "entered", 1, "event")]
    deleted = process(
        [ev("deleted", {}, eid="del", days_ago=1)], records, {"ws1": view}, NOW, partitions=PARTITIONS
    )
    assert summary(deleted) == [
        ("c1", "STATIC", "exited", 5, "customer_deleted"),
        ("c1", "VIP", "exited", 2, "customer_deleted"),
        ("c1", "NEW", "exited", 2, "customer_deleted"),
    ]
    assert deleted.transitions[0].cause == {"kind": "customer_deleted", "event_id": "del"}
    state = records[("ws1", "c1")].state
    assert state is not None and state.deleted
    # Older events than the tombstone are ignored: no state change, no transition.
    stale = process(
        [ev("tags_added", {"tags": ["VIP"]}, eid="old", days_ago=1.5)],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    assert stale.transitions == [] and stale.changed == []
    again = process(
        [ev("tags_added", {"tags": ["VIP"]}, eid="new")], records, {"ws1": view}, NOW, partitions=PARTITIONS
    )
    assert summary(again) == [("c1", "VIP", "entered", 3, "event"), ("c1", "NEW", "entered", 3, "event")]
    assert records[("ws1", "c1")].memberships[STATIC] == Membership(False, 5)  # the worker never re-adds


def test_delete_exits_nothing_for_segments_that_are_gone() -> None:
    view, _ = make_view()
    gone = uuid.UUID(int=99)
    records = {("ws1", "c1"): CustomerRecord(None, {gone: Membership(True, 1, AT)})}
    process([ev("upserted", {}, eid="a", days_ago=30)], records, {"ws1": view}, NOW, partitions=PARTITIONS)
    result = process(
        [ev("deleted", {}, eid="b", days_ago=29)], records, {"ws1": view}, NOW, partitions=PARTITIONS
    )
    assert result.transitions == [] and result.changed == [("ws1", "c1")]


def test_only_segments_indexed_by_changed_fields_are_evaluated() -> None:
    view, rules = make_view()
    records: dict[tuple[str, str], CustomerRecord] = {}
    process(
        [ev("upserted", {"name": "A"}, eid="a", days_ago=30)],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    assert {sid: r.evaluated for sid, r in rules.items()} == {VIP: 1, ARABIC: 1, GOLD: 1, NEW: 1}  # created
    process(
        [ev("tags_added", {"tags": ["x"]}, eid="b", days_ago=29)],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    assert {sid: r.evaluated for sid, r in rules.items()} == {VIP: 2, ARABIC: 1, GOLD: 1, NEW: 1}
    process(
        [
            ev("upserted", {"language": "en", "name": "B"}, eid="c", days_ago=28),
            ev("attributes_set", {"attributes": {"tier": "GOLD", "other": 1}}, eid="d", days_ago=28),
        ],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    assert {sid: r.evaluated for sid, r in rules.items()} == {VIP: 2, ARABIC: 2, GOLD: 2, NEW: 1}
    # No value change (same tag again, newer version): nothing is evaluated.
    result = process(
        [ev("tags_added", {"tags": ["X"]}, eid="e", days_ago=27)],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    assert result.changed == [("ws1", "c1")] and rules[VIP].evaluated == 2


def test_time_values_are_bound_once_per_batch() -> None:
    view, rules = make_view()
    records: dict[tuple[str, str], CustomerRecord] = {}
    events = [ev("upserted", {}, eid=f"e{i}", cid=f"c{i}", days_ago=i) for i in range(10)]
    result = process(events, records, {"ws1": view}, NOW, partitions=PARTITIONS)
    assert rules[NEW].bound == 1 and rules[NEW].evaluated == 10
    # in_last_days 7 on a datetime: now − 7 days ≤ created_at ≤ now.
    assert [t.customer_id for t in result.transitions if t.segment_id == NEW] == [f"c{i}" for i in range(8)]


def test_rejected_event_changes_nothing() -> None:
    view, _ = make_view()
    records: dict[tuple[str, str], CustomerRecord] = {}
    events = [
        ev("attributes_set", {"attributes": {"tier": "bronze"}}, eid="bad", days_ago=30),
        ev("attributes_set", {"attributes": {"tier": "Platinum"}}, eid="good", cid="c2", days_ago=30),
    ]
    result = process(events, records, {"ws1": view}, NOW, partitions=PARTITIONS)
    assert result.rejected == [
        (
            0,
            "data.attributes.tier: 'bronze' is not one of the declared options (gold, platinum); "
            "use null to unset",
        )
    ]
    assert summary(result) == [("c2", "GOLD", "entered", 1, "event")]
    assert result.changed == [("ws1", "c2")] and records[("ws1", "c1")].state is None


def test_replaying_a_batch_emits_nothing() -> None:
    view, _ = make_view()
    records: dict[tuple[str, str], CustomerRecord] = {}
    events = [
        ev("upserted", {"language": "ar", "country": "OM"}, eid="a", days_ago=3),
        ev("tags_added", {"tags": ["VIP"]}, eid="b", days_ago=3),
        ev("opt_out_set", {"marketing_opt_out": True}, eid="c", days_ago=3),
        ev("tags_removed", {"tags": ["VIP"]}, eid="d", days_ago=2),
    ]
    first = process(events, records, {"ws1": view}, NOW, partitions=PARTITIONS)
    assert summary(first) == [
        ("c1", "ARABIC", "entered", 1, "event"),
        ("c1", "NEW", "entered", 1, "event"),
        ("c1", "VIP", "entered", 1, "event"),
        ("c1", "VIP", "exited", 2, "event"),
    ]
    assert first.optouts == [("ws1", "c1", True)]
    second = process(events[::-1], records, {"ws1": view}, NOW, partitions=PARTITIONS)
    assert second == ProcessResult()


def test_unknown_workspace_has_no_segments_but_keeps_state() -> None:
    view, _ = make_view()
    records: dict[tuple[str, str], CustomerRecord] = {}
    result = process(
        [ev("tags_added", {"tags": ["VIP"]}, eid="a", ws="other")],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    assert result.transitions == [] and result.changed == [("other", "c1")]
    state = records[("other", "c1")].state
    assert state is not None and state.tags == {"vip"}


def test_late_delete_exits_then_reevaluates_the_surviving_customer() -> None:
    view, _ = make_view()
    records: dict[tuple[str, str], CustomerRecord] = {}
    process(
        [
            ev("tags_added", {"tags": ["VIP"]}, eid="a", days_ago=30),
            ev("upserted", {"language": "ar", "country": "OM"}, eid="b", days_ago=10),
        ],
        records,
        {"ws1": view},
        NOW,
        partitions=PARTITIONS,
    )
    result = process(
        [ev("deleted", {}, eid="del", days_ago=20)], records, {"ws1": view}, NOW, partitions=PARTITIONS
    )
    # As if the delete had come first: everything exits, the later upsert re-creates the customer.
    assert summary(result) == [
        ("c1", "VIP", "exited", 2, "customer_deleted"),
        ("c1", "ARABIC", "exited", 2, "customer_deleted"),
        ("c1", "ARABIC", "entered", 3, "event"),
    ]


def test_customers_whose_date_attributes_changed_are_reported_for_customer_times() -> None:
    catalog = Catalog.for_workspace({
        "tier": FieldDef("attributes.tier", FieldType.SELECT, ("gold", "platinum")),
        "birthday": FieldDef("attributes.birthday", FieldType.DATE),
        "renews_at": FieldDef("attributes.renews_at", FieldType.DATETIME),
    })
    view = build_view("ws1", catalog, [])
    records: dict[tuple[str, str], CustomerRecord] = {}
    first = process(
        [
            ev("upserted", {"name": "A"}, eid="e1", cid="plain"),
            ev("attributes_set", {"attributes": {"birthday": "1990-04-02"}}, eid="e2", cid="dated"),
            ev("attributes_set", {"attributes": {"tier": "gold"}}, eid="e3", cid="tiered"),
        ],
        records, {"ws1": view}, NOW, partitions=PARTITIONS,
    )
    assert set(first.changed) == {("ws1", "plain"), ("ws1", "dated"), ("ws1", "tiered")}
    assert first.times_changed == {("ws1", "dated")}
    again = process(
        [
            # The same birthday again: no change.
            ev("attributes_set", {"attributes": {"birthday": "1990-04-02"}}, eid="e4", cid="dated"),
            ev("attributes_set", {"attributes": {"tier": "platinum", "renews_at": "2027-01-01T00:00:00Z"}},
               eid="e5", cid="tiered"),
            ev("deleted", {}, eid="e6", cid="dated"),
        ],
        records, {"ws1": view}, NOW, partitions=PARTITIONS,
    )
    # "dated": its birthday went with the delete; "tiered": a datetime was set.
    assert again.times_changed == {("ws1", "dated"), ("ws1", "tiered")}
    # A workspace declaring no date attribute reports none.
    plain = process([ev("attributes_set", {"attributes": {"x": "2026-01-01"}}, eid="e7", cid="other")],
                    {}, {"ws1": build_view("ws1", Catalog.for_workspace(), [])}, NOW, partitions=PARTITIONS)
    assert plain.changed and not plain.times_changed

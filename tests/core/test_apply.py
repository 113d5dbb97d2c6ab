"""Per-field last-writer-wins application of events (CONTRACT §2, DESIGN "Versions, order, replay")."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from segment_worker.apply import ApplyResult, apply_event, declared_value_problem, exists, normalize_phone
from segment_worker.events import AnyInputEvent, parse_event
from segment_worker.rules.model import FieldDef, FieldType
from segment_worker.state import CustomerState

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
ATTRS = {
    "tier": FieldDef("attributes.tier", FieldType.SELECT, ("Gold", "Platinum")),
    "topics": FieldDef("attributes.topics", FieldType.MULTI_SELECT, ("Sports", "News")),
    "score": FieldDef("attributes.score", FieldType.NUMBER),
    "vip": FieldDef("attributes.vip", FieldType.BOOLEAN),
    "birthday": FieldDef("attributes.birthday", FieldType.DATE),
    "seen": FieldDef("attributes.seen", FieldType.DATETIME),
    "nick": FieldDef("attributes.nick", FieldType.TEXT),
}


def ev(
    kind: str, data: dict[str, Any], *, minute: float = 0, eid: str = "e", cid: str = "c1"
) -> AnyInputEvent:
    """An event parsed from JSON, as the worker gets it."""
    at = (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
    body = {
        "event_id": eid,
        "type": f"customer.{kind}",
        "workspace_id": "ws1",
        "customer_id": cid,
        "occurred_at": at,
        "data": data,
    }
    return parse_event(orjson.dumps(body))


def run(
    events: list[AnyInputEvent], state: CustomerState | None = None, region: str | None = None
) -> CustomerState:
    for e in events:
        res = apply_event(state, e, ATTRS, region, partition=3)
        assert res.rejected is None
        state = res.state
    assert state is not None
    return state


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def test_first_event_creates_the_customer() -> None:
    res = apply_event(
        None,
        ev("upserted", {"name": "Aïsha", "country": "om", "language": "AR"}, minute=5),
        ATTRS,
        None,
        partition=7,
    )
    s = res.state
    assert s is not None and res.created and res.applied and not res.deleted
    assert (s.workspace_id, s.customer_id, s.partition, s.deleted) == ("ws1", "c1", 7, False)
    assert (s.name, s.name_f, s.country, s.country_f, s.language, s.language_f) == (
        "Aïsha",
        "aïsha",
        "OM",
        "om",
        "ar",
        "ar",
    )
    assert s.created_at == at(5) and s.first_seen_us is not None
    assert res.changed == {"name", "country", "language", "created_at"}
    assert s.versions["f:name"][1] == "e" and exists(s)


def test_phone_normalisation() -> None:
    s = run([ev("upserted", {"phone": " +968 9123 4567 "})])
    assert (s.phone, s.phone_f) == ("+96891234567", "+96891234567")
    s = run([ev("upserted", {"phone": "9123 4567"})], region="OM")
    assert s.phone == "+96891234567"
    s = run([ev("upserted", {"phone": " call me MAYBE "})])
    assert (s.phone, s.phone_f) == ("call me MAYBE", "call me maybe")
    assert normalize_phone("91234567", None) == "91234567"  # national number, no region: kept


def test_newer_write_wins_older_is_ignored_whatever_the_order() -> None:
    old, new = (
        ev("upserted", {"name": "Old"}, minute=1, eid="a"),
        ev("upserted", {"name": "New"}, minute=2, eid="b"),
    )
    s = run([old, new])
    assert s.name == "New"
    s2 = run([new])
    res = apply_event(s2, old, ATTRS, None)
    assert s2.name == "New" and res.changed == {"created_at"}  # the older event is the first seen
    assert s2.created_at == at(1)


def test_same_instant_is_ordered_by_event_id() -> None:
    a, b = ev("upserted", {"name": "A"}, eid="a"), ev("upserted", {"name": "B"}, eid="b")
    assert run([a, b]).name == run([b, a]).name == "B"


def test_duplicate_changes_nothing() -> None:
    e = ev("tags_added", {"tags": ["VIP"]})
    s = run([e])
    before = dataclasses.replace(
        s, versions=dict(s.versions), tags=set(s.tags), tag_labels=dict(s.tag_labels)
    )
    res = apply_event(s, e, ATTRS, None)
    assert res == ApplyResult(s) and s == before


def test_null_clears_and_keeps_its_version() -> None:
    s = run(
        [
            ev("upserted", {"email": "A@x.io"}, minute=1, eid="a"),
            ev("upserted", {"email": None}, minute=3, eid="b"),
        ]
    )
    assert (s.email, s.email_f) == (None, None)
    res = apply_event(s, ev("upserted", {"email": "late@x.io"}, minute=2, eid="c"), ATTRS, None)
    assert s.email is None and not res.changed and not res.applied


def test_tags_case_insensitive_with_display_label() -> None:
    s = run([ev("tags_added", {"tags": ["VIP", "Lead"]}, minute=1, eid="a")])
    assert s.tags == {"vip", "lead"} and s.tag_labels == {"vip": "VIP", "lead": "Lead"}
    res = apply_event(s, ev("tags_removed", {"tags": ["vip"]}, minute=2, eid="b"), ATTRS, None)
    assert res.changed == {"tags"} and s.tags == {"lead"} and "vip" not in s.tag_labels
    res = apply_event(s, ev("tags_added", {"tags": ["vip"]}, minute=1.5, eid="c"), ATTRS, None)
    assert s.tags == {"lead"} and not res.changed  # older than the removal
    res = apply_event(s, ev("tags_added", {"tags": ["LEAD"]}, minute=3, eid="d"), ATTRS, None)
    assert s.tag_labels["lead"] == "LEAD" and not res.changed and res.applied  # label only


def test_attributes_set_unset_and_folded() -> None:
    s = run(
        [ev("attributes_set", {"attributes": {"tier": "GOLD", "topics": ["Sports"], "score": 7, "x": "Ü"}})]
    )
    assert s.attrs == {"tier": "GOLD", "topics": ["Sports"], "score": 7, "x": "Ü"}
    assert s.attrs_f == {"tier": "gold", "topics": ["sports"], "score": 7, "x": "ü"}
    res = apply_event(
        s, ev("attributes_set", {"attributes": {"x": None, "score": 7.0}}, minute=1, eid="b"), ATTRS, None
    )
    assert "x" not in s.attrs and "x" not in s.attrs_f and s.attrs["score"] == 7.0
    assert res.changed == {"attributes.x", "attributes.score"}  # 7 → 7.0 reported: type changed
    res = apply_event(s, ev("attributes_set", {"attributes": {"flag": True}}, minute=2, eid="c"), ATTRS, None)
    res = apply_event(s, ev("attributes_set", {"attributes": {"flag": 1}}, minute=3, eid="d"), ATTRS, None)
    assert res.changed == {"attributes.flag"} and s.attrs["flag"] == 1 and s.attrs["flag"] is not True


def test_declared_attribute_values_are_checked() -> None:
    s = run([ev("attributes_set", {"attributes": {"tier": "gold"}})])
    cases = {
        "tier": (
            "bronze",
            "data.attributes.tier: 'bronze' is not one of the declared options (Gold, Platinum); "
            "use null to unset",
        ),
        "topics": (
            ["news", "Cooking"],
            "data.attributes.topics[1]: 'Cooking' is not one of the declared options "
            "(Sports, News); use null to unset",
        ),
        "score": (
            True,
            "data.attributes.score: true is not a number (attribute 'score' is declared as number)",
        ),
        "vip": (
            "yes",
            "data.attributes.vip: 'yes' is not true or false (attribute 'vip' is declared as boolean)",
        ),
        "birthday": (
            "2026-02-30",
            "data.attributes.birthday: '2026-02-30' is not a date (YYYY-MM-DD) "
            "(attribute 'birthday' is declared as date)",
        ),
        "seen": (
            "2026-01-01",
            "data.attributes.seen: '2026-01-01' is not an RFC 3339 timestamp with offset "
            "(attribute 'seen' is declared as datetime)",
        ),
        "nick": (5, "data.attributes.nick: 5 is not a string (attribute 'nick' is declared as text)"),
    }
    for name, (value, reason) in cases.items():
        before = dataclasses.replace(s, versions=dict(s.versions), attrs=dict(s.attrs))
        res = apply_event(
            s, ev("attributes_set", {"attributes": {"ok": 1, name: value}}, minute=1), ATTRS, None
        )
        assert res.rejected == reason
        assert s == before and not res.applied
    good = {
        "tier": "PLATINUM",
        "topics": ["NEWS"],
        "score": -1.5,
        "vip": False,
        "birthday": "2000-02-29",
        "seen": "2026-01-01T10:00:00+04:00",
        "nick": "",
        "undeclared": {"anything": "goes"}.get("anything"),
    }
    res = apply_event(s, ev("attributes_set", {"attributes": good}, minute=2), ATTRS, None)
    assert res.rejected is None and s.attrs["tier"] == "PLATINUM"
    assert declared_value_problem("x", None, ATTRS["score"]) is None  # null always unsets
    open_multi = FieldDef("attributes.t", FieldType.MULTI_SELECT)
    assert declared_value_problem("t", ["anything"], open_multi) is None


def test_interactions_only_move_forward() -> None:
    s = run(
        [
            ev("interaction", {"direction": "incoming"}, minute=5, eid="a"),
            ev("interaction", {"direction": "outgoing"}, minute=9, eid="b"),
        ]
    )
    assert (s.last_interaction_at, s.last_incoming_at) == (at(9), at(5))
    res = apply_event(s, ev("interaction", {"direction": "incoming"}, minute=7, eid="c"), ATTRS, None)
    assert (s.last_interaction_at, s.last_incoming_at) == (at(9), at(7)) and res.changed == {
        "last_incoming_at"
    }
    res = apply_event(s, ev("interaction", {"direction": "incoming"}, minute=1, eid="d"), ATTRS, None)
    assert (s.last_interaction_at, s.last_incoming_at) == (at(9), at(7)) and res.changed == {"created_at"}
    assert s.created_at == at(1)


def test_opt_out_flag() -> None:
    s = run([ev("upserted", {})])
    assert s.marketing_opt_out is False
    res = apply_event(s, ev("opt_out_set", {"marketing_opt_out": True}, minute=1), ATTRS, None)
    assert res.optout_changed and res.changed == {"marketing_opt_out"} and s.marketing_opt_out
    res = apply_event(s, ev("opt_out_set", {"marketing_opt_out": True}, minute=2, eid="x"), ATTRS, None)
    assert not res.optout_changed and res.applied


def test_created_at_explicit_wins_else_earliest_event() -> None:
    explicit = ev("upserted", {"created_at": "2020-01-01T00:00:00+02:00"}, minute=5, eid="x")
    later, earlier = (
        ev("tags_added", {"tags": ["a"]}, minute=9, eid="l"),
        ev("upserted", {}, minute=1, eid="f"),
    )
    for order in ([explicit, later, earlier], [earlier, later, explicit], [later, explicit, earlier]):
        s = run(order)
        assert s.created_at == datetime(2019, 12, 31, 22, tzinfo=UTC) and s.created_at.tzinfo is UTC
    assert run([later, earlier]).created_at == at(1)
    cleared = run([explicit, ev("upserted", {"created_at": None}, minute=6, eid="y")])
    assert cleared.created_at is None


def test_delete_leaves_a_tombstone_and_a_newer_event_recreates() -> None:
    s = run(
        [
            ev("upserted", {"name": "A", "phone": "+96891234567"}, minute=1, eid="a"),
            ev("tags_added", {"tags": ["VIP"]}, minute=2, eid="b"),
            ev("opt_out_set", {"marketing_opt_out": True}, minute=2, eid="c"),
            ev("attributes_set", {"attributes": {"tier": "Gold"}}, minute=2, eid="d"),
            ev("interaction", {"direction": "incoming"}, minute=2, eid="e"),
        ]
    )
    res = apply_event(s, ev("deleted", {}, minute=3, eid="del"), ATTRS, None)
    assert res.deleted and not res.created and res.optout_changed and s.deleted and not exists(s)
    assert res.changed == {
        "name",
        "phone",
        "tags",
        "marketing_opt_out",
        "attributes.tier",
        "last_interaction_at",
        "last_incoming_at",
        "created_at",
    }
    empty = CustomerState("ws1", "c1", 3, deleted=True, deleted_us=s.deleted_us, deleted_event_id="del")
    assert s == empty
    for old in (ev("upserted", {"name": "B"}, minute=2.5, eid="z"), ev("deleted", {}, minute=3, eid="del")):
        res = apply_event(s, old, ATTRS, None)
        assert not res.applied and s == empty
    res = apply_event(s, ev("tags_added", {"tags": ["new"]}, minute=4, eid="f"), ATTRS, None)
    assert res.created and not s.deleted and s.tags == {"new"} and s.created_at == at(4) and s.name is None


def test_delete_of_an_unknown_customer_is_remembered() -> None:
    res = apply_event(None, ev("deleted", {}, minute=3), ATTRS, None, partition=1)
    assert res.applied and not res.deleted and not res.created and res.state is not None and res.state.deleted
    res2 = apply_event(res.state, ev("upserted", {"name": "x"}, minute=2, eid="old"), ATTRS, None)
    assert not res2.applied and res.state.name is None


def test_late_delete_keeps_newer_writes() -> None:
    s = run(
        [
            ev("upserted", {"name": "A", "email": "a@x"}, minute=1, eid="a"),
            ev("upserted", {"name": "B"}, minute=5, eid="b"),
        ]
    )
    res = apply_event(s, ev("deleted", {}, minute=3, eid="del"), ATTRS, None)
    assert res.deleted and res.created and exists(s)  # deleted, then re-created by the newer event
    assert (s.name, s.email) == ("B", None)
    assert s.created_at == at(3)  # events on both sides of a late delete: re-created at the delete
    # The same final state (but created_at, see above) as when the delete arrived first.
    s2 = run(
        [
            ev("deleted", {}, minute=3, eid="del"),
            ev("upserted", {"name": "A", "email": "a@x"}, minute=1, eid="a"),
            ev("upserted", {"name": "B"}, minute=5, eid="b"),
        ]
    )
    assert s2.created_at == at(5)
    assert dataclasses.replace(s, created_at=None, first_seen_us=None) == dataclasses.replace(
        s2, created_at=None, first_seen_us=None
    )


def test_a_late_delete_older_than_every_write_is_no_exit() -> None:
    # In event-time order the delete came before everything known of the customer: its memberships
    # must not exit and re-enter, and its state stays as it was.
    s = run([ev("upserted", {"name": "A"}, minute=4, eid="a"), ev("tags_added", {"tags": ["vip"]}, minute=5)])
    before = dataclasses.replace(s, versions=dict(s.versions), tags=set(s.tags))
    res = apply_event(s, ev("deleted", {}, minute=3, eid="del"), ATTRS, None)
    assert res.applied and not res.deleted and not res.created and not res.changed and exists(s)
    assert (s.name, s.tags, s.created_at) == (before.name, before.tags, before.created_at)


def test_empty_upsert_after_a_late_delete_keeps_the_customer() -> None:
    s = run([ev("upserted", {"name": "A"}, minute=1, eid="a"), ev("upserted", {}, minute=5, eid="b")])
    res = apply_event(s, ev("deleted", {}, minute=3, eid="del"), ATTRS, None)
    assert exists(s) and res.created and s.name is None and s.created_at == at(3)


def test_first_seen_after_a_late_delete_is_the_delete_instant() -> None:
    # Documented limit: the earliest event after a late tombstone (b, minute 4) was overwritten
    # by c before the delete arrived, so the customer counts as re-created at the delete (minute 3).
    a = ev("upserted", {"name": "A"}, minute=1, eid="a")
    b = ev("upserted", {"name": "B"}, minute=4, eid="b")
    c = ev("upserted", {"name": "C"}, minute=6, eid="c")
    d = ev("deleted", {}, minute=3, eid="d")
    assert run([d, a, b, c]).created_at == at(4)
    late = run([a, b, c, d])
    assert late.created_at == at(3) and late.name == "C"
    for e in (a, b, c, d):  # a replay moves nothing
        assert not apply_event(late, e, ATTRS, None).applied
    assert late.created_at == at(3)
    # Exact when only newer events were applied before the late delete.
    assert run([b, c, d]).created_at == at(4)


# --- order independence --------------------------------------------------------------------------

KINDS = st.sampled_from(
    ["upserted", "attributes_set", "tags_added", "tags_removed", "opt_out_set", "interaction", "deleted"]
)


@st.composite
def event_sets(draw: st.DrawFn, with_deletes: bool = True) -> list[AnyInputEvent]:
    n = draw(st.integers(1, 12))
    out: list[AnyInputEvent] = []
    for i in range(n):
        kind = draw(KINDS if with_deletes else KINDS.filter(lambda k: k != "deleted"))
        minute = draw(st.integers(0, 6))  # few instants: ties broken by event_id are exercised
        data: dict[str, Any]
        if kind == "upserted":
            keys = draw(
                st.lists(st.sampled_from(["name", "email", "phone", "country", "created_at"]), unique=True)
            )
            data = {
                k: draw(
                    st.sampled_from(
                        [None, f"{k[0]}{i}"]
                        if k != "created_at"
                        else [None, "2025-01-01T00:00:00Z", "2024-06-01T12:00:00+03:00"]
                    )
                )
                for k in keys
            }
            if "country" in data and data["country"] is not None:
                data["country"] = draw(st.sampled_from(["OM", "us"]))
        elif kind == "attributes_set":
            data = {
                "attributes": draw(
                    st.dictionaries(
                        st.sampled_from(["tier", "score", "free"]),
                        st.sampled_from([None, "Gold", "platinum", 3, 4.5]),
                        max_size=3,
                    )
                )
            }
            if isinstance(data["attributes"].get("tier"), int | float):
                data["attributes"]["tier"] = "Gold"
            if isinstance(data["attributes"].get("score"), str):
                data["attributes"]["score"] = 1
        elif kind in ("tags_added", "tags_removed"):
            data = {"tags": draw(st.lists(st.sampled_from(["VIP", "vip", "Lead", "x"]), max_size=3))}
        elif kind == "opt_out_set":
            data = {"marketing_opt_out": draw(st.booleans())}
        elif kind == "interaction":
            data = {"direction": draw(st.sampled_from(["incoming", "outgoing"]))}
        else:
            data = {}
        out.append(ev(kind, data, minute=minute, eid=f"e{i:02d}"))
    dupes = draw(st.lists(st.sampled_from(out), max_size=4))
    return out + dupes


def canonical(s: CustomerState, *, with_first_seen: bool = True) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    d["tags"] = sorted(s.tags)
    if not with_first_seen:
        d.pop("first_seen_us")
        if "f:created_at" not in s.versions:
            d.pop("created_at")
    return d


def apply_all(events: list[AnyInputEvent]) -> CustomerState:
    state: CustomerState | None = None
    for e in events:
        res = apply_event(state, e, {"tier": ATTRS["tier"], "score": ATTRS["score"]}, "OM", partition=0)
        assert res.rejected is None
        state = res.state
    assert state is not None
    return state


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_arrival_order_gives_the_same_state_and_replays_change_nothing(data: st.DataObject) -> None:
    events = data.draw(event_sets())
    shuffled = data.draw(st.permutations(events))
    a, b = apply_all(events), apply_all(shuffled)
    # first_seen_us (and a derived created_at) is the one documented exception with deletes.
    assert canonical(a, with_first_seen=False) == canonical(b, with_first_seen=False)
    assert a.deleted == (not exists(a))
    expected = canonical(b)
    for e in events:  # redelivery of anything already processed, in another order
        res = apply_event(b, e, {}, "OM")
        assert not res.applied and not res.changed
    assert canonical(b) == expected


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_without_deletes_the_order_changes_nothing_at_all(data: st.DataObject) -> None:
    events = data.draw(event_sets(with_deletes=False))
    shuffled = data.draw(st.permutations(events))
    assert canonical(apply_all(events)) == canonical(apply_all(shuffled))

"""Input event parsing (CONTRACT §2, §10) and CloudEvent output rendering (§6)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as V1CloudEvent

from segment_worker.events import (
    EVENT_TYPES,
    CloudEvent,
    CustomerAttributesSet,
    CustomerDeleted,
    CustomerInteraction,
    CustomerOptOutSet,
    CustomerTagsAdded,
    CustomerTagsRemoved,
    CustomerUpserted,
    EventError,
    SegmentDeletedEvent,
    id_ok,
    parse_event,
    render_segment_deleted,
    render_transition,
    segment_deleted_key,
    transition_key,
)
from segment_worker.membership_events import uuid5_url
from segment_worker.state import Transition
from segment_worker.text import id_problem

TYPES = ", ".join(EVENT_TYPES)


def raw(**fields: Any) -> bytes:
    """A valid customer.upserted event with ``fields`` replaced (``...`` removes a field)."""
    base: dict[str, Any] = {
        "event_id": "e-1",
        "type": "customer.upserted",
        "workspace_id": "ws1",
        "customer_id": "c42",
        "occurred_at": "2026-11-22T10:00:00Z",
        "data": {},
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_contract_example_parses() -> None:
    ev = parse_event(
        b'{"event_id": "e-1", "type": "customer.tags_added", "workspace_id": "ws1",'
        b' "customer_id": "c42", "occurred_at": "2026-11-22T10:00:00Z", "data": {"tags": ["VIP"]}}'
    )
    assert isinstance(ev, CustomerTagsAdded)
    assert (ev.event_id, ev.workspace_id, ev.customer_id) == ("e-1", "ws1", "c42")
    assert ev.occurred_at == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert ev.data.tags == ("VIP",)


def test_upserted_normalises_and_remembers_given_keys() -> None:
    ev = parse_event(
        raw(
            occurred_at="2026-11-22T14:00:00.123456+04:00",
            data={
                "phone": "+968 9123 4567",
                "name": None,
                "language": "AR",
                "country": "om",
                "platform": "WhatsApp",
                "created_at": "2025-01-02T03:04:05z",
            },
        )
    )
    assert isinstance(ev, CustomerUpserted)
    d = ev.data
    assert d.given == {"phone", "name", "language", "country", "platform", "created_at"}
    assert (d.phone, d.name, d.language, d.country, d.platform) == (
        "+968 9123 4567",
        None,
        "ar",
        "OM",
        "whatsapp",
    )
    assert d.email is None and "email" not in d.given
    assert d.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert ev.occurred_at == datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    assert ev.occurred_at.utcoffset() == timedelta(hours=4)


def test_country_empty_string_is_null() -> None:
    ev = parse_event(raw(data={"country": " "}))
    assert isinstance(ev, CustomerUpserted)
    assert ev.data.country is None and ev.data.given == {"country"}


def test_every_other_type_parses() -> None:
    attrs = parse_event(
        raw(
            type="customer.attributes_set",
            data={
                "attributes": {
                    "tier": "gold",
                    "score": 7,
                    "ratio": -0.5,
                    "vip": False,
                    "topics": ["A", "b"],
                    "old": None,
                    "big": 2**53,
                }
            },
        )
    )
    assert isinstance(attrs, CustomerAttributesSet)
    assert attrs.data.attributes == {
        "tier": "gold",
        "score": 7,
        "ratio": -0.5,
        "vip": False,
        "topics": ("A", "b"),
        "old": None,
        "big": 2**53,
    }
    assert type(attrs.data.attributes["vip"]) is bool

    removed = parse_event(raw(type="customer.tags_removed", data={"tags": [" lead ", "Lead"]}))
    assert isinstance(removed, CustomerTagsRemoved) and removed.data.tags == ("lead", "Lead")
    opt = parse_event(raw(type="customer.opt_out_set", data={"marketing_opt_out": True}))
    assert isinstance(opt, CustomerOptOutSet) and opt.data.marketing_opt_out is True
    for direction in ("incoming", "outgoing"):
        inter = parse_event(raw(type="customer.interaction", data={"direction": direction}))
        assert isinstance(inter, CustomerInteraction) and inter.data.direction == direction
    assert isinstance(parse_event(raw(type="customer.deleted", data={})), CustomerDeleted)


def test_ids_may_use_any_printable_character() -> None:
    ev = parse_event(raw(event_id="x" * 128, customer_id="+96891234567", workspace_id="ws-ä.1"))
    assert ev.customer_id == "+96891234567" and ev.workspace_id == "ws-ä.1"


BAD: list[tuple[str, bytes, str]] = [
    ("not json", b'{"event_id": ', "not valid JSON: EOF while parsing a value at line 1 column 13"),
    ("not utf-8", b'{"event_id": "\xff"}', "not valid JSON: invalid unicode code point at line 1 column 15"),
    ("array", b"[1, 2]", "not a JSON object (got an array)"),
    ("string", b'"hi"', "not a JSON object (got 'hi')"),
    ("no type", raw(type=...), f"type: is required; expected one of {TYPES}"),
    ("type not str", raw(type=7), f"type: must be a string, not 7; expected one of {TYPES}"),
    ("unknown type", raw(type="customer.foo"), f"unknown event type 'customer.foo'; expected one of {TYPES}"),
    (
        "unknown top key",
        raw(source="crm"),
        "source: unknown field; an event has only "
        "event_id, type, workspace_id, customer_id, occurred_at, data",
    ),
    ("missing data", raw(data=...), "data: is required"),
    ("data not object", raw(data=[]), "data: must be a JSON object, not an array"),
    ("empty event_id", raw(event_id=""), "event_id: must not be empty"),
    ("long event_id", raw(event_id="e" * 129), "event_id: is 129 characters long; at most 128 are allowed"),
    ("space in customer_id", raw(customer_id="c 1"), "customer_id: must not contain whitespace"),
    ("control char", raw(customer_id="c\u00011"), "customer_id: contains a non-printable character (U+0001)"),
    ("NUL in a tag", raw(type="customer.tags_added", data={"tags": ["a", "b\u0000c"]}),
     "data.tags[1]: contains a NUL character (\\u0000), which cannot be stored"),
    ("NUL in an attribute name", raw(type="customer.attributes_set", data={"attributes": {"x\u0000": 1}}),
     "data.attributes.x\u0000: contains a NUL character (\\u0000), which cannot be stored"),
    ("number customer_id", raw(customer_id=42), "customer_id: must be a string, not 42"),
    ("colon workspace", raw(workspace_id="a:b"), "workspace_id: must not contain ':'"),
    ("braces workspace", raw(workspace_id="{a}/"), "workspace_id: must not contain '/' '{' '}'"),
    ("missing workspace", raw(workspace_id=...), "workspace_id: is required"),
    (
        "bad month",
        raw(occurred_at="2026-13-01"),
        "occurred_at: '2026-13-01' is not an RFC 3339 timestamp with offset (e.g. 2026-11-22T10:00:00Z)",
    ),
    (
        "no offset",
        raw(occurred_at="2026-11-22T10:00:00"),
        "occurred_at: '2026-11-22T10:00:00' is not an RFC 3339 timestamp with offset "
        "(e.g. 2026-11-22T10:00:00Z)",
    ),
    (
        "impossible date",
        raw(occurred_at="2026-02-30T10:00:00Z"),
        "occurred_at: '2026-02-30T10:00:00Z' is not a valid RFC 3339 timestamp "
        "(day is out of range for month)",
    ),
    (
        "epoch number",
        raw(occurred_at=1700000000),
        "occurred_at: must be an RFC 3339 timestamp string, not 1700000000",
    ),
    (
        "upsert unknown key",
        raw(data={"nickname": "x"}),
        "data.nickname: unknown field; customer.upserted data takes only "
        "phone, name, email, language, country, "
        "platform, created_at",
    ),
    ("upsert number", raw(data={"name": 5}), "data.name: must be a string or null, not 5"),
    (
        "upsert country",
        raw(data={"country": "UK"}),
        "data.country: 'UK' is not an ISO 3166-1 alpha-2 country code (e.g. 'US', 'OM')",
    ),
    (
        "upsert created_at",
        raw(data={"created_at": "yesterday"}),
        "data.created_at: 'yesterday' is not an RFC 3339 timestamp with offset (e.g. 2026-11-22T10:00:00Z)",
    ),
    (
        "two problems",
        raw(data={"name": 5, "email": 6}),
        "data.name: must be a string or null, not 5 (and 1 more problem)",
    ),
    (
        "tags empty item",
        raw(type="customer.tags_added", data={"tags": ["VIP", ""]}),
        "data.tags[1]: must be a non-empty string",
    ),
    (
        "tags blank item",
        raw(type="customer.tags_removed", data={"tags": ["  "]}),
        "data.tags[0]: must be a non-empty string",
    ),
    (
        "tags number item",
        raw(type="customer.tags_added", data={"tags": ["a", "b", 3]}),
        "data.tags[2]: must be a non-empty string",
    ),
    (
        "tags not array",
        raw(type="customer.tags_added", data={"tags": "VIP"}),
        "data.tags: must be an array, not 'VIP'",
    ),
    ("tags missing", raw(type="customer.tags_added", data={}), "data.tags: is required"),
    (
        "attrs object value",
        raw(type="customer.attributes_set", data={"attributes": {"a": {"b": 1}}}),
        "data.attributes.a: must be a string, a number, true/false, an array of strings or null, "
        "not an object",
    ),
    (
        "attrs mixed array",
        raw(type="customer.attributes_set", data={"attributes": {"a": ["x", 1]}}),
        "data.attributes.a: arrays may hold only strings; item [1] is 1",
    ),
    (
        "attrs too big",
        raw(type="customer.attributes_set", data={"attributes": {"n": -(2**53) - 1}}),
        "data.attributes.n: -9007199254740993 is beyond ±2^53 (integers must be exact as IEEE-754 doubles)",
    ),
    (
        "attrs big float",
        raw(type="customer.attributes_set", data={"attributes": {"n": 1e300}}),
        "data.attributes.n: 1e+300 is beyond ±2^53",
    ),
    (
        "attrs NaN",
        b'{"event_id":"e","type":"customer.attributes_set","workspace_id":"w","customer_id":"c",'
        b'"occurred_at":"2026-11-22T10:00:00Z","data":{"attributes":{"n":NaN}}}',
        "data.attributes.n: NaN and Infinity are not numbers here",
    ),
    (
        "attrs Infinity",
        b'{"event_id":"e","type":"customer.attributes_set","workspace_id":"w","customer_id":"c",'
        b'"occurred_at":"2026-11-22T10:00:00Z","data":{"attributes":{"n":-Infinity}}}',
        "data.attributes.n: NaN and Infinity are not numbers here",
    ),
    (
        "attrs bad name",
        raw(type="customer.attributes_set", data={"attributes": {"my tier": "x"}}),
        "data.attributes: attribute name 'my tier' must not contain whitespace",
    ),
    (
        "attrs not object",
        raw(type="customer.attributes_set", data={"attributes": ["tier"]}),
        "data.attributes: must be a JSON object, not an array",
    ),
    (
        "opt-out string",
        raw(type="customer.opt_out_set", data={"marketing_opt_out": "true"}),
        "data.marketing_opt_out: must be true or false, not 'true'",
    ),
    (
        "opt-out null",
        raw(type="customer.opt_out_set", data={"marketing_opt_out": None}),
        "data.marketing_opt_out: must be true or false, not null",
    ),
    (
        "direction",
        raw(type="customer.interaction", data={"direction": "inbound"}),
        "data.direction: must be 'incoming' or 'outgoing', not 'inbound'",
    ),
    (
        "interaction extra",
        raw(type="customer.interaction", data={"direction": "incoming", "channel": "x"}),
        "data.channel: unknown field; customer.interaction data takes only direction",
    ),
    (
        "deleted with data",
        raw(type="customer.deleted", data={"reason": "gdpr"}),
        "data.reason: unknown field; customer.deleted data must be {}",
    ),
]


@pytest.mark.parametrize(("value", "reason"), [(v, r) for _, v, r in BAD], ids=[n for n, _, _ in BAD])
def test_malformed_event_reason(value: bytes, reason: str) -> None:
    with pytest.raises(EventError) as info:
        parse_event(value)
    assert info.value.reason == reason
    assert info.value.retriable is False


def test_size_limit_is_checked_before_parsing() -> None:
    value = raw()
    exactly = value[:-1] + b" " * (1_048_576 - len(value)) + b"}"
    assert len(exactly) == 1_048_576
    assert parse_event(exactly).event_id == "e-1"
    too_big = b"x" * 2_097_152  # not JSON either: the size is what is reported
    with pytest.raises(EventError) as info:
        parse_event(too_big)
    assert info.value.reason == "value is 2097152 bytes; the limit is 1048576 (1 MB)"
    with pytest.raises(EventError, match=r"value is 1048577 bytes"):
        parse_event(exactly + b" ")


def test_null_record_value() -> None:
    with pytest.raises(EventError) as info:
        parse_event(None)
    assert info.value.reason == "the record has no value (null)"


# --- output ------------------------------------------------------------------------------------

SEG = uuid.UUID("6f1c1c9e-1d7e-4c53-9f55-2d4c8b0a0a11")


def transition(kind: str = "entered", seq: int = 3) -> Transition:
    return Transition(
        workspace_id="ws1",
        segment_id=SEG,
        segment_name="VIP Arabic Speakers",
        customer_id="c42",
        partition=5,
        seq=seq,
        kind=kind,
        cause={"kind": "event", "event_id": "e-1"},
        at=datetime(2026, 11, 22, 14, 0, 0, 120999, tzinfo=timezone(timedelta(hours=4))),
    )


def test_render_transition_is_a_valid_structured_cloudevent() -> None:
    body = render_transition(transition())
    event = JSONFormat().read(None, body)
    assert isinstance(event, V1CloudEvent)
    assert event.get_specversion() == "1.0"
    expected_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"segment-worker:ws1:{SEG}:c42:3"))
    assert event.get_id() == expected_id
    assert event.get_source() == "segment-worker"
    assert event.get_type() == "segment.entered"
    assert event.get_subject() == "c42"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_time() == datetime(2026, 11, 22, 10, 0, 0, 120000, tzinfo=UTC)
    assert event.get_data() == {
        "workspace_id": "ws1",
        "segment_id": str(SEG),
        "segment_name": "VIP Arabic Speakers",
        "customer_id": "c42",
        "cause": {"kind": "event", "event_id": "e-1"},
        "seq": 3,
    }
    assert orjson.loads(body)["time"] == "2026-11-22T10:00:00.120Z"
    assert transition_key(transition()) == b"ws1:c42"
    # Through the Kafka binding too, as a consumer of the topic would read it.
    msg = ce_kafka.KafkaMessage(
        headers={"content-type": b"application/cloudevents+json"}, key=b"ws1:c42", value=body
    )
    assert ce_kafka.from_structured(msg, JSONFormat()).get_id() == expected_id
    # And our own schema model accepts it.
    assert CloudEvent.model_validate_json(body).data.seq == 3


def test_transition_ids_are_deterministic_per_seq() -> None:
    a, b = render_transition(transition(seq=3)), render_transition(transition(seq=3))
    c = render_transition(transition(kind="exited", seq=4))
    assert orjson.loads(a)["id"] == orjson.loads(b)["id"] != orjson.loads(c)["id"]
    assert orjson.loads(c)["type"] == "segment.exited"


def test_render_segment_deleted() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 6789, tzinfo=UTC)
    body = render_segment_deleted("ws1", SEG, "Old", at)
    event = JSONFormat().read(None, body)
    assert event.get_type() == "segment.deleted"
    assert event.get_id() == str(uuid.uuid5(uuid.NAMESPACE_URL, f"segment-worker:ws1:{SEG}:deleted"))
    assert event.get_subject() == str(SEG)
    assert event.get_data() == {
        "workspace_id": "ws1",
        "segment_id": str(SEG),
        "segment_name": "Old",
        "cause": {"kind": "manual"},
    }
    assert orjson.loads(body)["time"] == "2026-01-02T03:04:05.006Z"
    assert segment_deleted_key("ws1", SEG) == f"ws1:{SEG}".encode()
    assert SegmentDeletedEvent.model_validate_json(body).data.segment_name == "Old"


def test_cloudevents_library_would_reject_a_broken_event() -> None:
    # Guards the validity tests above: the library does validate what it reads.
    broken = orjson.loads(render_transition(transition()))
    del broken["source"]
    with pytest.raises(CloudEventValidationError):
        JSONFormat().read(None, orjson.dumps(broken))


def test_fast_uuid5_matches_the_standard_library() -> None:
    for name in ("", "segment-worker:ws1:x:c42:1", "ü" * 300, "segment-worker:w:s:c:deleted"):
        assert uuid5_url(name) == str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def test_fast_id_check_agrees_with_id_problem_on_every_code_point() -> None:
    disagree = [c for c in map(chr, range(0x110000)) if id_ok(c) != (id_problem(c) is None)]
    assert disagree == []
    for value in ("", "a" * 128, "a" * 129, "a b", "a\tb", "a\u00a0b", "ok-Ü"):
        assert id_ok(value) == (id_problem(value) is None), value

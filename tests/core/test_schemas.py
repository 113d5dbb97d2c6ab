"""``schemas/`` is generated from the pydantic models and must be current; the schemas agree
with the parser on valid and invalid events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from test_events import BAD, raw, transition

from segment_worker.events import EventError, parse_event, render_segment_deleted, render_transition
from segment_worker.schemas_gen import main, render_schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_schemas_directory_is_current() -> None:
    expected = render_schemas()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMAS.glob("*.json")}
    stale = sorted(n for n in expected.keys() | on_disk.keys() if expected.get(n) != on_disk.get(n))
    assert not stale, f"stale schemas {stale}: run `python -m segment_worker.schemas_gen`"


def test_check_mode_names_stale_missing_and_unexpected_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    first = tmp_path / "customer.upserted.json"
    assert first.read_text(encoding="utf-8").endswith("}\n")
    first.write_text("{}\n", encoding="utf-8")
    (tmp_path / "customer.deleted.json").unlink()
    (tmp_path / "old.json").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["--out", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "customer.upserted.json (stale)" in err
    assert "customer.deleted.json (missing)" in err
    assert "old.json (unexpected)" in err
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    assert not (tmp_path / "old.json").exists()


def validator(name: str) -> Any:
    return jsonschema_rs.validator_for(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))


VALID = [
    raw(
        data={
            "phone": "+96891234567",
            "name": None,
            "country": "om",
            "created_at": "2025-01-01T00:00:00+04:00",
        }
    ),
    raw(
        type="customer.attributes_set", data={"attributes": {"tier": "gold", "n": 1.5, "b": True, "l": ["a"]}}
    ),
    raw(type="customer.tags_added", data={"tags": ["VIP"]}),
    raw(type="customer.tags_removed", data={"tags": ["VIP"]}),
    raw(type="customer.opt_out_set", data={"marketing_opt_out": False}),
    raw(type="customer.interaction", data={"direction": "incoming"}),
    raw(type="customer.deleted", data={}),
]


@pytest.mark.parametrize("value", VALID)
def test_valid_events_match_their_schemas(value: bytes) -> None:
    event = parse_event(value)
    doc = orjson.loads(value)
    assert validator("customer-events.json").is_valid(doc)
    assert validator(f"{event.type}.json").is_valid(doc)


# Problems a JSON Schema can express (the rest — calendar validity, ISO country list, 2^53 as an
# integer bound — only the parser knows).
SCHEMA_DETECTS = {
    "array",
    "string",
    "no type",
    "type not str",
    "unknown type",
    "unknown top key",
    "missing data",
    "data not object",
    "empty event_id",
    "long event_id",
    "space in customer_id",
    "number customer_id",
    "colon workspace",
    "braces workspace",
    "missing workspace",
    "no offset",
    "epoch number",
    "upsert unknown key",
    "upsert number",
    "two problems",
    "tags empty item",
    "tags number item",
    "tags not array",
    "tags missing",
    "attrs object value",
    "attrs mixed array",
    "attrs big float",
    "attrs bad name",
    "attrs not object",
    "opt-out string",
    "opt-out null",
    "direction",
    "interaction extra",
    "deleted with data",
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, v, _ in BAD if n in SCHEMA_DETECTS])
def test_schema_rejects_what_the_parser_rejects(name: str, value: bytes) -> None:
    with pytest.raises(EventError):
        parse_event(value)
    assert not validator("customer-events.json").is_valid(orjson.loads(value)), name


def test_output_events_match_their_schemas() -> None:
    entered = orjson.loads(render_transition(transition("entered", 1)))
    exited = orjson.loads(render_transition(transition("exited", 2)))
    deleted = orjson.loads(render_segment_deleted("ws1", transition().segment_id, "x", transition().at))
    assert validator("segment.entered.json").is_valid(entered)
    assert not validator("segment.entered.json").is_valid(exited)
    assert validator("segment.exited.json").is_valid(exited)
    assert validator("segment.deleted.json").is_valid(deleted)
    union = validator("segment-membership-events.json")
    assert union.is_valid(entered) and union.is_valid(exited) and union.is_valid(deleted)
    assert not union.is_valid({**entered, "time": "2026-11-22T10:00:00Z"})  # ms precision, Z

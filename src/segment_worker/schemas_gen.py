"""Write the JSON Schemas of the Kafka contract into ``schemas/`` from the pydantic models, and
the schema of a rule (``rule.json``, ``rules.schema``).

``python -m segment_worker.schemas_gen [--out DIR]`` (re)writes them; ``--check`` writes nothing
and exits 1 naming every stale, missing or unexpected file. Output is stable: sorted keys,
2-space indent, UTF-8, newline at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .events import EVENT_TYPES, INPUT_ADAPTER, INPUT_MODELS
from .membership_events import CloudEvent, SegmentDeletedEvent
from .rules.schema import rule_json_schema

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _document(schema: dict[str, Any], title: str, description: str) -> str:
    doc = {"$schema": DRAFT, **schema, "title": title, "description": description}
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_schemas() -> dict[str, str]:
    """File name → content of every schema file, as ``main`` writes them."""
    files: dict[str, str] = {}
    for event_type, model in zip(EVENT_TYPES, INPUT_MODELS, strict=True):
        files[f"{event_type}.json"] = _document(
            model.model_json_schema(),
            event_type,
            f'Input event {event_type} (topic customer-events, key "<workspace_id>:<customer_id>").',
        )
    files["customer-events.json"] = _document(
        INPUT_ADAPTER.json_schema(),
        "customer-events",
        "Any input event of topic customer-events, discriminated by `type`.",
    )
    membership = CloudEvent.model_json_schema()
    for kind in ("entered", "exited"):
        schema = json.loads(json.dumps(membership))
        schema["properties"]["type"] = {"const": f"segment.{kind}", "type": "string"}
        files[f"segment.{kind}.json"] = _document(
            schema,
            f"segment.{kind}",
            f"CloudEvents 1.0 structured JSON, topic segment-membership-events, key "
            f'"<ws>:<customer_id>": a customer {kind} a segment.',
        )
    files["segment.deleted.json"] = _document(
        SegmentDeletedEvent.model_json_schema(),
        "segment.deleted",
        'CloudEvents 1.0 structured JSON, topic segment-membership-events, key "<ws>:<segment_id>": '
        "a segment was deleted.",
    )
    files["segment-membership-events.json"] = _document(
        TypeAdapter(CloudEvent | SegmentDeletedEvent).json_schema(),
        "segment-membership-events",
        "Any output event of topic segment-membership-events.",
    )
    files["rule.json"] = _document(
        rule_json_schema(),
        "rule",
        "A dynamic segment's rule (CONTRACT §4), as the HTTP API takes it: the shape; fields, types, "
        "operands and limits are checked per workspace.",
    )
    return files


def stale_files(out: Path) -> list[str]:
    """Names of files in ``out`` that differ from, are missing from, or are not in ``render_schemas``."""
    expected = render_schemas()
    problems = []
    for name, text in sorted(expected.items()):
        path = out / name
        if not path.is_file():
            problems.append(f"{name} (missing)")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name} (stale)")
    if out.is_dir():
        for path in sorted(out.glob("*.json")):
            if path.name not in expected:
                problems.append(f"{path.name} (unexpected)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the schema files; answer the exit code."""
    parser = argparse.ArgumentParser(prog="python -m segment_worker.schemas_gen", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("schemas"), help="directory (default: schemas)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when files are stale")
    args = parser.parse_args(argv)
    out: Path = args.out
    if args.check:
        problems = stale_files(out)
        for problem in problems:
            print(f"schemas: {out / problem}", file=sys.stderr)
        if problems:
            print("run: python -m segment_worker.schemas_gen", file=sys.stderr)
        return 1 if problems else 0
    out.mkdir(parents=True, exist_ok=True)
    expected = render_schemas()
    for name, text in expected.items():
        path = out / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    for path in sorted(out.glob("*.json")):
        if path.name not in expected:
            path.unlink()
            print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

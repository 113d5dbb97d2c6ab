"""The framework baseline's per-event work, pure: parse each event, apply it to an in-memory
customer state, evaluate *every* compiled rule of the workspace (no dependency index), count the
membership flips. What a straightforward stream-processing agent would do — with no durable
state, no Redis and no output, so it is a generous baseline."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ..apply import apply_event
from ..events import EventError, parse_event
from ..rules.compiled import CompiledRule
from ..rules.model import Catalog, FieldDef
from ..rules.timectx import TimeContext
from ..service.ruleset import compile_json
from ..service.workspaces import field_def
from ..state import CustomerState


class RuleEvaluator:
    """Holds the states and memberships a naive agent would keep in memory."""

    def __init__(self, document: dict[str, Any]) -> None:
        attrs: dict[str, FieldDef] = {
            a["name"]: field_def(a["name"], a["type"], a.get("options")) for a in document["attributes"]
        }
        self.catalog = Catalog.for_workspace(attrs, timezone=document["timezone"])
        self.attrs = attrs
        self.region: str | None = document.get("region")
        self.rules: list[CompiledRule] = [
            compile_json(s["rules"], self.catalog) for s in document["segments"]
        ]
        self.states: dict[tuple[str, str], CustomerState] = {}
        self.members: dict[tuple[str, str], int] = {}  # bit i = member of segment i
        self.events = 0
        self.rejected = 0
        self.transitions = 0

    def run(self, values: Iterable[bytes], now: datetime | None = None) -> None:
        """Process a batch of raw input records (time-derived rule values bound once per batch)."""
        ctx = TimeContext.at(now or datetime.now(UTC), self.catalog.timezone)
        bound = [(r.matches, r.bind(ctx)) for r in self.rules]
        for raw in values:
            self.events += 1
            try:
                ev = parse_event(raw)
            except EventError:
                self.rejected += 1
                continue
            key = (ev.workspace_id, ev.customer_id)
            res = apply_event(self.states.get(key), ev, self.attrs, self.region, 0)
            if res.rejected is not None or res.state is None:
                self.rejected += 1
                continue
            state = self.states[key] = res.state
            bits = 0
            for i, (matches, b) in enumerate(bound):
                if matches(state, b):
                    bits |= 1 << i
            old = self.members.get(key, 0)
            if bits != old:
                self.transitions += (bits ^ old).bit_count()
                self.members[key] = bits

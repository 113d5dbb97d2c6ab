"""The bench's two event mixes, measured through the real engine without servers."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from segment_worker.bench import cpu
from segment_worker.bench.workload import WorkloadSpec, stream_events


def _transitions_per_event(mix: str) -> float:
    fx = cpu.build(2000, 3000, mix=mix)
    records = cpu.load(fx, cpu.state_rows(fx), cpu.membership_rows(fx))
    return cpu.run_once(fx, 1000, records)["transitions"] / len(fx.raw)


def test_the_typical_mix_moves_far_fewer_memberships_than_the_churn_mix() -> None:
    churn, typical = _transitions_per_event("churn"), _transitions_per_event("typical")
    assert churn > 1.2, churn
    assert typical < 0.4, typical
    assert typical < churn / 4


def test_the_typical_mix_is_mostly_interactions_and_attribute_updates() -> None:
    spec = WorkloadSpec(customers=1000, events=10_000, mix="typical")
    events = list(stream_events(spec, "ws", tag="t", start=datetime(2026, 1, 1, tzinfo=UTC)))
    kinds = Counter(e["type"] for e in events)
    assert kinds["customer.interaction"] / len(events) > 0.6
    assert (kinds["customer.interaction"] + kinds["customer.attributes_set"]) / len(events) > 0.9
    touched = {a for e in events if e["type"] == "customer.attributes_set" for a in e["data"]["attributes"]}
    assert touched <= {"company", "last_order"}

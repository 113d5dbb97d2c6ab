"""The customers the browser tests create, and what the tests expect of them — computed here
from these inputs, never read back from the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FIRST = ["Aisha", "Omar", "Fatima", "Said", "Layla", "Yusuf", "Maryam", "Khalid", "Noor", "Hassan", "Sara",
         "Ali"]
TIERS = ["bronze", "silver", "gold", "platinum"]
ATTRIBUTES: list[dict[str, Any]] = [
    {"name": "tier", "type": "select", "options": TIERS},
    {"name": "score", "type": "number"},
    {"name": "birthdate", "type": "date"},
]
COUNT = 24


@dataclass
class Customer:
    """One test customer as the tests believe it to be (updated when a test changes it)."""

    id: str
    name: str
    phone: str
    language: str
    tier: str
    score: int
    tags: set[str] = field(default_factory=set)
    opted_out: bool = False


def customers() -> dict[str, Customer]:
    """24 customers: every second speaks Arabic, every third is VIP, every fifth opted out."""
    out: dict[str, Customer] = {}
    for i in range(1, COUNT + 1):
        tags = {t for t, every in (("VIP", 3), ("lead", 4)) if i % every == 0}
        out[f"c{i:02d}"] = Customer(
            id=f"c{i:02d}",
            name=f"{FIRST[i % len(FIRST)]} Test{i:02d}",
            phone=f"+9689{i:07d}",
            language="ar" if i % 2 == 0 else "en",
            tier=TIERS[i % 4],
            score=i,
            tags=tags,
            opted_out=i % 5 == 0,
        )
    return out


def events(ws: str, c: Customer) -> list[dict[str, Any]]:
    """The input events (CONTRACT §2) that create ``c``."""
    base = {"workspace_id": ws, "customer_id": c.id, "occurred_at": "2026-11-20T10:00:00Z"}
    out = [
        {**base, "event_id": f"{c.id}-u", "type": "customer.upserted",
         "data": {"name": c.name, "phone": c.phone, "language": c.language}},
        {**base, "event_id": f"{c.id}-a", "type": "customer.attributes_set",
         "data": {"attributes": {"tier": c.tier, "score": c.score}}},
    ]
    if c.tags:
        out.append({**base, "event_id": f"{c.id}-t", "type": "customer.tags_added",
                    "data": {"tags": sorted(c.tags)}})
    if c.opted_out:
        out.append({**base, "event_id": f"{c.id}-o", "type": "customer.opt_out_set",
                    "data": {"marketing_opt_out": True}})
    return out


def arabic_vip_or_gold(c: Customer) -> bool:
    """The nested rule the tests build: Arabic AND (VIP OR gold)."""
    return c.language == "ar" and ("VIP" in c.tags or c.tier == "gold")


def english_vip_or_gold(c: Customer) -> bool:
    """The same rule after the edit test switches the language to English."""
    return c.language == "en" and ("VIP" in c.tags or c.tier == "gold")

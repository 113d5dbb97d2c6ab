"""Demo workspace for ``segment-worker dev``: attributes, the seeds' example segments, customers.

Pure and seeded: the same seed gives the same customers and events, so a demo (and its tests)
are reproducible. Customers arrive as ordinary input events through Kafka, like production data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

DEMO_WORKSPACE = "demo"
DEMO_TIMEZONE = "Asia/Muscat"
DEMO_REGION = "OM"

ATTRIBUTES: list[dict[str, Any]] = [
    {"name": "tier", "type": "select", "options": ["bronze", "silver", "gold", "platinum"]},
    {"name": "interest", "type": "select", "options": ["Enterprise", "SMB", "Personal"]},
    {"name": "premium", "type": "boolean"},
    {"name": "birthdate", "type": "date"},
    {"name": "score", "type": "number"},
    {"name": "channels", "type": "multi_select", "options": ["sms", "email", "push", "whatsapp"]},
    {"name": "company", "type": "text"},
]

SEGMENTS: list[dict[str, Any]] = [
    {
        "name": "VIP Arabic Speakers",
        "description": "Tagged VIP and speaking Arabic",
        "rules": {"all": [{"field": "tags", "op": "has", "value": "VIP"},
                          {"field": "language", "op": "eq", "value": "ar"}]},
    },
    {
        "name": "Inactive 30+ Days",
        "description": "No interaction for more than 30 days",
        "rules": {"field": "last_interaction_at", "op": "older_than_days", "value": 30},
    },
    {
        "name": "Gold Tier in Oman",
        "rules": {"all": [{"field": "attributes.tier", "op": "eq", "value": "gold"},
                          {"field": "country", "op": "eq", "value": "OM"}]},
    },
    {
        "name": "WhatsApp Opted-In",
        "rules": {"all": [{"field": "platform", "op": "eq", "value": "whatsapp"},
                          {"field": "marketing_opt_out", "op": "is_false"}]},
    },
    {
        "name": "New This Week",
        "rules": {"field": "created_at", "op": "in_last_days", "value": 7},
    },
    {
        "name": "Enterprise Leads",
        "rules": {"all": [{"field": "attributes.interest", "op": "eq", "value": "Enterprise"},
                          {"field": "tags", "op": "has", "value": "lead"}]},
    },
    {
        "name": "Premium customers",
        "rules": {"field": "attributes.premium", "op": "is_true"},
    },
    {
        "name": "Born this month",
        "rules": {"field": "attributes.birthdate", "op": "anniversary_this_month"},
    },
]
STATIC_SEGMENT = {"name": "Newsletter Subscribers", "description": "Imported from the newsletter CSV"}

_LANGUAGES = ["ar", "ar", "ar", "en", "en", "fr", "hi", "ur", "es"]
_COUNTRIES = ["OM", "OM", "AE", "SA", "QA", "KW", "BH", "IN", "GB", "US"]
_PLATFORMS = ["whatsapp", "whatsapp", "whatsapp", "instagram", "webchat"]
_TAGS = ["VIP", "lead", "newsletter", "churn-risk", "returning", "wholesale"]
_FIRST = ["Aisha", "Omar", "Fatima", "Said", "Layla", "Yusuf", "Maryam", "Khalid", "Noor", "Hassan",
          "Sara", "Ali", "Emma", "Liam", "Priya", "Ravi", "Sofia", "Mateo", "Amira", "Zaid"]
_LAST = ["Al Busaidi", "Al Harthy", "Khan", "Smith", "Garcia", "Nair", "Haddad", "Rahman", "Silva"]
_COMPANIES = ["Acme LLC", "Muscat Trading", "Gulf Foods", "Desert Tech", "Blue Wave"]


def customer_id(i: int) -> str:
    """The demo customer id of index ``i``."""
    return f"cust-{i:06d}"


def phone(i: int) -> str:
    """An Omani mobile number (E.164) unique to index ``i``."""
    return f"+9689{i:07d}"


def _event(eid: str, etype: str, cid: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": eid, "type": etype, "workspace_id": DEMO_WORKSPACE, "customer_id": cid,
            "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "data": data}


def customer_events(count: int, *, now: datetime, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Events that create ``count`` varied customers, spread over the last ~400 days."""
    rnd = random.Random(seed)
    for i in range(count):
        cid = customer_id(i)
        # A tenth of the customers are new this week, so "New This Week" has members.
        age_days = rnd.uniform(0, 6.5) if rnd.random() < 0.1 else rnd.uniform(7, 400)
        created = now - timedelta(days=age_days)
        name = f"{rnd.choice(_FIRST)} {rnd.choice(_LAST)}"
        yield _event(f"demo-{i}-1", "customer.upserted", cid, created, {
            "phone": phone(i), "name": name,
            "email": f"{name.split()[0].lower()}.{i}@example.com",
            "language": rnd.choice(_LANGUAGES), "country": rnd.choice(_COUNTRIES),
            "platform": rnd.choice(_PLATFORMS),
        })
        birth = date(rnd.randint(1960, 2005), rnd.randint(1, 12), rnd.randint(1, 28))
        yield _event(f"demo-{i}-2", "customer.attributes_set", cid, created + timedelta(seconds=1), {
            "attributes": {
                "tier": rnd.choice(["bronze", "bronze", "silver", "gold", "platinum"]),
                "interest": rnd.choice(["Enterprise", "SMB", "Personal"]),
                "premium": rnd.random() < 0.2,
                "birthdate": birth.isoformat(),
                "score": round(rnd.uniform(0, 100), 1),
                "channels": rnd.sample(["sms", "email", "push", "whatsapp"], rnd.randint(0, 3)),
                "company": rnd.choice(_COMPANIES),
            }})
        tags = rnd.sample(_TAGS, rnd.choice([0, 1, 1, 2, 3]))
        if tags:
            yield _event(f"demo-{i}-3", "customer.tags_added", cid, created + timedelta(seconds=2),
                         {"tags": tags})
        if rnd.random() < 0.08:
            yield _event(f"demo-{i}-4", "customer.opt_out_set", cid, created + timedelta(seconds=3),
                         {"marketing_opt_out": True})
        last = created + timedelta(days=rnd.uniform(0, max(age_days - 0.01, 0.0)))
        yield _event(f"demo-{i}-5", "customer.interaction", cid, min(last, now),
                     {"direction": rnd.choice(["incoming", "incoming", "outgoing"])})


def trickle_events(
    *, seed: int, customers: int, clock: Callable[[], datetime] | None = None
) -> Iterator[dict[str, Any]]:
    """An endless stream of live-looking changes: interactions, tags, tiers, opt-outs of existing
    customers, and now and then a brand-new customer (so "New This Week" moves too).

    ``seed`` also names the event ids, so two runs with different seeds never collide (a repeated
    event id with the same version would be ignored as a duplicate). ``clock`` stamps each event
    as it is drawn (default: the wall clock)."""
    now_of = clock or default_now
    rnd = random.Random(seed)
    n = 0
    while True:
        now = now_of()
        eid = f"trickle-{seed}-{n}"
        roll = rnd.random()
        if roll < 0.05:
            # Only the input topic names it: no phone, so it can never clash with a CSV import.
            name = f"{rnd.choice(_FIRST)} {rnd.choice(_LAST)}"
            yield _event(eid, "customer.upserted", f"live-{seed}-{n}", now, {
                "name": name, "language": rnd.choice(_LANGUAGES), "country": rnd.choice(_COUNTRIES),
                "platform": rnd.choice(_PLATFORMS),
            })
        else:
            cid = customer_id(rnd.randrange(customers))
            if roll < 0.40:
                yield _event(eid, "customer.interaction", cid, now,
                             {"direction": rnd.choice(["incoming", "outgoing"])})
            elif roll < 0.60:
                kind = "customer.tags_added" if rnd.random() < 0.6 else "customer.tags_removed"
                yield _event(eid, kind, cid, now, {"tags": [rnd.choice(_TAGS)]})
            elif roll < 0.88:
                yield _event(eid, "customer.attributes_set", cid, now, {"attributes": {
                    "tier": rnd.choice(["bronze", "silver", "gold", "platinum"]),
                    "premium": rnd.random() < 0.25}})
            else:
                yield _event(eid, "customer.opt_out_set", cid, now, {"marketing_opt_out": rnd.random() < 0.3})
        n += 1


def newsletter_csv(count: int, *, seed: int = 11, customers: int = 1000) -> str:
    """A CSV for the static segment: known customers' phones in national format, a few new ones."""
    rnd = random.Random(seed)
    lines = ["phone,name"]
    for i in rnd.sample(range(customers), min(count, customers)):
        national = phone(i).removeprefix("+968")
        lines.append(f"{national[:4]} {national[4:]},")
    for j in range(max(1, count // 20)):
        lines.append(f"+96871{j:06d},\"Subscriber {j}, new\"")
    return "\n".join(lines) + "\n"


def default_now() -> datetime:
    """Wall clock in UTC (a separate function so callers can pass a fixed one in tests)."""
    return datetime.now(UTC)


# The "create a segment" example `segment-worker dev` prints (a curl body; valid in the demo workspace).
EXAMPLE_SEGMENT: dict[str, Any] = {
    "name": "Arabic speakers in Oman",
    "type": "dynamic",
    "rules": {"all": [{"field": "language", "op": "eq", "value": "ar"},
                      {"field": "country", "op": "eq", "value": "OM"}]},
}

"""The benchmark workload: seeded, reproducible, pure (no I/O).

One workspace of ``customers`` customers with the attributes below, ``segments`` dynamic segments
(a few broad, many narrow, nested any/all/not, every field type, ``time_relative`` of them
time-relative, one "swap window" the rule-change phase edits) and a stream of change events in one
of two mixes (``MIXES``): ``churn`` (the default, churn-heavy: ~50% attribute sets, 20% tag
adds/removes, 20% interactions, 5% opt-out changes, 5% upserts, a tenth of them brand-new
customers; ~2 transitions per event) and ``typical`` (what most CRM streams look like: mostly
interactions of customers already active and updates of attributes few segments read; ~0.2
transitions per event). Keys are skewed: ``hot_share`` of the events hit the hottest
``hot_fraction`` of the customers.

The same spec and seed give the same customers, segments and events, byte for byte, whatever the
order in which they are asked for (every customer and every stream has its own random generator).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

ATTRIBUTES: tuple[dict[str, Any], ...] = (
    {"name": "tier", "type": "select", "options": ["bronze", "silver", "gold", "platinum"]},
    {"name": "plan", "type": "select", "options": ["free", "starter", "pro", "enterprise"]},
    {"name": "signup", "type": "select", "options": ["organic", "ads", "referral", "partner", "import"]},
    {"name": "score", "type": "number"},
    {"name": "bucket", "type": "number"},  # uniform [0, 100): the rule-change phase's lever
    {"name": "ltv", "type": "number"},
    {"name": "interests", "type": "multi_select",
     "options": ["sports", "music", "travel", "food", "tech", "fashion", "finance", "gaming"]},
    {"name": "channels", "type": "multi_select", "options": ["sms", "email", "push", "whatsapp"]},
    {"name": "vip", "type": "boolean"},
    {"name": "city", "type": "text"},
    {"name": "company", "type": "text"},
    {"name": "birthdate", "type": "date"},
    {"name": "renewal_at", "type": "datetime"},
)

TIERS = (("bronze", 50), ("silver", 25), ("gold", 17), ("platinum", 8))
PLANS = (("free", 50), ("starter", 25), ("pro", 17), ("enterprise", 8))
SIGNUPS = ("organic", "ads", "referral", "partner", "import")
INTERESTS = ("sports", "music", "travel", "food", "tech", "fashion", "finance", "gaming")
CHANNELS = ("sms", "email", "push", "whatsapp")
LANGUAGES = (("ar", 35), ("en", 30), ("fr", 8), ("hi", 7), ("ur", 5), ("es", 5), ("de", 3), ("tr", 3),
             ("fa", 2), ("ru", 1), ("zh", 1))
COUNTRIES = (("OM", 30), ("AE", 18), ("SA", 15), ("QA", 6), ("KW", 6), ("BH", 4), ("IN", 8), ("GB", 4),
             ("US", 4), ("EG", 3), ("JO", 2))
PLATFORMS = (("whatsapp", 45), ("instagram", 25), ("webchat", 20), ("messenger", 10))
# Zipf-like popularity: tag k has weight 1/(k+1).
TAGS = tuple(
    ["vip", "lead", "newsletter", "churn-risk", "returning", "wholesale", "beta", "partner", "student",
     "event-2026", "webinar", "trial", "upsell", "support-open", "promo", "loyalty", "referrer", "b2b",
     "b2c", "early-adopter", "inactive", "high-value", "low-value", "survey", "complaint", "review",
     "abandoned-cart", "repeat", "gift", "seasonal", "press", "investor", "vendor", "staff", "test",
     "ramadan", "summer", "winter", "black-friday", "anniversary"]
)
_TAG_WEIGHTS = tuple(1.0 / (k + 1) for k in range(len(TAGS)))
CITIES = ("Muscat", "Salalah", "Sohar", "Nizwa", "Sur", "Dubai", "Abu Dhabi", "Sharjah", "Riyadh", "Jeddah",
          "Dammam", "Doha", "Kuwait City", "Manama", "Mumbai", "Delhi", "London", "Manchester", "New York",
          "Cairo", "Amman", "Madrid", "Berlin", "Istanbul", "Tehran", "Moscow", "Shanghai", "Karachi",
          "Lahore", "Paris")
_FIRST = ("Aisha", "Omar", "Fatima", "Said", "Layla", "Yusuf", "Maryam", "Khalid", "Noor", "Hassan", "Sara",
          "Ali", "Emma", "Liam", "Priya", "Ravi", "Sofia", "Mateo", "Amira", "Zaid", "Hana", "Tariq")
_LAST = ("Al Busaidi", "Al Harthy", "Khan", "Smith", "Garcia", "Nair", "Haddad", "Rahman", "Silva", "Ito",
         "Müller", "Dubois")
_COMPANY_WORDS = ("Acme", "Gulf", "Desert", "Blue Wave", "Falcon", "Oasis", "Pearl", "Summit", "Atlas",
                  "Crescent", "Harbor", "Nomad")
_COMPANY_KINDS = ("LLC", "Trading", "Foods", "Tech", "Logistics", "Holdings", "Studio", "Labs")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """Sizes and shape of one benchmark workload."""

    customers: int = 100_000
    segments: int = 200
    events: int = 1_000_000
    seed: int = 42
    hot_fraction: float = 0.01
    hot_share: float = 0.30
    mix: str = "churn"  # a key of MIXES

    def __post_init__(self) -> None:
        if self.customers < 10:
            raise ValueError("the workload needs at least 10 customers")
        if self.segments < 5:
            raise ValueError("the workload needs at least 5 segments (one of each kind)")
        if self.events < 1:
            raise ValueError("the workload needs at least one event")
        if self.mix not in MIXES:
            raise ValueError(f"unknown workload mix {self.mix!r} (one of {', '.join(MIXES)})")

    @property
    def hot_customers(self) -> int:
        """How many customers are hot (at least one)."""
        return max(1, int(self.customers * self.hot_fraction))


def customer_id(i: int) -> str:
    """The id of seeded customer ``i``."""
    return f"c{i:07d}"


def _weighted(rnd: random.Random, pairs: tuple[tuple[str, int], ...]) -> str:
    return rnd.choices([p[0] for p in pairs], [p[1] for p in pairs])[0]


def _tags(rnd: random.Random, k: int) -> list[str]:
    chosen: dict[str, None] = {}
    while len(chosen) < k:
        chosen[rnd.choices(TAGS, _TAG_WEIGHTS)[0]] = None
    return list(chosen)


def stamp(at: datetime) -> str:
    """RFC 3339, UTC, microseconds (the resolution of event versions)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(eid: str, etype: str, ws: str, cid: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """An input event (CONTRACT §2) as a JSON-ready dict."""
    return {"event_id": eid, "type": etype, "workspace_id": ws, "customer_id": cid,
            "occurred_at": stamp(at), "data": data}


def _attributes(
    rnd: random.Random, now: datetime, full: bool, names: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Attribute values; ``full`` gives every attribute (a new customer), else one to three (of
    ``names`` when given)."""
    makers: dict[str, Any] = {
        "tier": lambda: _weighted(rnd, TIERS),
        "plan": lambda: _weighted(rnd, PLANS),
        "signup": lambda: rnd.choice(SIGNUPS),
        "score": lambda: round(rnd.uniform(0, 1000), 1),
        "ltv": lambda: round(rnd.lognormvariate(5, 1.2), 2),
        "interests": lambda: rnd.sample(INTERESTS, rnd.choice((0, 1, 1, 2, 2, 3, 4))),
        "channels": lambda: rnd.sample(CHANNELS, rnd.choice((0, 1, 1, 2, 3))),
        "vip": lambda: rnd.random() < 0.15,
        "city": lambda: rnd.choice(CITIES),
        "company": lambda: f"{rnd.choice(_COMPANY_WORDS)} {rnd.choice(_COMPANY_KINDS)} {rnd.randrange(300)}",
        **({"last_order": lambda: f"o-{rnd.randrange(10**9):09d}"} if names else {}),
        "renewal_at": lambda: (stamp(now + timedelta(days=rnd.uniform(-60, 120)))
                               if rnd.random() < 0.7 else None),
    }
    if full:
        out = {name: make() for name, make in makers.items()}
        out["bucket"] = round(rnd.uniform(0, 100), 3)
        out["birthdate"] = date(rnd.randint(1950, 2006), rnd.randint(1, 12), rnd.randint(1, 28)).isoformat()
        return out
    # The stream leaves ``bucket`` alone, so the rule-change phase moves a predictable share.
    pool = sorted(names) if names is not None else sorted(makers)
    chosen = rnd.sample(pool, min(len(pool), rnd.choice((1, 1, 2, 3))))
    return {name: makers[name]() for name in chosen}


def _profile(rnd: random.Random, i: int) -> dict[str, Any]:
    name = f"{rnd.choice(_FIRST)} {rnd.choice(_LAST)}"
    return {
        "phone": f"+9689{i % 10_000_000:07d}",
        "name": name,
        "email": f"{name.split()[0].lower()}.{i}@{rnd.choice(('example.com', 'example.org', 'mail.test'))}",
        "language": _weighted(rnd, LANGUAGES),
        "country": _weighted(rnd, COUNTRIES),
        "platform": _weighted(rnd, PLATFORMS),
    }


def customer_events(spec: WorkloadSpec, workspace_id: str, i: int, now: datetime) -> list[dict[str, Any]]:
    """The events that create seeded customer ``i`` as of ``now`` (created up to ~400 days ago)."""
    rnd = random.Random(spec.seed * 1_000_003 + i)
    cid = customer_id(i)
    age = rnd.uniform(0, 7) if rnd.random() < 0.05 else rnd.uniform(7, 400)
    created = now - timedelta(days=age)
    out = [
        event(f"seed-{i}-1", "customer.upserted", workspace_id, cid, created, _profile(rnd, i)),
        event(f"seed-{i}-2", "customer.attributes_set", workspace_id, cid, created + timedelta(seconds=1),
              {"attributes": _attributes(rnd, now, full=True)}),
    ]
    k = rnd.choice((0, 0, 1, 1, 1, 2, 2, 3, 4))
    if k:
        out.append(event(f"seed-{i}-3", "customer.tags_added", workspace_id, cid,
                         created + timedelta(seconds=2), {"tags": _tags(rnd, k)}))
    if rnd.random() < 0.08:
        out.append(event(f"seed-{i}-4", "customer.opt_out_set", workspace_id, cid,
                         created + timedelta(seconds=3), {"marketing_opt_out": True}))
    if rnd.random() < 0.9:
        last = created + timedelta(days=rnd.uniform(0, age)) + timedelta(seconds=4)
        out.append(event(f"seed-{i}-5", "customer.interaction", workspace_id, cid, min(last, now),
                         {"direction": "incoming" if rnd.random() < 0.6 else "outgoing"}))
    return out


@dataclass(frozen=True, slots=True)
class Mix:
    """A stream's mix: cumulative thresholds of one uniform draw per event (CONTRACT §2 types), and
    how its attribute sets and interactions pick what they touch."""

    attributes: float  # draw below: customer.attributes_set
    tags: float  # below: tags added/removed
    interaction: float  # below: customer.interaction
    opt_out: float  # below: customer.opt_out_set; the rest: customer.upserted
    # Attribute sets touch only these (None: any but ``bucket``, which the rule-change phase reads).
    attribute_names: tuple[str, ...] | None = None
    # Share of interactions by customers already active (the hot set): they rarely move anyone.
    active_interactions: float = 0.0


MIXES: dict[str, Mix] = {
    "churn": Mix(attributes=0.50, tags=0.70, interaction=0.90, opt_out=0.95),
    # Interactions dominate and come mostly from customers already talking (no flip); attribute
    # sets update values that only a few narrow segments read.
    # ``last_order`` is declared nowhere: rules cannot read it, but it is stored like any value.
    # Measured with ``python -m segment_worker.bench.cpu --workload …`` (5,000 customers and
    # events): churn 1.87 transitions per event, typical 0.23 (ltv and city instead of last_order
    # gave 0.69: the "High value" and "Cities starting with S" segments flip on them).
    "typical": Mix(attributes=0.25, tags=0.28, interaction=0.975, opt_out=0.98,
                   attribute_names=("company", "last_order"), active_interactions=0.97),
}


def stream_events(
    spec: WorkloadSpec, workspace_id: str, *, tag: str, start: datetime, count: int | None = None,
    step: timedelta = timedelta(microseconds=1),
) -> Iterator[dict[str, Any]]:
    """``count`` (default ``spec.events``) change events; event ``n`` occurs at ``start + n·step``.

    ``tag`` names the stream: it seeds the generator and prefixes event ids, so two streams with
    different tags never share an event id (a repeated id with the same version is a duplicate)."""
    rnd = random.Random(f"{spec.seed}:{tag}")
    mix = MIXES[spec.mix]
    hot = spec.hot_customers
    total = spec.events if count is None else count
    created = 0
    for n in range(total):
        at = start + step * n
        eid = f"{tag}-{n}"
        roll = rnd.random()
        if roll >= mix.opt_out and rnd.random() < 0.1:
            # A brand-new customer, unknown to the seed (its id names the stream).
            cid = f"n-{tag}-{created}"
            created += 1
            yield event(eid, "customer.upserted", workspace_id, cid, at,
                        _profile(rnd, spec.customers + created))
            continue
        # No extra draw unless the mix asks for it: the churn stream stays the same, event for event.
        active = mix.active_interactions > 0 and mix.interaction > roll >= mix.tags \
            and rnd.random() < mix.active_interactions
        i = rnd.randrange(hot) if active or rnd.random() < spec.hot_share else rnd.randrange(spec.customers)
        cid = customer_id(i)
        if roll < mix.attributes:
            yield event(eid, "customer.attributes_set", workspace_id, cid, at,
                        {"attributes": _attributes(rnd, start, full=False, names=mix.attribute_names)})
        elif roll < mix.tags:
            adding = rnd.random() < 0.6
            yield event(eid, "customer.tags_added" if adding else "customer.tags_removed", workspace_id,
                        cid, at, {"tags": _tags(rnd, rnd.choice((1, 1, 2)))})
        elif roll < mix.interaction:
            yield event(eid, "customer.interaction", workspace_id, cid, at,
                        {"direction": "incoming" if rnd.random() < 0.6 else "outgoing"})
        elif roll < mix.opt_out:
            yield event(eid, "customer.opt_out_set", workspace_id, cid, at,
                        {"marketing_opt_out": rnd.random() < 0.3})
        else:
            fields = _profile(rnd, i)
            keep = rnd.sample(sorted(fields), rnd.choice((1, 2, 3)))
            yield event(eid, "customer.upserted", workspace_id, cid, at, {k: fields[k] for k in keep})


def flip_events(workspace_id: str, *, boundaries: list[datetime], tag: str) -> list[dict[str, Any]]:
    """Interactions of one new customer per boundary, timed so that customer ``k`` leaves
    "interacted in the last day" (``last_interaction_at in_last_days 1``) by the passage of time
    alone at ``boundaries[k]``."""
    return [
        event(f"{tag}-{k}", "customer.interaction", workspace_id, f"flip-{tag}-{k}", at - timedelta(days=1),
              {"direction": "incoming"})
        for k, at in enumerate(boundaries)
    ]


__all__ = [
    "ATTRIBUTES",
    "MIXES",
    "Mix",
    "WorkloadSpec",
    "customer_events",
    "customer_id",
    "event",
    "flip_events",
    "stamp",
    "stream_events",
]

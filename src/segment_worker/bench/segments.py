"""The benchmark's dynamic segments: a realistic mix, seeded (pure; rules as API JSON).

Kinds: ``broad`` (match most customers), ``medium`` (10–50%), ``narrow`` (nested any/all/not over
two to four conditions: a few percent or less), ``time`` (time-relative: they move with the clock
alone) and one ``swap`` window the rule-change phase edits. Every field type and most operators
appear: text, number, boolean, date, datetime, select, multi-select, tags and the opt-out flag.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from .workload import CHANNELS, CITIES, COUNTRIES, INTERESTS, LANGUAGES, PLATFORMS, SIGNUPS, TAGS

# The time-relative segment the flip phase watches (always the first ``time`` segment).
FLIP_RULE: dict[str, Any] = {"field": "last_interaction_at", "op": "in_last_days", "value": 1}
# The swap window (~10% of customers) and its edit, which moves ~5% out and ~5% in.
SWAP_RULE: dict[str, Any] = {"field": "attributes.bucket", "op": "between", "value": [20, 30]}
SWAP_EDIT: dict[str, Any] = {"field": "attributes.bucket", "op": "between", "value": [25, 35]}
# The segment the rule-change phase creates: ~10% of customers.
NEW_RULE: dict[str, Any] = {"field": "attributes.bucket", "op": "lt", "value": 10}

_BROAD: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Marketable", {"field": "marketing_opt_out", "op": "is_false"}),
    ("Reachable", {"all": [{"field": "phone", "op": "is_not_empty"},
                           {"field": "email", "op": "is_not_empty"}]}),
    ("Scored", {"field": "attributes.score", "op": "gte", "value": 50}),
    ("Not enterprise", {"not": {"field": "attributes.plan", "op": "eq", "value": "enterprise"}}),
    ("Known or active", {"any": [{"field": "tags", "op": "has_any_tag"},
                                 {"field": "last_interaction_at", "op": "is_not_empty"}]}),
)

_TIME: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Interacted in the last day", FLIP_RULE),
    ("Interacted in the last 7 days", {"field": "last_interaction_at", "op": "in_last_days", "value": 7}),
    ("Interacted in the last 30 days", {"field": "last_interaction_at", "op": "in_last_days", "value": 30}),
    ("Silent for 30 days", {"field": "last_incoming_at", "op": "older_than_days", "value": 30}),
    ("Silent for 90 days", {"field": "last_incoming_at", "op": "older_than_days", "value": 90}),
    ("New this week", {"field": "created_at", "op": "in_last_days", "value": 7}),
    ("New this month", {"field": "created_at", "op": "in_last_days", "value": 30}),
    ("Birthday today", {"field": "attributes.birthdate", "op": "anniversary_today"}),
    ("Birthday this month", {"field": "attributes.birthdate", "op": "anniversary_this_month"}),
    ("Renewal within a week", {"field": "attributes.renewal_at", "op": "in_next_days", "value": 7}),
    ("Renewal within a month", {"field": "attributes.renewal_at", "op": "in_next_days", "value": 30}),
    ("Talked today", {"field": "last_interaction_at", "op": "is_today"}),
    ("Talked this week", {"field": "last_interaction_at", "op": "this_week"}),
    ("Heard from last month", {"field": "last_incoming_at", "op": "last_month"}),
    ("Joined this calendar month", {"field": "created_at", "op": "this_month"}),
    ("Gold going quiet", {"all": [{"field": "attributes.tier", "op": "in", "value": ["gold", "platinum"]},
                                  {"field": "last_interaction_at", "op": "older_than_days", "value": 14}]}),
    ("VIP heard lately", {"all": [{"field": "tags", "op": "has", "value": "vip"},
                                  {"field": "last_incoming_at", "op": "in_last_days", "value": 3}]}),
    ("Renewal or birthday soon", {"any": [
        {"field": "attributes.renewal_at", "op": "in_next_days", "value": 3},
        {"field": "attributes.birthdate", "op": "anniversary_today"}]}),
    ("Marketable newcomers", {"all": [{"field": "marketing_opt_out", "op": "is_false"},
                                      {"field": "created_at", "op": "in_last_days", "value": 90}]}),
    ("Talked yesterday", {"field": "last_interaction_at", "op": "is_yesterday"}),
)

Rule = dict[str, Any]


def _c(field: str, op: str, value: Any = None) -> Rule:
    return {"field": field, "op": op} if value is None else {"field": field, "op": op, "value": value}


def _medium_choices(rnd: random.Random) -> list[Callable[[], tuple[str, Rule]]]:
    return [
        lambda: ("Gold or platinum", _c("attributes.tier", "in", ["gold", "platinum"])),
        lambda: ("Silver tier", _c("attributes.tier", "eq", "silver")),
        lambda: ("On WhatsApp", _c("platform", "eq", "whatsapp")),
        lambda: ("On Instagram", _c("platform", "eq", "instagram")),
        lambda: ("Arabic speakers", _c("language", "eq", "ar")),
        lambda: ("English speakers", _c("language", "eq", "en")),
        lambda: ("In Oman", _c("country", "eq", "OM")),
        lambda: ("Gulf customers", _c("country", "in", ["AE", "QA", "KW", "BH"])),
        lambda: (f"Likes {(i := rnd.sample(INTERESTS, 2))[0]} or {i[1]}",
                 _c("attributes.interests", "contains_any", i)),
        lambda: (f"Reachable by {(ch := rnd.choice(CHANNELS))}",
                 _c("attributes.channels", "contains_any", [ch])),
        lambda: ("VIP flag", _c("attributes.vip", "is_true")),
        lambda: ("Paying", _c("attributes.plan", "in", ["starter", "pro", "enterprise"])),
        lambda: ("Free plan", _c("attributes.plan", "eq", "free")),
        lambda: (f"Score over {(s := rnd.choice((550, 650, 750, 850)))}", _c("attributes.score", "gt", s)),
        lambda: ("Tagged vip or lead", _c("tags", "has_any_of", ["vip", "lead"])),
        lambda: ("Newsletter readers", _c("tags", "has", "newsletter")),
        lambda: ("Renewal known", _c("attributes.renewal_at", "is_not_empty")),
        lambda: (f"High value {(v := rnd.choice((250, 400)))}", _c("attributes.ltv", "gte", v)),
        lambda: ("Example.com mail", _c("email", "ends_with", "@example.com")),
        lambda: ("Cities starting with S", _c("attributes.city", "starts_with", "s")),
        lambda: (f"Came via {(src := rnd.choice(SIGNUPS))}", _c("attributes.signup", "eq", src)),
        lambda: ("No SMS", _c("attributes.channels", "not_contains_any", ["sms"])),
        lambda: ("Low score", _c("attributes.score", "between", [0, 300])),
    ]


def _condition(rnd: random.Random) -> Rule:
    """One condition of a narrow segment (selectivity from ~2% to ~60%)."""
    lo = rnd.randrange(0, 900, 10)
    makers: tuple[Callable[[], Rule], ...] = (
        lambda: _c("country", "eq", rnd.choice(COUNTRIES)[0]),
        lambda: _c("language", "in", [x[0] for x in rnd.sample(LANGUAGES, 2)]),
        lambda: _c("platform", "neq", rnd.choice(PLATFORMS)[0]),
        lambda: _c("attributes.tier", "eq", rnd.choice(["silver", "gold", "platinum"])),
        lambda: _c("attributes.plan", "not_in", ["free"]),
        lambda: _c("attributes.signup", "eq", rnd.choice(SIGNUPS)),
        lambda: _c("attributes.score", "between", [lo, lo + rnd.choice((50, 100, 200))]),
        lambda: _c("attributes.ltv", "lt", rnd.choice((50, 100))),
        lambda: _c("tags", "has", rnd.choice(TAGS[:20])),
        lambda: _c("tags", "not_has", rnd.choice(TAGS[:5])),
        lambda: _c("tags", "has_all_of", rnd.sample(TAGS[:6], 2)),
        lambda: _c("attributes.interests", "contains_all", rnd.sample(INTERESTS, 2)),
        lambda: _c("attributes.channels", "not_contains_any", ["sms"]),
        lambda: _c("attributes.vip", "is_false"),
        lambda: _c("attributes.city", "eq", rnd.choice(CITIES)),
        lambda: _c("attributes.company", "contains", rnd.choice(("falcon", "gulf", "labs", "oasis"))),
        lambda: _c("email", "ends_with", rnd.choice(("example.org", "mail.test"))),
        lambda: _c("name", "starts_with", rnd.choice("ahkmsz")),
        lambda: _c("phone", "starts_with", f"+9689{rnd.randrange(10)}"),
        lambda: _c("attributes.birthdate", "before", f"{rnd.randint(1955, 1975)}-01-01"),
        lambda: _c("attributes.renewal_at", "after", "2020-01-01T00:00:00Z"),
        lambda: _c("marketing_opt_out", "is_true"),
    )
    return rnd.choice(makers)()


def _narrow(rnd: random.Random) -> Rule:
    shape = rnd.random()
    if shape < 0.5:
        return {"all": [_condition(rnd) for _ in range(rnd.choice((2, 3)))]}
    if shape < 0.8:
        return {"all": [_condition(rnd), {"any": [_condition(rnd), _condition(rnd)]}, _condition(rnd)]}
    if shape < 0.9:
        return {"all": [_condition(rnd), _condition(rnd), {"not": _condition(rnd)}]}
    return {"any": [{"all": [_condition(rnd), _condition(rnd), _condition(rnd)]},
                    {"all": [_condition(rnd), _condition(rnd), _condition(rnd)]}]}


def kind_counts(segments: int) -> dict[str, int]:
    """How many segments of each kind ``segments`` makes (200 → 5 broad, 20 medium, 20 time,
    1 swap, 154 narrow)."""
    time_n = min(len(_TIME), max(1, segments // 10))
    broad = min(len(_BROAD), max(1, segments // 40))
    medium = min(20, max(1, segments // 10))
    swap = 1
    narrow = max(0, segments - time_n - broad - medium - swap)
    return {"broad": broad, "medium": medium, "time": time_n, "swap": swap, "narrow": narrow}


def segment_specs(segments: int, seed: int) -> list[dict[str, Any]]:
    """``segments`` dynamic segment specs ``{"name", "kind", "rules"}``; names are unique."""
    rnd = random.Random(f"{seed}:segments")
    n = kind_counts(segments)
    out: list[dict[str, Any]] = []

    def add(kind: str, name: str, rules: Rule) -> None:
        out.append({"name": f"{kind} {len(out) + 1:03d}: {name}", "kind": kind, "rules": rules})

    for name, rules in _BROAD[: n["broad"]]:
        add("broad", name, rules)
    choices = _medium_choices(rnd)
    for k in range(n["medium"]):
        if k % len(choices) == 0:
            rnd.shuffle(choices)
        add("medium", *choices[k % len(choices)]())
    for name, rules in _TIME[: n["time"]]:
        add("time", name, rules)
    add("swap", "Bucket window", SWAP_RULE)
    for _ in range(n["narrow"]):
        add("narrow", "mixed", _narrow(rnd))
    return out

"""The rule builder reads back every kind of rule it writes: a segment made through the API with a
NOT group, list operands, a number range and a date opens in the editor with each value in its
input, the live count equal to the saved member count and "+0 / −0" when nothing changed; NOT and
a typed tag list then change the count as the model says.

Runs after test_console_list.py; deletes its segment (the list stays as the next module expects)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from console_data import Customer
from console_env import Console

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

NAME = "Round trip"
RULES = {"all": [
    {"not": {"any": [{"field": "tags", "op": "has_any_of", "value": ["lead", "VIP"]}]}},
    {"field": "attributes.score", "op": "between", "value": [3, 20]},
    {"field": "attributes.tier", "op": "in", "value": ["silver", "platinum"]},
    {"field": "created_at", "op": "before", "value": "2030-01-01"},
]}


def count(console: Console, rule: Callable[[Customer], bool]) -> int:
    return sum(1 for c in console.customers.values() if rule(c))


def base(c: Customer) -> bool:
    """Score 3–20 and tier silver or platinum (every test customer was created before 2030)."""
    return 3 <= c.score <= 20 and c.tier in ("silver", "platinum")


@pytest.fixture
async def segment(console: Console) -> AsyncIterator[dict[str, Any]]:
    r = await console.api.post("/segments", json={"name": NAME, "type": "dynamic", "rules": RULES})
    assert r.status_code == 201, r.text
    yield r.json()
    assert (await console.api.delete(f"/segments/{r.json()['id']}")).status_code == 204


async def test_a_saved_rule_opens_as_it_was_written(
    page: Any, console: Console, segment: dict[str, Any]
) -> None:
    from playwright.async_api import expect

    pg = page
    expected = count(console, lambda c: base(c) and not ({"lead", "VIP"} & c.tags))
    assert segment["member_count"] == expected
    await pg.goto(pg.url.split("#")[0] + f"#/segments/{segment['id']}/edit")
    await expect(pg.locator("#live-count")).to_have_text(str(expected))
    await expect(pg.locator("#impact-numbers")).to_have_text("+0−0")

    root = pg.locator("#rule-builder > .group")
    nested = root.get_by_role("group", name="Nested OR group")
    await expect(nested.get_by_label("NOT")).to_be_checked()
    await expect(nested.locator(".chip")).to_have_text(["lead×", "VIP×"])
    rows = root.locator(":scope > .cond")
    await expect(rows.nth(0).get_by_label("From", exact=True)).to_have_value("3")
    await expect(rows.nth(0).get_by_label("To", exact=True)).to_have_value("20")
    tiers = rows.nth(1).get_by_role("checkbox")
    assert [await t.is_checked() for t in await tiers.all()] == [False, True, False, True]  # TIERS order
    await expect(rows.nth(2).get_by_label("Date")).to_have_value("2030-01-01")
    await expect(rows.nth(2).get_by_label("Operator")).to_have_value("before")

    # NOT off: the group now keeps those with a lead or VIP tag.
    await nested.get_by_label("NOT").uncheck()
    with_tags = count(console, lambda c: base(c) and bool({"lead", "VIP"} & c.tags))
    await expect(pg.locator("#live-count")).to_have_text(str(with_tags))
    await expect(pg.locator("#impact-numbers")).to_contain_text(f"+{with_tags}")
    await expect(pg.locator("#impact-numbers")).to_contain_text(f"−{expected}")

    # A typed tag list: has all of VIP and lead.
    await root.get_by_role("button", name="+ Add Attribute").last.click()
    last = root.locator(":scope > .cond").last
    await last.get_by_label("Operator").select_option("has_all_of")
    tag_input = root.locator(":scope > .cond").last.get_by_label("Add a value (Enter)")
    for tag in ("VIP", "lead"):
        await tag_input.fill(tag)
        await tag_input.press("Enter")
    both = count(console, lambda c: base(c) and {"lead", "VIP"} <= c.tags)
    await expect(pg.locator("#live-count")).to_have_text(str(both))

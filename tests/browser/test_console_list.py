"""The Segments list: default segments, rows per page and cursor pages, name search, Duplicate
and Rename from the row menu; declaring a custom attribute from the editor.

Runs after test_console_dynamic.py (its segment is duplicated here); removes what it adds, so
test_console_static.py sees the list as the dynamic tests left it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from console_env import Console

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

DYNAMIC = "Arabic VIP or Gold"
DEFAULTS = ["Created in the last 7 days", "Inactive for more than 30 days", "Has tags", "Country known",
            "Language known"]


@pytest.fixture
async def cleanup(console: Console) -> AsyncIterator[list[str]]:
    """Names of segments the test made; deleted afterwards (through the API)."""
    names: list[str] = []
    yield names
    listed = (await console.api.get("/segments", params={"limit": 500})).json()["items"]
    for s in listed:
        if s["name"] in names:
            assert (await console.api.delete(f"/segments/{s['id']}")).status_code == 204


async def test_defaults_pages_search_duplicate_rename(
    page: Any, console: Console, shot: Any, cleanup: list[str]
) -> None:
    from playwright.async_api import expect

    pg = page
    rows = pg.locator("tbody tr")
    await expect(rows).to_have_count(1)  # the dynamic tests' segment
    cleanup.extend(DEFAULTS)
    await pg.get_by_role("button", name="Add default segments").click()
    await expect(rows).to_have_count(1 + len(DEFAULTS))
    tagged = sum(1 for c in console.customers.values() if c.tags)
    has_tags = rows.filter(has=pg.get_by_role("link", name="Has tags", exact=True))
    await expect(has_tags.locator(".count")).to_have_text(str(tagged))
    await pg.get_by_role("button", name="Add default segments").click()
    await expect(pg.locator("#toasts")).to_contain_text("All default segments exist already")

    lists = ["Spring sale", "Webinar attendees", "Ramadan offers", "Trade show leads", "Loyalty club",
             "Beta testers"]
    bulk = [f"Campaign list: {x}" for x in lists]
    cleanup.extend(bulk)
    for name in bulk:
        body = {"name": name, "type": "static", "description": "Imported for one campaign"}
        r = await console.api.post("/segments", json=body)
        assert r.status_code == 201, r.text
    total = 1 + len(DEFAULTS) + len(bulk)  # 12
    await pg.reload()
    await expect(rows).to_have_count(10)
    await expect(pg.locator("#page-range")).to_have_text(f"1–10 of {total}")
    await pg.get_by_role("button", name="Next page").click()
    await expect(rows).to_have_count(total - 10)
    await expect(pg.locator("#page-range")).to_have_text(f"11–{total} of {total}")
    await expect(rows.last).to_contain_text(DYNAMIC)  # newest first: the oldest comes last
    await pg.get_by_role("button", name="Previous page").click()
    await expect(rows.first).to_contain_text(bulk[-1])
    await pg.get_by_label("Rows per page").select_option("25")
    await expect(rows).to_have_count(total)
    await expect(pg.get_by_role("button", name="Next page")).to_be_disabled()
    await shot(pg, "segments")

    await pg.get_by_label("Search by name").fill("CAMPAIGN LIST")
    await expect(rows).to_have_count(len(bulk))
    await pg.get_by_label("Search by name").fill("no such segment")
    await expect(pg.locator(".empty")).to_contain_text("No segment's name contains")
    await pg.get_by_label("Search by name").fill("")
    await expect(rows).to_have_count(total)

    source = rows.filter(has=pg.get_by_role("link", name=DYNAMIC, exact=True))
    members = await source.locator(".count").text_content()
    await source.get_by_role("button", name=f"Actions for {DYNAMIC}").click()
    await pg.get_by_role("menuitem", name="Duplicate").click()
    await shot(pg, "duplicate")
    dialog = pg.get_by_role("dialog", name=f"Duplicate “{DYNAMIC}”")
    await expect(dialog.get_by_label("Name of the copy")).to_have_value(f"Copy of {DYNAMIC}")
    cleanup.extend([f"Copy of {DYNAMIC}", "Renamed copy"])
    await dialog.get_by_role("button", name="Save").click()
    copy = rows.filter(has=pg.get_by_role("link", name=f"Copy of {DYNAMIC}", exact=True))
    await expect(copy.locator(".count")).to_have_text(members or "")

    await copy.get_by_role("button", name=f"Actions for Copy of {DYNAMIC}").click()
    await pg.get_by_role("menuitem", name="Rename").click()
    dialog = pg.get_by_role("dialog", name=f"Rename “Copy of {DYNAMIC}”")
    await dialog.get_by_label("Segment name").fill(DYNAMIC.upper())  # names are unique, any case
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("exists")
    await dialog.get_by_label("Segment name").fill("Renamed copy")
    await dialog.get_by_role("button", name="Save").click()
    await expect(rows.filter(has=pg.get_by_role("link", name="Renamed copy", exact=True))).to_have_count(1)


async def test_keyboard_opens_the_row_menu(page: Any, console: Console) -> None:
    from playwright.async_api import expect

    pg = page
    menu_button = pg.get_by_role("button", name=f"Actions for {DYNAMIC}")
    await menu_button.focus()
    await pg.keyboard.press("ArrowDown")
    await expect(pg.get_by_role("menuitem", name="Manage Customers")).to_be_focused()
    await pg.keyboard.press("ArrowUp")
    await expect(pg.get_by_role("menuitem", name="Delete")).to_be_focused()
    await pg.keyboard.press("Escape")
    await expect(pg.get_by_role("menu")).to_be_hidden()
    await expect(menu_button).to_be_focused()
    await pg.keyboard.press("Enter")
    await pg.keyboard.press("ArrowDown")  # → View Customers
    await pg.keyboard.press("Enter")
    await pg.get_by_role("heading", name=f"Customers in {DYNAMIC}").wait_for()


async def test_declare_an_attribute_and_use_it(page: Any, console: Console) -> None:
    from playwright.async_api import expect

    pg = page
    await pg.get_by_role("link", name="+ Create Segment").click()
    await pg.get_by_role("button", name="+ Declare attribute").click()
    dialog = pg.get_by_role("dialog", name="Declare a custom attribute")
    await dialog.get_by_label("Attribute name").fill("plan")
    await dialog.get_by_label("Type").select_option("multi_select")
    await dialog.get_by_label("Options (comma-separated)").fill("basic, pro, team")
    await dialog.get_by_role("button", name="Declare").click()
    await expect(pg.locator("#attr-list")).to_contain_text("plan")
    r = await console.api.get("/attributes/plan")
    assert r.json()["type"] == "multi_select" and r.json()["options"] == ["basic", "pro", "team"]

    row = pg.locator(".cond").first
    await row.get_by_label("Attribute").select_option("attributes.plan")
    # multi_select: its operators, and its options as chips to tick
    ops = await pg.locator(".cond").first.get_by_label("Operator").locator("option").all_text_contents()
    assert ops[0] == "contains any of" and "has tag" not in ops
    await pg.locator(".cond").first.get_by_text("pro", exact=True).click()
    await expect(pg.locator("#live-count")).to_have_text("0")  # nobody has a plan yet

"""Static segments, customers and audiences in the console, as one story in file order: create a
static segment, add customers by search, import a CSV (dropped on the page) and read the report;
view and edit a customer and see it leave a dynamic segment; explain members; the customer's
history; a campaign audience; delete with confirmation (the customers stay); settings; phones.

Runs after test_console_dynamic.py (same session workspace: its segment is reused here)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from console_data import english_vip_or_gold
from console_env import Console

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

DYNAMIC = "Arabic VIP or Gold"  # made by test_console_dynamic.py, its language then edited to "en"
STATIC = "Newsletter Subscribers"
NEW_PHONE = "+96899990001"
CSV = (
    "phone,name\n"
    "+96890000003,Already added\n"  # c03: added by search first
    "+96890000005,Five\n"  # c05: an existing customer
    f"{NEW_PHONE},New Person\n"  # nobody: a new customer
    "not-a-phone,Bad\n"  # line 5
)
# What the static segment holds, by the story's own steps.
static_members: set[str] = set()


async def open_menu(pg: Any, segment: str, item: str) -> None:
    """The row menu of ``segment`` on the Segments list → ``item``."""
    await pg.goto(pg.url.split("#")[0] + "#/segments")
    row = pg.locator("tbody tr").filter(has=pg.get_by_role("link", name=segment, exact=True))
    await row.get_by_role("button", name=f"Actions for {segment}").click()
    await pg.get_by_role("menuitem", name=item).click()


async def test_static_segment_add_by_search_and_import(page: Any, console: Console, shot: Any) -> None:
    from playwright.async_api import expect

    pg = page
    await pg.get_by_role("link", name="+ Create Segment").click()
    await pg.get_by_label("Segment name (required)").fill(STATIC)
    await pg.get_by_text("Dynamic segment", exact=True).click()  # the switch: off
    await expect(pg.get_by_label("Dynamic segment")).not_to_be_checked()
    await expect(pg.locator("#rule-builder")).to_be_hidden()
    await pg.get_by_role("button", name="Create segment").click()
    await pg.get_by_role("heading", name=f"Manage Customers · {STATIC}").wait_for()

    await pg.get_by_role("button", name="Add Customers").click()
    dialog = pg.get_by_role("dialog", name="Add Customers")
    await dialog.get_by_label("Search customers by name or phone").fill("Test0")
    for cid in ("c01", "c03"):
        name = console.customers[cid].name
        await dialog.get_by_role("checkbox", name=re.compile(re.escape(name))).check()
    await shot(pg, "add-customers")
    await dialog.get_by_role("button", name="Add 2 customers").click()
    static_members.update({"c01", "c03"})
    await expect(pg.locator("#member-count")).to_contain_text(f"{len(static_members)} members")

    await pg.get_by_role("button", name="Import CSV").click()
    dialog = pg.get_by_role("dialog", name="Bulk Import Customers from CSV")
    async with pg.expect_download() as download:
        await dialog.get_by_role("button", name="Download sample CSV").click()
    saved = await (await download.value).path()
    sample = await asyncio.to_thread(Path(saved).read_text)
    assert sample.splitlines()[0] == "phone,name"

    # A file over 10 MB (10,485,760 bytes) is refused before any upload.
    too_big = await pg.evaluate_handle(
        "() => { const dt = new DataTransfer();"
        " dt.items.add(new File(['x'.repeat(10485761)], 'huge.csv', {type: 'text/csv'})); return dt; }"
    )
    await pg.dispatch_event("#dropzone", "drop", {"dataTransfer": too_big})
    await expect(dialog.locator("#csv-chosen")).to_contain_text("huge.csv is larger than 10 MB")
    await expect(dialog.get_by_role("button", name="Import", exact=True)).to_be_disabled()

    # Drag and drop: a File in a DataTransfer, dropped on the zone.
    drop = await pg.evaluate_handle(
        "(csv) => { const dt = new DataTransfer();"
        " dt.items.add(new File([csv], 'newsletter.csv', {type: 'text/csv'})); return dt; }",
        CSV,
    )
    await pg.dispatch_event("#dropzone", "drop", {"dataTransfer": drop})
    await expect(dialog.locator("#csv-chosen")).to_contain_text("newsletter.csv")
    await dialog.get_by_role("button", name="Import", exact=True).click()
    report = dialog.locator("#import-report")
    await expect(report.locator("#rep-added b")).to_have_text("2")  # c05 and the new phone
    await expect(report.locator("#rep-already b")).to_have_text("1")  # c03
    await expect(report.locator("#rep-created b")).to_have_text("1")
    await expect(report.locator("#rep-invalid b")).to_have_text("1")
    await expect(report.locator("tbody tr")).to_have_count(1)
    await expect(report.locator("tbody tr td").first).to_have_text("5")
    await expect(report.locator("tbody tr")).to_contain_text("not-a-phone")
    await shot(pg, "import-csv")
    static_members.update({"c05", NEW_PHONE})
    await dialog.get_by_role("button", name="Close", exact=True).last.click()
    await expect(pg.locator("#member-count")).to_contain_text(f"{len(static_members)} members")
    await expect(pg.locator("tbody tr")).to_have_count(len(static_members))
    await shot(pg, "manage-static")

    # Remove one again: tick it, confirm (the customer itself stays).
    await pg.get_by_role("checkbox", name="Select New Person").check()
    await pg.get_by_role("button", name="Remove 1 selected").click()
    await pg.get_by_role("dialog", name="Remove from segment?").get_by_role("button", name="Remove").click()
    static_members.discard(NEW_PHONE)
    await expect(pg.locator("#member-count")).to_contain_text(f"{len(static_members)} members")
    assert (await console.api.get(f"/customers/{NEW_PHONE}")).status_code == 200


async def test_dynamic_manage_page_is_read_only(page: Any, console: Console) -> None:
    from playwright.async_api import expect

    await open_menu(page, DYNAMIC, "Manage Customers")
    await expect(page.locator("#dynamic-banner")).to_contain_text("its filters decide")
    await expect(page.get_by_role("button", name="Add Customers")).to_have_count(0)
    await expect(page.get_by_role("button", name="Import CSV")).to_have_count(0)


async def test_edit_a_customer_and_see_the_segment_change(page: Any, console: Console, shot: Any) -> None:
    from playwright.async_api import expect

    pg = page
    before = {c.id for c in console.customers.values() if english_vip_or_gold(c)}
    c09 = console.customers["c09"]
    assert c09.id in before and c09.tier != "gold"  # in by its VIP tag alone
    await open_menu(pg, DYNAMIC, "View Customers")
    await expect(pg.locator("#member-count")).to_contain_text(f"{len(before)} members")
    await shot(pg, "view-customers")

    await pg.get_by_role("button", name=f"Edit customer {c09.name}").click()
    dialog = pg.get_by_role("dialog", name=f"Edit Customer · {c09.name}")
    await dialog.get_by_label("score (number)").fill("99")
    await shot(pg, "edit-customer")
    await dialog.get_by_role("button", name="Remove VIP").click()
    await dialog.get_by_role("button", name="Save").click()
    await expect(dialog).to_be_hidden(timeout=15_000)  # closes once the worker applied the events
    c09.tags.discard("VIP")
    c09.score = 99
    after = {c.id for c in console.customers.values() if english_vip_or_gold(c)}
    assert after == before - {"c09"}
    await expect(pg.locator("#member-count")).to_contain_text(f"{len(after)} members")
    await expect(pg.get_by_role("link", name=c09.name)).to_have_count(0)


async def test_explain_a_member_and_a_non_member(page: Any, console: Console, shot: Any) -> None:
    from playwright.async_api import expect

    pg = page
    await open_menu(pg, DYNAMIC, "View Customers")
    c03 = console.customers["c03"]
    row = pg.locator("tbody tr").filter(has=pg.get_by_role("link", name=c03.name))
    await row.get_by_role("button", name=f"Why is {c03.name} in?").click()
    dialog = pg.get_by_role("dialog", name="Why is this customer in or out?")
    await expect(dialog.locator("#explain-verdict")).to_contain_text(f"c03 is in “{DYNAMIC}”")
    language = dialog.locator("li.cond-node").filter(has_text="language")
    await expect(language).to_contain_text("customer's value: en")
    await expect(language).to_contain_text("✓ true")
    await shot(pg, "explain")
    await dialog.get_by_role("button", name="Close").last.click()

    await pg.get_by_label("Customer id").fill("c09")
    await pg.get_by_role("button", name="Explain").click()
    dialog = pg.get_by_role("dialog", name="Why is this customer in or out?")
    await expect(dialog.locator("#explain-verdict")).to_contain_text("c09 is not in")
    await expect(dialog.locator("li.cond-node").filter(has_text="tags")).to_contain_text("✗ false")


async def test_customer_history(page: Any, console: Console, shot: Any) -> None:
    from playwright.async_api import expect

    pg = page
    c09 = console.customers["c09"]
    await pg.goto(pg.url.split("#")[0] + "#/customers/c09")
    await pg.get_by_role("heading", name=c09.name).wait_for()
    # Entered when the rule's language became "en", left when its VIP tag went (newest first);
    # other rows are the list tests' segments (defaults, a copy), deleted since.
    rows = pg.locator("#history tbody tr").filter(has=pg.get_by_role("cell", name=DYNAMIC, exact=True))
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text("left")
    await expect(rows.nth(0)).to_contain_text(DYNAMIC)
    await expect(rows.nth(1)).to_contain_text("entered")
    await expect(rows.nth(1)).to_contain_text("rules changed")
    opt_out = "Opted out" if c09.opted_out else "Subscribed"
    await expect(pg.locator("#prof-title + div")).to_contain_text(opt_out)
    await shot(pg, "customer")


async def test_campaign_audience(page: Any, console: Console, shot: Any) -> None:
    from playwright.async_api import expect

    pg = page
    await pg.get_by_role("link", name="Campaign audience").click()
    for name in (DYNAMIC, STATIC):
        await pg.get_by_role("checkbox", name=re.compile(re.escape(name))).check()
    await pg.get_by_role("button", name="Build audience from 2 segments").click()
    dynamic = {c.id for c in console.customers.values() if english_vip_or_gold(c)}
    opted_out = {c.id for c in console.customers.values() if c.opted_out}
    expected = (dynamic | static_members) - opted_out
    await expect(pg.locator("#aud-count")).to_have_text(str(len(expected)))
    await expect(pg.locator("#aud-result")).to_contain_text("A snapshot")
    await expect(pg.locator("#aud-key")).to_contain_text(f"sw:{{{console.ws}}}:aud:")
    await shot(pg, "audience")


async def test_delete_asks_and_the_customers_stay(page: Any, console: Console, shot: Any) -> None:
    from playwright.async_api import expect

    pg = page
    await open_menu(pg, STATIC, "Delete")
    dialog = pg.get_by_role("dialog", name=f"Delete “{STATIC}”?")
    await expect(dialog).to_contain_text("The customers stay")
    await expect(dialog).to_contain_text(f"{len(static_members)} members")
    await shot(pg, "delete-confirm")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(pg.get_by_role("link", name=STATIC, exact=True)).to_have_count(1)  # cancel keeps it

    await open_menu(pg, STATIC, "Delete")
    await pg.get_by_role("dialog").get_by_role("button", name="Delete segment").click()
    await expect(pg.get_by_role("link", name=STATIC, exact=True)).to_have_count(0)
    for cid in static_members:
        assert (await console.api.get(f"/customers/{cid}")).status_code == 200, cid


async def test_settings(page: Any, console: Console, shot: Any) -> None:
    from playwright.async_api import expect

    pg = page
    await pg.get_by_role("link", name="Settings").click()
    tz = pg.get_by_label("Timezone")
    await expect(tz).to_have_value("Asia/Muscat")
    await expect(pg.get_by_label("Default phone region")).to_have_value("OM")
    await tz.fill("Europe/London")
    await pg.get_by_role("button", name="Save settings").click()
    await expect(pg.locator("#toasts")).to_contain_text("Saved: Europe/London, region OM")
    await pg.reload()
    await expect(pg.get_by_label("Timezone")).to_have_value("Europe/London")
    await tz.fill("Nowhere/Atlantis")
    await pg.get_by_role("button", name="Save settings").click()
    await expect(pg.locator("form[aria-labelledby='ws-title'] .error-text")).to_be_visible()
    await shot(pg, "settings")


async def test_phone_width(page: Any, console: Console, shot: Any) -> None:
    from playwright.async_api import expect

    pg = page
    await pg.set_viewport_size({"width": 390, "height": 844})
    await pg.goto(pg.url.split("#")[0] + "#/segments")
    row = pg.locator("tbody tr").filter(has=pg.get_by_role("link", name=DYNAMIC, exact=True))
    await expect(row).to_be_visible()
    # Nothing wider than the screen: no sideways scrolling at phone width.
    assert await pg.evaluate("document.documentElement.scrollWidth") <= 390
    await shot(pg, "phone-segments")
    await row.get_by_role("button", name=f"Actions for {DYNAMIC}").click()
    await pg.get_by_role("menuitem", name="Edit").click()
    await pg.get_by_role("heading", name=f"Edit “{DYNAMIC}”").wait_for()
    assert await pg.evaluate("document.documentElement.scrollWidth") <= 390
    await shot(pg, "phone-editor", full_page=True)

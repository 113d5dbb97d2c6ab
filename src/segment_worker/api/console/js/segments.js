// The Segments list: search, live member counts (polled while the tab is visible), cursor
// pagination with rows per page, the row menu, Create Segment, Add default segments.
import { get, post, patch, del, describe } from "./api.js";
import { h, field, rowMenu, fmtDate, toast, openDialog, confirmDialog, debounce, table, fill } from "./ui.js";

export const POLL_MS = 4000;

export function segmentsPage(main) {
  const state = { q: "", limit: Number(localStorage.getItem("sw.rows") || 10), cursors: [null], page: 0, total: 0 };
  const search = h("input", { type: "search", id: "seg-search", placeholder: "Search by name", autocomplete: "off" });
  const body = h("div", {});
  const live = h("span", { class: "live", id: "live-note" }, "Member counts update live");
  fill(main, 
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Segments"),
        h("p", { class: "muted" }, "Reusable groups of customers for campaigns: static lists and dynamic filters.")),
      h("div", { class: "actions" },
        h("button", { type: "button", id: "add-defaults", onclick: addDefaults }, "Add default segments"),
        h("a", { class: "button primary", href: "#/segments/new", id: "create-segment" }, "+ Create Segment"))),
    h("div", { class: "panel flush" },
      h("div", { class: "toolbar" }, field("Search by name", search), live), body));

  search.addEventListener("input", debounce(() => {
    state.q = search.value.trim(); state.cursors = [null]; state.page = 0; load();
  }, 300));

  let seq = 0;
  async function load(quiet = false) {
    const mine = ++seq;
    let page;
    try {
      page = await get("/segments", { q: state.q, limit: state.limit, cursor: state.cursors[state.page] });
    } catch (err) {
      if (!quiet) fill(body, h("div", { class: "banner error", role: "alert" }, describe(err)));
      return;
    }
    if (mine !== seq) return; // a newer load answered first
    state.total = page.total;
    state.cursors[state.page + 1] = page.next_cursor;
    if (quiet && updateCounts(page.items)) return;
    render(page);
  }

  // A poll changes only the numbers (focus, open menus and scroll stay put) unless rows changed.
  function updateCounts(items) {
    const rows = body.querySelectorAll("tr[data-id]");
    if (rows.length !== items.length || items.some((s, i) => rows[i].dataset.id !== s.id)) return false;
    items.forEach((s, i) => {
      const cell = rows[i].querySelector(".count");
      if (cell.textContent !== s.member_count.toLocaleString()) cell.textContent = s.member_count.toLocaleString();
    });
    return true;
  }

  function render(page) {
    if (!page.items.length) {
      fill(body, h("div", { class: "empty" }, state.q ? `No segment's name contains “${state.q}”.`
        : "No segments yet. Create one, or add the default segments."));
      return;
    }
    const headers = [{ label: "Name" }, { label: "Type" }, { label: "Filters" }, { label: "Members", num: true },
      { label: "Created" }, { label: "Actions" }];
    const rows = page.items.map((s) => [
      [h("a", { class: "seg-name", href: `#/segments/${s.id}/members` }, s.name),
        s.description ? h("div", { class: "desc" }, s.description) : null],
      h("span", { class: `badge ${s.type}` }, s.type === "dynamic" ? "Dynamic" : "Static"),
      h("div", { class: "summary" }, s.filter_summary),
      h("span", { class: "count" }, s.member_count.toLocaleString()),
      h("span", { class: "nowrap" }, fmtDate(s.created_at)),
      rowMenu(`Actions for ${s.name}`, [
        { label: "Manage Customers", onclick: () => { location.hash = `#/segments/${s.id}/manage`; } },
        { label: "View Customers", onclick: () => { location.hash = `#/segments/${s.id}/members`; } },
        { label: "Edit", onclick: () => { location.hash = `#/segments/${s.id}/edit`; } },
        { label: "Duplicate", onclick: () => duplicate(s) },
        { label: "Rename", onclick: () => rename(s) },
        { label: "Delete", danger: true, onclick: () => remove(s) },
      ]),
    ]);
    const tbl = table(headers, rows, { caption: "Segments" });
    tbl.querySelectorAll("tbody tr").forEach((tr, i) => { tr.dataset.id = page.items[i].id; });
    const first = state.page * state.limit + 1;
    const rowsSel = h("select", { id: "rows-per-page", onchange: (e) => {
      state.limit = Number(e.target.value); localStorage.setItem("sw.rows", state.limit);
      state.cursors = [null]; state.page = 0; load();
    } }, [10, 25, 50].map((n) => h("option", { value: n, selected: n === state.limit }, n)));
    fill(body, tbl, h("nav", { class: "pager", "aria-label": "Pages" },
      h("label", { for: "rows-per-page", class: "inline" }, "Rows per page"), rowsSel,
      h("span", { id: "page-range" }, `${first}–${first + page.items.length - 1} of ${state.total}`),
      h("button", { type: "button", "aria-label": "Previous page", disabled: state.page === 0,
        onclick: () => { state.page -= 1; load(); } }, "‹ Prev"),
      h("button", { type: "button", "aria-label": "Next page", disabled: !page.next_cursor,
        onclick: () => { state.page += 1; load(); } }, "Next ›")));
  }

  async function addDefaults() {
    try {
      const r = await post("/segments/defaults", {});
      toast(r.created.length ? `Added ${r.created.length} default segments` + (r.skipped.length ? `; ${r.skipped.length} existed` : "")
        : "All default segments exist already");
      state.cursors = [null]; state.page = 0; load();
    } catch (err) { toast(describe(err), "error"); }
  }

  async function nameDialog(title, label, initial, submit) {
    const input = h("input", { type: "text", value: initial, maxlength: "100", required: true });
    const error = h("p", { class: "error-text", role: "alert", hidden: true });
    return openDialog({
      title, body: h("div", {}, field(label, input), error),
      onOpen: () => { input.focus(); input.select(); },
      actions: (close) => {
        const go = async () => {
          try { close(await submit(input.value.trim())); } catch (err) { error.hidden = false; error.textContent = describe(err); }
        };
        input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); go(); } });
        return [h("button", { type: "button", onclick: () => close() }, "Cancel"),
          h("button", { type: "button", class: "primary", onclick: go }, "Save")];
      },
    });
  }

  async function duplicate(s) {
    const made = await nameDialog(`Duplicate “${s.name}”`, "Name of the copy", `Copy of ${s.name}`.slice(0, 100),
      (name) => post(`/segments/${s.id}/duplicate`, { name }));
    if (made) { toast(`Created “${made.name}” with ${made.member_count} members`); state.cursors = [null]; state.page = 0; load(); }
  }

  async function rename(s) {
    const saved = await nameDialog(`Rename “${s.name}”`, "Segment name", s.name, (name) => patch(`/segments/${s.id}`, { name }));
    if (saved) { toast(`Renamed to “${saved.name}”`); load(); }
  }

  async function remove(s) {
    const ok = await confirmDialog(`Delete “${s.name}”?`, h("div", {},
      h("p", {}, `The segment and its list of ${s.member_count.toLocaleString()} members are deleted.`),
      h("p", {}, h("strong", {}, "The customers stay"), " in your workspace, with all their data and their other segments."),
      h("p", { class: "muted small" }, "Audiences already built from it do not change.")), "Delete segment", true);
    if (!ok) return;
    try { await del(`/segments/${s.id}`); toast(`Deleted “${s.name}”; its customers stay`); load(); }
    catch (err) { toast(describe(err), "error"); }
  }

  load();
  // Counts move as events arrive: re-read the page every few seconds while it is visible.
  const timer = setInterval(() => { if (document.visibilityState === "visible") load(true); }, POLL_MS);
  return () => clearInterval(timer);
}

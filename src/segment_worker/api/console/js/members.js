// View Customers and Manage Customers of one segment: members (paginated), the pencil to Edit
// Customer, "Why?" (explain), and for a static segment Add Customers, remove, Import CSV.
import { get, post, del, api, describe } from "./api.js";
import { h, field, toast, openDialog, confirmDialog, fmtDate, tagChips, attrList, optOutBadge, table, debounce, fill } from "./ui.js";
import { editCustomer, explainDialog } from "./customer.js";

const MAX_CSV = 10 * 1024 * 1024; // CONTRACT §10: 10 MB = 10,485,760 bytes

export async function membersPage(main, id, mode) {
  let segment = await get(`/segments/${id}`);
  const manage = mode === "manage";
  const isStatic = segment.type === "static";
  const state = { limit: 10, cursors: [null], page: 0 };
  const selected = new Set();
  const list = h("div", {});
  const heading = h("h1", {}, manage ? `Manage Customers · ${segment.name}` : `Customers in ${segment.name}`);
  const countLine = h("p", { class: "muted", id: "member-count" });
  const removeBtn = h("button", { type: "button", id: "remove-selected", disabled: true, onclick: removeSelected }, "Remove selected");
  const whyInput = h("input", { type: "text", id: "why-customer", placeholder: "Customer id", autocomplete: "off" });

  fill(main, 
    h("div", { class: "crumbs" }, h("a", { href: "#/segments" }, "Segments"), " / ", segment.name),
    h("div", { class: "page-head" }, h("div", {}, heading, countLine),
      h("div", { class: "actions" },
        manage && isStatic ? [
          h("button", { type: "button", id: "add-customers", onclick: addCustomers }, "Add Customers"),
          h("button", { type: "button", id: "import-csv", class: "primary", onclick: importCsv }, "Import CSV")] : null,
        !manage ? h("a", { class: "button", href: `#/segments/${id}/manage` }, "Manage Customers") : null,
        h("a", { class: "button", href: `#/segments/${id}/edit` }, "Edit segment"))),
    manage && !isStatic ? h("div", { class: "banner info", role: "note", id: "dynamic-banner" },
      h("strong", {}, "This is a dynamic segment: its filters decide who is in it. "),
      "Customers join and leave by themselves as their data changes; to change who is in it, ",
      h("a", { href: `#/segments/${id}/edit` }, "edit its filters"), ".") : null,
    h("div", { class: "panel flush" }, manage && isStatic ? h("div", { class: "toolbar" }, removeBtn) : null, list),
    isStatic ? null : h("section", { class: "panel", "aria-labelledby": "why-title" },
      h("h2", { id: "why-title" }, "Why is a customer in or out?"),
      h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); if (whyInput.value.trim()) explainDialog(segment, whyInput.value.trim()); } },
        h("label", { for: "why-customer", class: "skip" }, "Customer id"), whyInput,
        h("button", { type: "submit" }, "Explain"))));

  async function load() {
    let page;
    try {
      [segment, page] = await Promise.all([get(`/segments/${id}`),
        get(`/segments/${id}/members`, { limit: state.limit, cursor: state.cursors[state.page] })]);
    } catch (err) { fill(list, h("div", { class: "banner error", role: "alert" }, describe(err))); return; }
    state.cursors[state.page + 1] = page.next_cursor;
    const kind = segment.type === "dynamic" ? "Dynamic" : "Static";
    countLine.textContent = `${page.total.toLocaleString()} members · ${kind}: ${segment.filter_summary}`;
    selected.clear(); syncRemove();
    if (!page.items.length) {
      fill(list, h("div", { class: "empty" },
        isStatic ? "No members yet. Add customers or import a CSV." : "No customer matches the filters now."));
      return;
    }
    const headers = [
      ...(manage && isStatic ? [{ label: "Select" }] : []),
      { label: "Customer" }, { label: "Opt-out" }, { label: "Attributes" }, { label: "Tags" }, { label: "Joined" }, { label: "Actions" }];
    const rows = page.items.map((c) => [
      ...(manage && isStatic ? [h("input", { type: "checkbox", "aria-label": `Select ${c.name || c.customer_id}`,
        onchange: (e) => { if (e.target.checked) selected.add(c.customer_id); else selected.delete(c.customer_id); syncRemove(); } })] : []),
      [h("a", { href: `#/customers/${encodeURIComponent(c.customer_id)}`, class: "seg-name" }, c.name || c.phone || c.customer_id),
        h("div", { class: "desc" }, [c.phone, c.email].filter(Boolean).join(" · ") || c.customer_id)],
      optOutBadge(c.marketing_opt_out), attrList(c.attributes), h("div", {}, tagChips(c.tags)),
      h("span", { class: "nowrap" }, fmtDate(c.joined_at, true)),
      h("div", { class: "row-actions" },
        h("button", { type: "button", class: "icon", "aria-label": `Edit customer ${c.name || c.customer_id}`, title: "Edit customer",
          onclick: async () => { if (await editCustomer(c.customer_id)) load(); } }, "✎"),
        // A static segment has no rules to explain: its members were added by hand or import.
        isStatic ? null : h("button", { type: "button", class: "icon", "aria-label": `Why is ${c.name || c.customer_id} in?`,
          onclick: () => explainDialog(segment, c.customer_id) }, "Why?")),
    ]);
    const first = state.page * state.limit + 1;
    fill(list, table(headers, rows, { caption: "Members" }), h("nav", { class: "pager", "aria-label": "Pages" },
      h("label", { for: "member-rows" }, "Rows per page"),
      h("select", { id: "member-rows", onchange: (e) => { state.limit = Number(e.target.value); state.cursors = [null]; state.page = 0; load(); } },
        [10, 25, 50].map((n) => h("option", { value: n, selected: n === state.limit }, n))),
      h("span", {}, `${first}–${first + page.items.length - 1} of ${page.total}`),
      h("button", { type: "button", disabled: state.page === 0, onclick: () => { state.page -= 1; load(); } }, "‹ Prev"),
      h("button", { type: "button", disabled: !page.next_cursor, onclick: () => { state.page += 1; load(); } }, "Next ›")));
  }

  function syncRemove() {
    removeBtn.disabled = !selected.size;
    removeBtn.textContent = selected.size ? `Remove ${selected.size} selected` : "Remove selected";
  }

  async function removeSelected() {
    const ids = [...selected];
    const text = `${ids.length} customers leave “${segment.name}”. The customers themselves stay.`;
    if (!(await confirmDialog("Remove from segment?", text, "Remove", true))) return;
    try { const r = await del(`/segments/${id}/members`, { customer_ids: ids }); toast(`Removed ${r.removed} customers`); load(); }
    catch (err) { toast(describe(err), "error"); }
  }

  async function addCustomers() {
    const picked = new Map();
    const q = h("input", { type: "search", id: "candidate-q", placeholder: "Name or phone", autocomplete: "off" });
    const results = h("ul", { class: "result-list", id: "candidates", "aria-label": "Customers not in this segment" });
    const addBtn = h("button", { type: "button", class: "primary", id: "add-picked", disabled: true }, "Add 0 customers");
    const sync = () => { addBtn.disabled = !picked.size; addBtn.textContent = `Add ${picked.size} customer${picked.size === 1 ? "" : "s"}`; };
    const search = debounce(async () => {
      try {
        const page = await get(`/segments/${id}/candidates`, { q: q.value.trim(), limit: 25 });
        fill(results, ...(page.items.length ? page.items.map((c) => h("li", {}, h("label", { class: "check" },
          h("input", { type: "checkbox", checked: picked.has(c.customer_id), onchange: (e) => {
            if (e.target.checked) picked.set(c.customer_id, c); else picked.delete(c.customer_id); sync();
          } }), h("span", {}, c.name || c.customer_id, h("span", { class: "muted" }, ` · ${c.phone || c.customer_id}`)))))
          : [h("li", { class: "muted" }, "No customer outside this segment matches.")]));
      } catch (err) { fill(results, h("li", { class: "error-text" }, describe(err))); }
    }, 250);
    q.addEventListener("input", search);
    search();
    const done = await openDialog({
      title: "Add Customers", wide: true,
      body: h("div", {}, field("Search customers by name or phone", q), results),
      onOpen: () => q.focus(),
      actions: (close) => {
        addBtn.addEventListener("click", async () => {
          try { close(await post(`/segments/${id}/members`, { customer_ids: [...picked.keys()] })); }
          catch (err) { toast(describe(err), "error"); }
        });
        return [h("button", { type: "button", onclick: () => close() }, "Cancel"), addBtn];
      },
    });
    if (done) { toast(`Added ${done.added} customers` + (done.already_members ? `, ${done.already_members} were members` : "")); load(); }
  }

  async function importCsv() {
    let file = null;
    // The file input sits inside the drop zone (visually hidden, still focusable: keyboard users
    // Tab to the zone and press Space/Enter to choose a file).
    const input = h("input", { type: "file", id: "csv-file", accept: ".csv,text/csv", class: "visually-hidden" });
    const chosen = h("p", { id: "csv-chosen", class: "muted" }, "No file chosen");
    const zone = h("label", { class: "dropzone", for: "csv-file", id: "dropzone" },
      input, h("strong", {}, "Drag a CSV file here"), h("div", { class: "muted" }, "or click to choose one · up to 10 MB"));
    const report = h("div", { id: "import-report", "aria-live": "polite" });
    const upload = h("button", { type: "button", class: "primary", id: "upload-csv", disabled: true }, "Import");
    const pick = (f) => {
      if (!f) return;
      if (f.size > MAX_CSV) {
        chosen.textContent = `${f.name} is larger than 10 MB; split it into smaller files.`;
        file = null; upload.disabled = true; return;
      }
      file = f; chosen.textContent = `${f.name} · ${(f.size / 1024).toFixed(1)} KB`; upload.disabled = false;
    };
    input.addEventListener("change", () => pick(input.files[0]));
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); pick(e.dataTransfer.files[0]); });
    upload.addEventListener("click", async () => {
      const form = new FormData(); form.append("file", file, file.name);
      upload.disabled = true;
      try { drawReport(report, await api("POST", `/segments/${id}/import`, { body: form })); load(); }
      catch (err) { fill(report, h("div", { class: "banner error", role: "alert" }, describe(err))); }
      finally { upload.disabled = false; }
    });
    await openDialog({
      title: "Bulk Import Customers from CSV", wide: true,
      body: h("div", {},
        h("p", {}, "A header row with a ", h("code", {}, "phone"), " column (required) and an optional ", h("code", {}, "name"),
          " column; comma or semicolon separated. Unknown phones become new customers."),
        zone, chosen,
        h("p", {}, h("button", { type: "button", class: "link", id: "sample-csv", onclick: downloadSample }, "Download sample CSV")),
        report),
      actions: (close) => [h("button", { type: "button", onclick: () => close() }, "Close"), upload],
    });
  }

  async function downloadSample() {
    try {
      const res = await api("GET", `/segments/${id}/import/sample.csv`, { raw: true });
      const url = URL.createObjectURL(await res.blob());
      const a = h("a", { href: url, download: "segment-import-sample.csv" });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (err) { toast(describe(err), "error"); }
  }

  load();
}

function drawReport(box, r) {
  const stat = (label, n, sid) => h("div", { class: "stat", id: sid }, h("b", {}, n.toLocaleString()), label);
  fill(box, 
    h("h3", {}, "Import report"),
    h("div", { class: "stats" }, stat("added", r.added, "rep-added"), stat("already members", r.already_members, "rep-already"),
      stat("new customers", r.created, "rep-created"), stat("invalid rows", r.invalid.length, "rep-invalid")),
    r.invalid.length ? table([{ label: "Line", num: true }, { label: "Value" }, { label: "Reason" }],
      r.invalid.map((i) => [String(i.line), i.value || "—", i.reason]), { caption: "Invalid rows" })
      : h("p", { class: "banner ok" }, "Every row was read."));
}

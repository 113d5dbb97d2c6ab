// One customer: the Edit Customer dialog (PATCH answers 202: the worker applies the events a
// moment later, so we re-read until the change shows), "Why is this customer in or out?"
// (explain), and the customer page with memberships and history.
import { get, patch, all, describe, ApiError } from "./api.js";
import { h, field, toast, openDialog, fmtDate, fmtValue, tagChips, attrList, optOutBadge, table, sleep, fill } from "./ui.js";
import { chipsInput, OP_LABELS } from "./rules.js";

/** Open Edit Customer; answers true once the saved change is visible (or false if cancelled). */
export async function editCustomer(customerId) {
  const [c, attributes] = await Promise.all([get(`/customers/${encodeURIComponent(customerId)}`), all("/attributes")]);
  const values = { ...c.attributes };
  let tags = [...c.tags];
  const inputs = attributes.map((a) => attributeInput(a, values));
  const optOut = h("input", { type: "checkbox", id: "edit-optout", checked: c.marketing_opt_out });
  const error = h("p", { class: "error-text", role: "alert", hidden: true });
  const status = h("p", { class: "muted small", "aria-live": "polite" });
  const saved = await openDialog({
    title: `Edit Customer · ${c.name || c.customer_id}`, wide: true,
    body: h("div", {},
      h("p", { class: "muted" }, [c.phone, c.email, c.customer_id].filter(Boolean).join(" · ")),
      h("h3", {}, "Attributes"),
      inputs.length ? h("div", { class: "form-grid" }, inputs) : h("p", { class: "muted" }, "No attributes declared in this workspace."),
      h("h3", {}, "Tags"),
      field("Tags (Enter adds, × removes)", chipsInput(tags, (v) => { tags = v; }, [], "edit-tags")),
      h("h3", {}, "Marketing"),
      h("label", { class: "check", for: "edit-optout" }, optOut, "Opted out of marketing messages"),
      error, status),
    actions: (close) => [
      h("button", { type: "button", onclick: () => close(false) }, "Cancel"),
      h("button", { type: "button", class: "primary", id: "save-customer", onclick: async (e) => {
        const body = {};
        const changedAttrs = {};
        for (const a of attributes) {
          const before = c.attributes[a.name] ?? null;
          const after = values[a.name] ?? null;
          if (JSON.stringify(before) !== JSON.stringify(after)) changedAttrs[a.name] = after;
        }
        if (Object.keys(changedAttrs).length) body.attributes = changedAttrs;
        const fold = (t) => t.toLowerCase();
        const add = tags.filter((t) => !c.tags.map(fold).includes(fold(t)));
        const remove = c.tags.filter((t) => !tags.map(fold).includes(fold(t)));
        if (add.length) body.tags_add = add;
        if (remove.length) body.tags_remove = remove;
        if (optOut.checked !== c.marketing_opt_out) body.marketing_opt_out = optOut.checked;
        if (!Object.keys(body).length) { close(false); return; }
        e.target.disabled = true;
        try {
          await patch(`/customers/${encodeURIComponent(customerId)}`, body);
          status.textContent = "Sent; waiting for the worker to apply it…";
          close(await waitApplied(customerId, body));
        } catch (err) {
          error.hidden = false;
          error.textContent = err instanceof ApiError && err.problems.length
            ? err.problems.map((p) => `${p.path.replace("$.attributes.", "")}: ${p.message}`).join("; ") : describe(err);
          e.target.disabled = false;
        }
      } }, "Save"),
    ],
  });
  return Boolean(saved);
}

// The API answers 202 once the events are published; re-read until the worker has applied them.
async function waitApplied(customerId, body) {
  for (let i = 0; i < 40; i += 1) {
    const now = await get(`/customers/${encodeURIComponent(customerId)}`);
    const tagsNow = now.tags.map((t) => t.toLowerCase());
    const ok = (body.marketing_opt_out === undefined || now.marketing_opt_out === body.marketing_opt_out)
      && (body.tags_add || []).every((t) => tagsNow.includes(t.toLowerCase()))
      && (body.tags_remove || []).every((t) => !tagsNow.includes(t.toLowerCase()))
      && Object.entries(body.attributes || {}).every(([k, v]) => JSON.stringify(now.attributes[k] ?? null) === JSON.stringify(v));
    if (ok) { toast("Customer updated"); return true; }
    await sleep(250);
  }
  toast("Saved; the worker has not applied it yet — it will show shortly.");
  return true;
}

function attributeInput(a, values) {
  const id = `attr-${a.name}`;
  const v = values[a.name];
  const set = (x) => { values[a.name] = x === "" ? null : x; };
  let input;
  if (a.type === "boolean") {
    input = h("select", { id, onchange: (e) => set(e.target.value === "" ? null : e.target.value === "true") },
      h("option", { value: "" }, "—"), h("option", { value: "true", selected: v === true }, "true"),
      h("option", { value: "false", selected: v === false }, "false"));
  } else if (a.type === "select" && a.options) {
    input = h("select", { id, onchange: (e) => set(e.target.value) }, h("option", { value: "" }, "—"),
      a.options.map((o) => h("option", { value: o, selected: o === v }, o)));
  } else if (a.type === "multi_select" && a.options) {
    // Declared options: tick them (an open multi_select takes free values below).
    const chosen = new Set(Array.isArray(v) ? v : []);
    input = h("div", { class: "options", role: "group", "aria-labelledby": `${id}-l`, id }, a.options.map((o) =>
      h("label", { class: "option-chip" }, h("input", { type: "checkbox", checked: chosen.has(o), onchange: (e) => {
        if (e.target.checked) chosen.add(o); else chosen.delete(o);
        set(chosen.size ? a.options.filter((x) => chosen.has(x)) : null);
      } }), o)));
    return h("div", { class: "field" }, h("span", { class: "label", id: `${id}-l` }, `${a.name} (${a.type})`), input);
  } else if (a.type === "multi_select") {
    input = chipsInput(Array.isArray(v) ? v : [], (x) => set(x.length ? x : null), [], id);
  } else {
    const type = a.type === "number" ? "number" : a.type === "date" ? "date" : "text";
    input = h("input", { type, id, value: v ?? "", step: a.type === "number" ? "any" : null,
      placeholder: a.type === "datetime" ? "2026-11-22T10:00:00Z" : "",
      oninput: (e) => set(a.type === "number" && e.target.value !== "" ? Number(e.target.value) : e.target.value) });
  }
  return field(`${a.name} (${a.type})`, input);
}

/** "Why is this customer in or out?": the segment's rule tree for the customer. */
export async function explainDialog(segment, customerId) {
  let body;
  try {
    const r = await get(`/segments/${segment.id}/explain/${encodeURIComponent(customerId)}`);
    body = h("div", { id: "explain" },
      h("p", { class: `banner ${r.matches ? "ok" : "info"}`, id: "explain-verdict" },
        h("strong", {}, customerId), r.matches ? ` is in “${segment.name}”.` : ` is not in “${segment.name}”.`),
      h("ul", { class: "tree" }, node(r.rule)));
  } catch (err) {
    body = h("div", { class: "banner error", role: "alert" },
      err instanceof ApiError && err.status === 404 ? `No customer “${customerId}” in this workspace.` : describe(err));
  }
  await openDialog({ title: "Why is this customer in or out?", body, wide: true,
    actions: (close) => [h("button", { type: "button", class: "primary", onclick: () => close() }, "Close")] });
}

const verdict = (ok) => h("span", { class: `badge ${ok ? "yes" : "no"}` }, ok ? "✓ true" : "✗ false");

function node(n) {
  if ("not" in n) return h("li", {}, h("div", { class: "node" }, verdict(n.result), h("b", {}, "NOT")), h("ul", {}, node(n.not)));
  for (const key of ["all", "any"]) {
    if (key in n) {
      return h("li", {}, h("div", { class: "node" }, verdict(n.result), h("b", {}, key === "all" ? "ALL of" : "ANY of")),
        h("ul", {}, n[key].map(node)));
    }
  }
  return h("li", { class: "cond-node" }, h("div", { class: "node" }, verdict(n.result),
    h("code", {}, n.field), h("span", {}, OP_LABELS[n.op] || n.op), "operand" in n ? h("code", {}, fmtValue(n.operand)) : null,
    h("span", { class: "muted" }, "— customer's value: "), h("b", {}, fmtValue(n.value))));
}

/** A customer's page: state, memberships (each with "Why?"), membership history. */
export async function customerPage(main, id) {
  const path = `/customers/${encodeURIComponent(id)}`;
  const c = await get(path);
  const history = h("div", { id: "history" });
  const info = (label, value) => h("div", {}, h("div", { class: "muted small" }, label), h("div", {}, value));
  fill(main, 
    h("div", { class: "crumbs" }, h("a", { href: "#/segments" }, "Segments"), " / Customer"),
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, c.name || c.customer_id),
      h("p", { class: "muted" }, [c.phone, c.email, c.customer_id].filter(Boolean).join(" · "))),
    h("div", { class: "actions" }, h("button", { type: "button", class: "primary", id: "edit-customer",
      onclick: async () => { if (await editCustomer(id)) customerPage(main, id); } }, "Edit Customer"))),
    h("div", { class: "grid2" },
      h("div", {},
        h("section", { class: "panel", "aria-labelledby": "mem-title" }, h("h2", { id: "mem-title" }, `Segments (${c.memberships.length})`),
          c.memberships.length ? table([{ label: "Segment" }, { label: "Type" }, { label: "Joined" }, { label: "" }],
            c.memberships.map((m) => [h("a", { href: `#/segments/${m.segment_id}/members` }, m.segment_name),
              h("span", { class: `badge ${m.type}` }, m.type), fmtDate(m.joined_at, true),
              m.type === "dynamic" ? h("button", { type: "button", class: "icon", "aria-label": `Why is this customer in ${m.segment_name}?`,
                onclick: () => explainDialog({ id: m.segment_id, name: m.segment_name }, id) }, "Why?") : ""]))
            : h("p", { class: "muted" }, "In no segment.")),
        h("section", { class: "panel", "aria-labelledby": "hist-title" }, h("h2", { id: "hist-title" }, "Membership history"), history)),
      h("section", { class: "panel", "aria-labelledby": "prof-title" }, h("h2", { id: "prof-title" }, "Profile"),
        h("div", { class: "grid2" }, info("Opt-out", optOutBadge(c.marketing_opt_out)), info("Language", fmtValue(c.language)),
          info("Country", fmtValue(c.country)), info("Platform", fmtValue(c.platform)),
          info("Created", fmtDate(c.created_at, true)), info("Last interaction", fmtDate(c.last_interaction_at, true))),
        h("h3", {}, "Tags"), h("div", {}, tagChips(c.tags)), h("h3", {}, "Attributes"), attrList(c.attributes))));

  const items = [];
  let cursor = null;
  async function more() {
    const page = await get(`${path}/history`, { limit: 20, cursor });
    items.push(...page.items); cursor = page.next_cursor;
    fill(history, items.length ? table([{ label: "When" }, { label: "Change" }, { label: "Segment" }, { label: "Cause" }],
      items.map((x) => [h("span", { class: "nowrap" }, fmtDate(x.time, true)),
        h("span", { class: `badge ${x.type === "segment.entered" ? "yes" : "no"}` }, x.type === "segment.entered" ? "entered" : "left"),
        x.segment_name, x.cause.kind.replaceAll("_", " ")]), { caption: "History" }) : h("p", { class: "muted" }, "No transitions yet."),
    cursor ? h("button", { type: "button", onclick: more }, "Load more") : null);
  }
  await more();
}

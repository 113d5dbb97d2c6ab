// Create / Edit a segment: name, description, the Dynamic toggle, the rule builder with the live
// count of the rule (customers/search, debounced), the "+N / −M" of an edit (preview-edit) and
// 422 problems shown at the row their JSON path names.
import { get, post, patch, put, all, ApiError, describe } from "./api.js";
import { h, field, toast, openDialog, debounce, fill } from "./ui.js";
import { fieldCatalog, fromJson, toJson, newGroup, newCondition, ruleBuilder, incomplete } from "./rules.js";

export async function editorPage(main, id) {
  const [segment, attributes, sample] = await Promise.all([
    id ? get(`/segments/${id}`) : null,
    all("/attributes"),
    post("/customers/search", { rules: { all: [] }, limit: 200 }).catch(() => ({ items: [] })),
  ]);
  const tags = [...new Set(sample.items.flatMap((c) => c.tags))].sort();
  const ctx = { fields: fieldCatalog(attributes), tags, onChange: () => refresh() };
  const root = segment && segment.rules ? fromJson(segment.rules) : newGroup("all", [newCondition()]);

  const name = h("input", { type: "text", id: "seg-name", value: segment ? segment.name : "", maxlength: "100", required: true });
  const nameError = h("p", { class: "error-text", role: "alert", hidden: true });
  const description = h("textarea", { id: "seg-description", maxlength: "500" }, segment ? segment.description || "" : "");
  const dynamic = h("input", { type: "checkbox", id: "seg-dynamic", role: "switch", checked: segment ? segment.type === "dynamic" : true,
    disabled: Boolean(segment) });
  const builderBox = h("div", { id: "rule-builder" });
  const filters = h("section", { "aria-labelledby": "filters-title" },
    h("h2", { id: "filters-title" }, "Filters"),
    h("p", { class: "muted small" }, "Customers join and leave automatically as their data changes."), builderBox);
  const formError = h("div", { class: "banner error", role: "alert", hidden: true });
  const count = h("div", { class: "countbox", id: "live-count", "aria-live": "polite" }, "…");
  const countNote = h("p", { class: "muted small", id: "live-count-note" }, "customers match these filters now");
  const impact = h("div", { id: "impact", "aria-live": "polite" });
  const attrList = h("ul", { class: "attr-list", id: "attr-list" });
  const save = h("button", { type: "submit", class: "primary", id: "save-segment" }, segment ? "Save changes" : "Create segment");

  const form = h("form", { class: "panel", novalidate: true },
    formError,
    field("Segment name (required)", name, "e.g. “Premium customer list” or “Newsletter Subscribers”"), nameError,
    field("Description (optional)", description),
    h("div", { class: "field" }, h("label", { class: "switch", for: "seg-dynamic" }, dynamic, "Dynamic segment"),
      h("div", { class: "hint" }, segment ? "The type of a segment cannot change after it is created."
        : "Off: a static list you fill by hand or CSV. On: filters keep the segment in sync.")),
    filters,
    h("div", { class: "actions" }, save, h("a", { class: "button", href: "#/segments" }, "Cancel")));
  const side = h("aside", { class: "sticky" },
    h("section", { class: "panel", "aria-labelledby": "count-title", id: "count-panel" },
      h("h2", { id: "count-title" }, "Matching customers"), count, countNote, impact),
    h("section", { class: "panel", "aria-labelledby": "attrs-title" },
      h("h2", { id: "attrs-title" }, "Custom attributes"),
      h("p", { class: "muted small" }, "Declared attributes can be used in filters."),
      attrList, h("button", { type: "button", id: "declare-attr", onclick: declare }, "+ Declare attribute")));

  fill(main, 
    h("div", { class: "crumbs" }, h("a", { href: "#/segments" }, "Segments"), " / ", segment ? segment.name : "New"),
    h("div", { class: "page-head" }, h("h1", {}, segment ? `Edit “${segment.name}”` : "Create Segment")),
    h("div", { class: "grid2" }, form, side));

  const builder = ruleBuilder(builderBox, root, ctx);
  drawAttributes();

  function drawAttributes() {
    fill(attrList, ...(attributes.length ? attributes.map((a) => h("li", {}, h("span", {}, a.name),
      h("span", { class: "muted" }, a.type + (a.options ? ` · ${a.options.length} options` : ""))))
      : [h("li", { class: "muted" }, "None declared yet.")]));
  }

  function syncType() {
    filters.hidden = !dynamic.checked;
    document.getElementById("count-panel").hidden = !dynamic.checked;
    if (dynamic.checked) refresh();
  }
  dynamic.addEventListener("change", syncType);

  // The live count and the edit impact follow the builder (debounced: one call per pause).
  let seq = 0;
  const refresh = debounce(async () => {
    if (!dynamic.checked) return;
    const mine = ++seq;
    if (incomplete(root)) {
      // A row still being filled in: no count yet, and no error for what is not typed yet.
      builder.clearProblems();
      count.textContent = "—";
      countNote.textContent = "Fill in every condition to see the count.";
      fill(impact);
      return;
    }
    const paths = new Map();
    const rules = toJson(root, paths);
    count.textContent = "…";
    try {
      const [found, preview] = await Promise.all([
        post("/customers/search", { rules, limit: 1 }),
        segment ? post(`/segments/${segment.id}/preview-edit`, { rules }) : null,
      ]);
      if (mine !== seq) return;
      builder.clearProblems();
      count.textContent = found.total.toLocaleString();
      countNote.textContent = "customers match these filters now";
      if (preview) drawImpact(preview);
    } catch (err) {
      if (mine !== seq) return;
      count.textContent = "—";
      if (err instanceof ApiError && err.status === 422) {
        builder.showProblems(err.problems, paths);
        countNote.textContent = "Fix the highlighted filters to see the count.";
      } else countNote.textContent = describe(err);
      fill(impact);
    }
  }, 350);

  function drawImpact(p) {
    const names = (list) => list.map((c) => c.name || c.phone || c.customer_id).join(", ");
    fill(impact, 
      h("h3", {}, "If you save this change"),
      h("div", { class: "impact", id: "impact-numbers" },
        h("span", { class: "plus", title: "would enter" }, `+${p.would_enter.toLocaleString()}`),
        h("span", { class: "minus", title: "would leave" }, `−${p.would_exit.toLocaleString()}`)),
      h("p", { class: "muted small" }, `${p.would_enter} would enter, ${p.would_exit} would leave.`),
      p.sample_enter.length ? h("p", { class: "small" }, h("b", {}, "Entering: "), names(p.sample_enter)) : null,
      p.sample_exit.length ? h("p", { class: "small" }, h("b", {}, "Leaving: "), names(p.sample_exit)) : null);
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    formError.hidden = true; nameError.hidden = true;
    if (!name.value.trim()) { showNameError("A segment needs a name."); return; }
    const paths = new Map();
    const body = { name: name.value.trim(), description: description.value.trim() || null };
    if (dynamic.checked) body.rules = toJson(root, paths);
    save.disabled = true;
    try {
      const saved = segment ? await patch(`/segments/${segment.id}`, body)
        : await post("/segments", { ...body, type: dynamic.checked ? "dynamic" : "static" });
      toast(`Saved “${saved.name}”: ${saved.member_count.toLocaleString()} members`);
      location.hash = saved.type === "static" && !segment ? `#/segments/${saved.id}/manage` : "#/segments";
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && err.problems.some((p) => p.path.startsWith("$.rules"))) {
        builder.showProblems(err.problems.filter((p) => p.path.startsWith("$.rules")), paths);
        formError.hidden = false;
        formError.textContent = "Some filters are not valid: see the highlighted rows.";
      } else if (err instanceof ApiError && (err.status === 409 || err.problems.some((p) => p.path === "$.name"))) {
        showNameError(err.message);
      } else { formError.hidden = false; formError.textContent = describe(err); }
    } finally { save.disabled = false; }
  });

  function showNameError(message) { nameError.hidden = false; nameError.textContent = message; name.focus(); }

  async function declare() {
    const declared = await attributeDialog();
    if (!declared) return;
    const i = attributes.findIndex((a) => a.name === declared.name);
    if (i >= 0) attributes[i] = declared; else attributes.push(declared);
    attributes.sort((a, b) => a.name.localeCompare(b.name));
    ctx.fields = fieldCatalog(attributes);
    drawAttributes(); builder.render();
    toast(`Declared attribute “${declared.name}” (${declared.type})`);
  }

  syncType();
  name.focus();
}

/** The "Declare attribute" dialog (PUT /attributes/{name}); answers the saved attribute. */
export function attributeDialog() {
  const name = h("input", { type: "text", pattern: "[A-Za-z0-9_.-]+", required: true });
  const type = h("select", {}, ["text", "number", "boolean", "date", "datetime", "select", "multi_select"].map((t) =>
    h("option", { value: t }, t)));
  const options = h("input", { type: "text", placeholder: "gold, silver, bronze" });
  const optionsField = field("Options (comma-separated)", options, "Leave empty for an open list.");
  optionsField.hidden = true;
  type.addEventListener("change", () => { optionsField.hidden = !type.value.includes("select"); });
  const error = h("p", { class: "error-text", role: "alert", hidden: true });
  return openDialog({
    title: "Declare a custom attribute",
    body: h("div", {}, field("Attribute name", name, "Used in filters as attributes.<name>."),
      field("Type", type), optionsField, error),
    onOpen: () => name.focus(),
    actions: (close) => [
      h("button", { type: "button", onclick: () => close() }, "Cancel"),
      h("button", { type: "button", class: "primary", onclick: async () => {
        const opts = options.value.split(",").map((o) => o.trim()).filter(Boolean);
        const body = { type: type.value, options: type.value.includes("select") && opts.length ? opts : null };
        try { close(await put(`/attributes/${encodeURIComponent(name.value.trim())}`, body)); }
        catch (err) { error.hidden = false; error.textContent = describe(err); }
      } }, "Declare"),
    ],
  });
}

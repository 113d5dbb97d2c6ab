// The rule builder: a model of groups and conditions, its JSON (CONTRACT §4), the inputs each
// field type takes, and the mapping of a 422's JSON path back to the row that caused it.
import { h, nextId, fill } from "./ui.js";

export const OPERATORS = {
  text: ["eq", "neq", "contains", "not_contains", "starts_with", "ends_with", "is_empty", "is_not_empty"],
  number: ["eq", "neq", "gt", "gte", "lt", "lte", "between", "is_empty", "is_not_empty"],
  boolean: ["is_true", "is_false", "is_empty", "is_not_empty"],
  date: ["on", "not_on", "before", "after", "between", "in_last_days", "older_than_days", "in_next_days",
    "is_today", "is_yesterday", "this_week", "last_week", "this_month", "last_month",
    "anniversary_today", "anniversary_this_month", "is_empty", "is_not_empty"],
  select: ["eq", "neq", "in", "not_in", "is_empty", "is_not_empty"],
  multi_select: ["contains_any", "contains_all", "not_contains_any", "not_contains_all", "is_empty", "is_not_empty"],
  tags: ["has", "not_has", "has_any_of", "has_all_of", "has_any_tag", "has_no_tags"],
};
OPERATORS.datetime = OPERATORS.date;

export const OP_LABELS = {
  eq: "is", neq: "is not", contains: "contains", not_contains: "does not contain", starts_with: "starts with",
  ends_with: "ends with", is_empty: "is empty", is_not_empty: "is not empty", gt: "greater than",
  gte: "at least", lt: "less than", lte: "at most", between: "between", is_true: "is true", is_false: "is false",
  on: "on", not_on: "not on", before: "before", after: "after", in_last_days: "in the last … days",
  older_than_days: "more than … days ago", in_next_days: "in the next … days", is_today: "is today",
  is_yesterday: "is yesterday", this_week: "this week", last_week: "last week", this_month: "this month",
  last_month: "last month", anniversary_today: "anniversary is today", anniversary_this_month: "anniversary this month",
  in: "is any of", not_in: "is none of", contains_any: "contains any of", contains_all: "contains all of",
  not_contains_any: "contains none of", not_contains_all: "does not contain all of", has: "has tag",
  not_has: "does not have tag", has_any_of: "has any of tags", has_all_of: "has all of tags",
  has_any_tag: "has any tag", has_no_tags: "has no tags",
};

const NO_OPERAND = new Set(["is_empty", "is_not_empty", "is_true", "is_false", "is_today", "is_yesterday",
  "this_week", "last_week", "this_month", "last_month", "anniversary_today", "anniversary_this_month",
  "has_any_tag", "has_no_tags"]);
const DAYS = new Set(["in_last_days", "older_than_days", "in_next_days"]);
const LISTS = new Set(["in", "not_in", "contains_any", "contains_all", "not_contains_any", "not_contains_all",
  "has_any_of", "has_all_of"]);

export const BUILTIN_FIELDS = [
  { key: "name", label: "Name", type: "text" },
  { key: "phone", label: "Phone", type: "text" },
  { key: "email", label: "Email", type: "text" },
  { key: "language", label: "Language", type: "select", hint: "ar, en, fr, …" },
  { key: "country", label: "Country", type: "select", hint: "OM, AE, …" },
  { key: "platform", label: "Platform", type: "select", suggest: ["whatsapp", "instagram", "webchat"] },
  { key: "tags", label: "Tags", type: "tags" },
  { key: "marketing_opt_out", label: "Marketing opt-out", type: "boolean" },
  { key: "created_at", label: "Created", type: "datetime" },
  { key: "last_interaction_at", label: "Last interaction", type: "datetime" },
  { key: "last_incoming_at", label: "Last incoming message", type: "datetime" },
];

/** The fields a rule can use: built-ins, then the workspace's declared attributes. */
export function fieldCatalog(attributes) {
  return [...BUILTIN_FIELDS, ...attributes.map((a) => ({
    key: `attributes.${a.name}`, label: a.name, type: a.type, options: a.options, custom: true,
  }))];
}

// ---- model <-> JSON ------------------------------------------------------------------------

export const newCondition = (field = "tags", op = "has") => ({ kind: "cond", field, op, value: "" });
export const newGroup = (op = "all", children = []) => ({ kind: "group", op, negate: false, children });

/** The builder model of a rule JSON (the root is always a group). */
export function fromJson(rule) {
  const node = toNode(rule);
  return node.kind === "group" ? node : newGroup("all", [node]);
}

function toNode(rule) {
  if (!rule || typeof rule !== "object") return newGroup();
  if ("not" in rule) {
    const inner = toNode(rule.not);
    const group = inner.kind === "group" && !inner.negate ? inner : newGroup("all", [inner]);
    group.negate = true;
    return group;
  }
  if (Array.isArray(rule.all)) return newGroup("all", rule.all.map(toNode));
  if (Array.isArray(rule.any)) return newGroup("any", rule.any.map(toNode));
  return { kind: "cond", field: rule.field, op: rule.op, value: "value" in rule ? rule.value : "" };
}

/** The rule JSON of the model; `paths` (if given) gets JSON path → model node, for 422s. */
export function toJson(node, paths, path = "$.rules") {
  if (node.kind === "cond") {
    paths?.set(path, node);
    const out = { field: node.field, op: node.op };
    if (!NO_OPERAND.has(node.op)) out.value = node.value;
    return out;
  }
  paths?.set(path, node);
  const inner = node.negate ? `${path}.not` : path;
  const body = { [node.op]: node.children.map((c, i) => toJson(c, paths, `${inner}.${node.op}[${i}]`)) };
  return node.negate ? { not: body } : body;
}

/** True when some condition still waits for its value (a row just added): not worth a 422. */
export function incomplete(node) {
  if (node.kind === "group") return node.children.some(incomplete);
  if (NO_OPERAND.has(node.op)) return false;
  const v = node.value;
  if (Array.isArray(v)) return v.length === 0 || v.some((x) => x === "" || x === null);
  return v === "" || v === null || v === undefined;
}

/** The model node a problem's path points at: the longest known prefix of the path. */
export function nodeForPath(paths, path) {
  let best = null;
  let bestLen = -1;
  for (const [p, node] of paths) {
    if ((path === p || path.startsWith(p + ".") || path.startsWith(p + "[")) && p.length > bestLen) {
      best = node; bestLen = p.length;
    }
  }
  return best;
}

/** The operand a new operator starts with (kept when it still fits). */
function operandFor(fieldDef, op, old) {
  if (NO_OPERAND.has(op)) return "";
  if (op === "between") return Array.isArray(old) && old.length === 2 ? old : ["", ""];
  if (LISTS.has(op)) return Array.isArray(old) ? old : [];
  if (Array.isArray(old)) return "";
  if (DAYS.has(op)) return typeof old === "number" ? old : 7;
  return old;
}

// ---- the builder view ----------------------------------------------------------------------

/**
 * Render the builder for `root` into `container`. `ctx` = {fields, tags, onChange}. Answers
 * {render, showProblems(problems, paths)}: problems [{path, message}] are shown at their row.
 */
export function ruleBuilder(container, root, ctx) {
  const errors = new Map(); // model node -> [messages]

  function changed() { errors.clear(); render(); ctx.onChange(); }
  function quiet() { ctx.onChange(); } // value typing: keep focus, no re-render

  function render() {
    const focusId = document.activeElement && document.activeElement.id;
    fill(container, groupView(root, null, 0));
    if (focusId) document.getElementById(focusId)?.focus();
  }

  function groupView(group, parent, depth) {
    const opSel = h("select", { "aria-label": "Match", id: `g-${depth}-${idOf(group)}`,
      onchange: (e) => { group.op = e.target.value; changed(); } },
    h("option", { value: "all", selected: group.op === "all" }, "ALL of (AND)"),
    h("option", { value: "any", selected: group.op === "any" }, "ANY of (OR)"));
    const notBox = h("input", { type: "checkbox", checked: group.negate, id: `n-${idOf(group)}`,
      onchange: (e) => { group.negate = e.target.checked; changed(); } });
    const head = h("div", { class: "group-head" },
      h("label", { class: "check" }, notBox, "NOT"),
      opSel, h("span", { class: "muted small" }, depth === 0 ? "of these conditions" : "nested group"),
      parent ? h("button", { type: "button", class: "link", onclick: () => {
        parent.children.splice(parent.children.indexOf(group), 1); changed();
      } }, "Remove group") : null);
    const box = h("div", { class: `group${group.negate ? " negated" : ""}`, role: "group",
      "aria-label": depth === 0 ? "Filters" : `Nested ${group.op === "all" ? "AND" : "OR"} group` }, head);
    for (const msg of errors.get(group) || []) box.append(h("p", { class: "error-text", role: "alert" }, msg));
    group.children.forEach((child) => box.append(child.kind === "group"
      ? groupView(child, group, depth + 1) : condView(child, group)));
    if (!group.children.length) box.append(h("p", { class: "muted small" },
      group.op === "all" ? "No conditions: every customer matches." : "No conditions: no customer matches."));
    box.append(h("div", { class: "builder-actions" },
      h("button", { type: "button", onclick: () => { group.children.push(newCondition()); changed(); } }, "+ Add Attribute"),
      depth < 4 ? h("button", { type: "button", onclick: () => {
        group.children.push(newGroup(group.op === "all" ? "any" : "all", [newCondition()])); changed();
      } }, "+ Add group") : null));
    return box;
  }

  function condView(cond, parent) {
    const def = ctx.fields.find((f) => f.key === cond.field) || { key: cond.field, label: cond.field, type: "text" };
    const n = idOf(cond);
    const fieldSel = h("select", { id: `f-${n}`, "aria-label": "Attribute", onchange: (e) => {
      cond.field = e.target.value;
      const nd = ctx.fields.find((f) => f.key === cond.field);
      cond.op = OPERATORS[nd.type][0];
      cond.value = operandFor(nd, cond.op, "");
      changed();
    } },
    h("optgroup", { label: "Customer fields" }, ctx.fields.filter((f) => !f.custom).map((f) =>
      h("option", { value: f.key, selected: f.key === cond.field }, f.label))),
    h("optgroup", { label: "Custom attributes" }, ctx.fields.filter((f) => f.custom).map((f) =>
      h("option", { value: f.key, selected: f.key === cond.field }, `${f.label} (${f.type})`))));
    const opSel = h("select", { id: `o-${n}`, "aria-label": "Operator", onchange: (e) => {
      cond.op = e.target.value; cond.value = operandFor(def, cond.op, cond.value); changed();
    } }, (OPERATORS[def.type] || OPERATORS.text).map((op) =>
      h("option", { value: op, selected: op === cond.op }, OP_LABELS[op] || op)));
    const msgs = errors.get(cond) || [];
    const row = h("div", { class: `cond${msgs.length ? " invalid" : ""}`, dataset: { field: cond.field } },
      fieldSel, opSel, valueInput(cond, def, n),
      h("button", { type: "button", class: "icon", "aria-label": `Remove condition on ${def.label}`, onclick: () => {
        parent.children.splice(parent.children.indexOf(cond), 1); changed();
      } }, "✕"));
    for (const msg of msgs) row.append(h("p", { class: "error-text", role: "alert" }, msg));
    return row;
  }

  function valueInput(cond, def, n) {
    const op = cond.op;
    if (NO_OPERAND.has(op)) return h("span", { class: "muted small" }, "");
    const isDate = def.type === "date" || def.type === "datetime";
    const set = (v) => { cond.value = v; quiet(); };
    if (op === "between") {
      const kind = isDate ? "date" : "number";
      const parse = (v) => (kind === "number" ? (v === "" ? "" : Number(v)) : v);
      const pair = [0, 1].map((i) => h("input", { type: kind, id: `v${i}-${n}`, "aria-label": i ? "To" : "From",
        value: cond.value[i] ?? "", oninput: (e) => { cond.value[i] = parse(e.target.value); quiet(); } }));
      return h("div", { class: "value-pair" }, pair[0], h("span", {}, "and"), pair[1]);
    }
    if (DAYS.has(op)) {
      return h("input", { type: "number", min: "0", max: "36500", step: "1", id: `v-${n}`, "aria-label": "Days",
        value: cond.value, oninput: (e) => set(e.target.value === "" ? "" : Number(e.target.value)) });
    }
    if (isDate) {
      return h("input", { type: "date", id: `v-${n}`, "aria-label": "Date", value: cond.value, oninput: (e) => set(e.target.value) });
    }
    if (def.type === "number") {
      return h("input", { type: "number", step: "any", id: `v-${n}`, "aria-label": "Value", value: cond.value,
        oninput: (e) => set(e.target.value === "" ? "" : Number(e.target.value)) });
    }
    if (LISTS.has(op)) {
      if (def.options && def.options.length) return optionChips(cond, def.options, n);
      return chipsInput(cond.value, (v) => set(v), def.type === "tags" ? ctx.tags : def.suggest, `v-${n}`);
    }
    if (def.type === "select" && def.options && def.options.length) {
      return h("select", { id: `v-${n}`, "aria-label": "Value", onchange: (e) => set(e.target.value) },
        h("option", { value: "" }, "Choose…"),
        def.options.map((o) => h("option", { value: o, selected: o === cond.value }, o)));
    }
    const suggestions = def.type === "tags" ? ctx.tags : def.suggest;
    const listId = suggestions ? nextId("dl") : null;
    return h("div", {}, h("input", { type: "text", id: `v-${n}`, "aria-label": "Value", value: cond.value,
      list: listId, placeholder: def.hint || "", oninput: (e) => set(e.target.value) }),
    listId ? h("datalist", { id: listId }, suggestions.map((s) => h("option", { value: s }))) : null);
  }

  function optionChips(cond, options, n) {
    return h("div", { class: "options", role: "group", "aria-label": "Values", id: `v-${n}` }, options.map((o) =>
      h("label", { class: "option-chip" }, h("input", { type: "checkbox", checked: cond.value.includes(o),
        onchange: (e) => {
          cond.value = e.target.checked ? [...cond.value, o] : cond.value.filter((x) => x !== o); quiet();
        } }), o)));
  }

  render();
  return {
    render,
    /** Show [{path, message}] next to the rows they name; answers how many found a row. */
    showProblems(problems, paths) {
      errors.clear();
      let placed = 0;
      for (const p of problems) {
        const node = nodeForPath(paths, p.path) || root;
        if (node !== root || p.path === "$.rules") placed += 1;
        errors.set(node, [...(errors.get(node) || []), p.message]);
      }
      render();
      return placed;
    },
    clearProblems() { if (errors.size) { errors.clear(); render(); } },
  };
}

/** A tag input: chips plus a text box (Enter or comma adds, Backspace removes the last). */
export function chipsInput(values, onChange, suggestions, id) {
  const list = [...values];
  const listId = suggestions && suggestions.length ? nextId("dl") : null;
  const input = h("input", { type: "text", id, "aria-label": "Add a value (Enter)", list: listId, placeholder: "Type, then Enter" });
  const box = h("div", { class: "chips-input" });
  function draw() {
    fill(box, ...list.map((v, i) => h("span", { class: "chip" }, v,
      h("button", { type: "button", "aria-label": `Remove ${v}`, onclick: () => { list.splice(i, 1); onChange([...list]); draw(); input.focus(); } }, "×"))),
    input, listId ? h("datalist", { id: listId }, suggestions.map((s) => h("option", { value: s }))) : "");
  }
  function add(refocus = true) {
    const v = input.value.trim().replace(/,$/, "");
    if (v && !list.includes(v)) { list.push(v); onChange([...list]); }
    input.value = ""; draw();
    if (refocus) input.focus();
  }
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === ",") { e.preventDefault(); add(); }
    else if (e.key === "Backspace" && !input.value && list.length) { list.pop(); onChange([...list]); draw(); input.focus(); }
  });
  input.addEventListener("change", () => { if (input.value && suggestions?.includes(input.value)) add(); });
  input.addEventListener("blur", () => { if (input.value.trim()) add(false); });
  draw();
  return box;
}

const ids = new WeakMap();
let counter = 0;
function idOf(node) {
  if (!ids.has(node)) ids.set(node, ++counter);
  return ids.get(node);
}

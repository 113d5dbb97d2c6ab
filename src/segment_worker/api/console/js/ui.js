// Small DOM helpers: an element builder (text is always set as text, never parsed as HTML, since
// names, tags and attributes are customer-supplied), dialogs, toasts, menus, formatting.

/** h("button", {class: "primary", onclick: f}, "Save") → an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected" || key === "multiple") el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let uid = 0;
/** A unique id for label/input pairs. */
export const nextId = (prefix = "f") => `${prefix}-${++uid}`;

/** A labelled form field: {label, input, hint?} → div.field. */
export function field(label, input, hint) {
  if (!input.id) input.id = nextId();
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input,
    hint ? h("div", { class: "hint" }, hint) : null);
}

/** Open a modal <dialog>; `build(close)` gives {title, body, actions}; answers what close() got. */
export function openDialog({ title, body, actions = [], wide = false, onOpen }) {
  return new Promise((resolve) => {
    const titleId = nextId("dlg");
    const dlg = h("dialog", { class: wide ? "wide" : "", "aria-labelledby": titleId });
    let result;
    const close = (value) => { result = value; dlg.close(); };
    const foot = h("div", { class: "dlg-foot" });
    dlg.append(
      h("div", { class: "dlg-head" }, h("h2", { id: titleId }, title),
        h("button", { type: "button", class: "icon", "aria-label": "Close", onclick: () => close(undefined) }, "✕")),
      h("div", { class: "dlg-body" }, body), foot);
    for (const a of typeof actions === "function" ? actions(close) : actions) foot.append(a);
    dlg.addEventListener("close", () => { dlg.remove(); resolve(result); });
    document.body.append(dlg);
    dlg.showModal();
    if (onOpen) onOpen(close, dlg);
  });
}

/** A confirmation dialog: answers true when confirmed. */
export function confirmDialog(title, message, confirmLabel, danger = false) {
  return openDialog({
    title, body: h("div", {}, message),
    actions: (close) => [
      h("button", { type: "button", onclick: () => close(false) }, "Cancel"),
      h("button", { type: "button", class: danger ? "danger" : "primary", onclick: () => close(true) }, confirmLabel),
    ],
  }).then(Boolean);
}

/** A passing message (role=status region, so screen readers hear it). */
export function toast(message, kind = "info") {
  const el = h("div", { class: `toast ${kind}` }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

/** A "⋯" menu button with keyboard support (arrows, Home/End, Escape) — items: [{label, onclick, danger}]. */
export function rowMenu(label, items) {
  const menuId = nextId("menu");
  const btn = h("button", { type: "button", class: "icon", "aria-haspopup": "menu", "aria-expanded": "false",
    "aria-controls": menuId, "aria-label": label }, "⋯");
  const menu = h("ul", { class: "menu", role: "menu", id: menuId, hidden: true });
  const buttons = items.map((item) => h("button", {
    type: "button", role: "menuitem", tabindex: "-1", class: item.danger ? "danger-text" : "",
    onclick: () => { hide(); item.onclick(); },
  }, item.label));
  buttons.forEach((b) => menu.append(h("li", { role: "none" }, b)));
  const wrap = h("div", { class: "menu-wrap" }, btn, menu);
  const outside = (e) => { if (!wrap.contains(e.target)) hide(); };
  function show() {
    menu.hidden = false; btn.setAttribute("aria-expanded", "true"); buttons[0].focus();
    document.addEventListener("pointerdown", outside);
  }
  function hide(focusButton = false) {
    menu.hidden = true; btn.setAttribute("aria-expanded", "false");
    document.removeEventListener("pointerdown", outside);
    if (focusButton) btn.focus();
  }
  btn.addEventListener("click", () => (menu.hidden ? show() : hide()));
  btn.addEventListener("keydown", (e) => { if (e.key === "ArrowDown") { e.preventDefault(); show(); } });
  menu.addEventListener("keydown", (e) => {
    const i = buttons.indexOf(document.activeElement);
    const move = { ArrowDown: i + 1, ArrowUp: i - 1, Home: 0, End: buttons.length - 1 }[e.key];
    if (move !== undefined) { e.preventDefault(); buttons[(move + buttons.length) % buttons.length].focus(); }
    else if (e.key === "Escape" || e.key === "Tab") { e.preventDefault(); hide(true); }
  });
  return wrap;
}

/** "2 Dec 2026, 10:04" in the browser's locale. */
export function fmtDate(iso, withTime = false) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return withTime
    ? d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })
    : d.toLocaleDateString(undefined, { dateStyle: "medium" });
}

/** A value shown to a person (arrays joined, null as a dash). */
export function fmtValue(v) {
  if (v === null || v === undefined || v === "") return "—";
  if (Array.isArray(v)) return v.length ? v.join(", ") : "—";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function debounce(fn, ms) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Tag chips of a customer. */
export const tagChips = (tags) => (tags && tags.length ? tags.map((t) => h("span", { class: "chip" }, t)) : h("span", { class: "muted" }, "—"));

/** Attribute list "tier: gold · score: 7". */
export function attrList(attrs) {
  const entries = Object.entries(attrs || {});
  if (!entries.length) return h("span", { class: "muted" }, "—");
  return h("div", { class: "kv" }, entries.map(([k, v], i) => [i ? " · " : "", `${k}: `, h("b", {}, fmtValue(v))]));
}

export const optOutBadge = (out) => (out ? h("span", { class: "badge no" }, "Opted out") : h("span", { class: "badge yes" }, "Subscribed"));

/** A table whose rows become cards on phones (labels from the headers). */
export function table(headers, rows, { caption } = {}) {
  return h("table", { class: "cards" },
    caption ? h("caption", { class: "skip" }, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: x.num ? "num" : "" }, x.label)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c, i) =>
      // One wrapper per cell: on phones the row is a card of label + content pairs.
      h("td", { "data-label": headers[i].label, class: headers[i].num ? "num" : (headers[i].cls || "") },
        h("div", { class: "cell" }, c)))))));
}

/** Replace el's children, skipping null/false (DOM replaceChildren would print "null"). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Campaign audience (POST /audiences: the deduplicated union minus opted-out customers, as a
// snapshot) and the workspace settings (timezone, default phone region, attributes).
import { get, put, post, all, describe } from "./api.js";
import { h, field, toast, table, fill } from "./ui.js";
import { attributeDialog } from "./editor.js";

export async function audiencePage(main) {
  const segments = await all("/segments");
  const picked = new Set();
  const filter = h("input", { type: "search", id: "aud-filter", placeholder: "Filter segments", autocomplete: "off" });
  const exclude = h("input", { type: "checkbox", id: "aud-exclude", checked: true });
  const list = h("ul", { class: "result-list", id: "aud-segments", "aria-label": "Segments" });
  const result = h("div", { id: "aud-result", "aria-live": "polite" });
  const build = h("button", { type: "button", class: "primary", id: "aud-build", disabled: true }, "Build audience");
  const draw = () => {
    const q = filter.value.trim().toLowerCase();
    fill(list, ...segments.filter((s) => s.name.toLowerCase().includes(q)).map((s) => h("li", {},
      h("label", { class: "check" }, h("input", { type: "checkbox", checked: picked.has(s.id), onchange: (e) => {
        if (e.target.checked) picked.add(s.id); else picked.delete(s.id);
        build.disabled = !picked.size;
        build.textContent = picked.size ? `Build audience from ${picked.size} segment${picked.size > 1 ? "s" : ""}` : "Build audience";
      } }), h("span", {}, s.name), h("span", { class: "muted" }, ` · ${s.member_count.toLocaleString()} members`)))));
  };
  filter.addEventListener("input", draw);
  build.addEventListener("click", async () => {
    build.disabled = true;
    try {
      const a = await post("/audiences", { segment_ids: [...picked], exclude_opted_out: exclude.checked });
      const names = segments.filter((s) => picked.has(s.id)).map((s) => s.name);
      fill(result, h("div", { class: "panel" },
        h("h2", {}, "Audience ready"),
        h("div", { class: "countbox", id: "aud-count" }, a.count.toLocaleString()),
        h("p", {}, `customers in ${names.join(" or ")}`, exclude.checked ? ", without opted-out customers" : "", " — each counted once."),
        h("p", { class: "banner info" }, h("strong", {}, "A snapshot: "),
          "the audience is saved as it is now; later changes to these segments (or deleting them) ",
          "do not change it. It expires after the configured lifetime (24 h by default)."),
        h("p", { class: "small" }, "Campaign senders read the Redis set ", h("code", { id: "aud-key" }, a.redis_key), ".")));
    } catch (err) { fill(result, h("div", { class: "banner error", role: "alert" }, describe(err))); }
    finally { build.disabled = !picked.size; }
  });
  fill(main, 
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Campaign audience"),
      h("p", { class: "muted" }, "Pick the segments a campaign goes to: each customer counts once, opted-out customers are left out."))),
    h("div", { class: "grid2" },
      h("section", { class: "panel", "aria-labelledby": "aud-pick" }, h("h2", { id: "aud-pick" }, "Segments"),
        field("Filter by name", filter), list,
        h("p", {}, h("label", { class: "check", for: "aud-exclude" }, exclude, "Leave out customers who opted out of marketing")),
        build),
      result));
  draw();
}

export async function settingsPage(main) {
  const [ws, attributes] = await Promise.all([get(""), all("/attributes")]);
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const tz = h("input", { type: "text", id: "ws-timezone", value: ws.timezone, list: "tz-list", autocomplete: "off" });
  const region = h("input", { type: "text", id: "ws-region", value: ws.default_region || "", maxlength: "2", placeholder: "OM" });
  const error = h("p", { class: "error-text", role: "alert", hidden: true });
  const attrBox = h("div", { id: "settings-attrs" });
  const drawAttrs = () => fill(attrBox, attributes.length
    ? table([{ label: "Name" }, { label: "Type" }, { label: "Options" }],
      attributes.map((a) => [h("code", {}, a.name), a.type, a.options ? a.options.join(", ") : "—"]), { caption: "Attributes" })
    : h("p", { class: "muted" }, "No attributes declared yet."));
  const form = h("form", { class: "panel", "aria-labelledby": "ws-title" },
    h("h2", { id: "ws-title" }, `Workspace “${ws.id}”`),
    field("Timezone", tz, "Calendar filters (on, this week, birthdays…) use it. Changing it recomputes those segments."),
    h("datalist", { id: "tz-list" }, zones.map((z) => h("option", { value: z }))),
    field("Default phone region", region, "Two letters (ISO 3166-1); CSV imports read national numbers in it."),
    error, h("button", { type: "submit", class: "primary", id: "save-settings" }, "Save settings"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault(); error.hidden = true;
    try {
      const saved = await put("", { timezone: tz.value.trim(), default_region: region.value.trim().toUpperCase() || null });
      toast(`Saved: ${saved.timezone}${saved.default_region ? `, region ${saved.default_region}` : ""}`);
    } catch (err) { error.hidden = false; error.textContent = describe(err); }
  });
  fill(main, 
    h("div", { class: "page-head" }, h("h1", {}, "Settings")),
    h("div", { class: "grid2" }, form,
      h("section", { class: "panel", "aria-labelledby": "attrs-h" }, h("h2", { id: "attrs-h" }, "Custom attributes"), attrBox,
        h("button", { type: "button", onclick: async () => {
          const a = await attributeDialog();
          if (a) { attributes.push(a); attributes.sort((x, y) => x.name.localeCompare(y.name)); drawAttrs(); toast(`Declared “${a.name}”`); }
        } }, "+ Declare attribute"))));
  drawAttrs();
}

// The console's shell: sign-in (token + workspace), the hash router, the header.
import { session, get, setUnauthorizedHandler, ApiError, describe } from "./api.js";
import { h, field, fill } from "./ui.js";
import { segmentsPage } from "./segments.js";
import { editorPage } from "./editor.js";
import { membersPage } from "./members.js";
import { customerPage } from "./customer.js";
import { audiencePage, settingsPage } from "./workspace.js";

const main = document.getElementById("main");

// Each view may return a cleanup (stop polling) that runs when the route changes.
let cleanup = null;

const ROUTES = [
  [/^#\/segments\/new$/, () => editorPage(main, null)],
  [/^#\/segments\/([^/]+)\/edit$/, (id) => editorPage(main, id)],
  [/^#\/segments\/([^/]+)\/(members|manage)$/, (id, mode) => membersPage(main, id, mode)],
  [/^#\/customers\/(.+)$/, (id) => customerPage(main, decodeURIComponent(id))],
  [/^#\/audience$/, () => audiencePage(main)],
  [/^#\/settings$/, () => settingsPage(main)],
  [/^#\/segments$/, () => segmentsPage(main)],
];

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  if (!session.token || !session.workspace) return signIn();
  showShell(true);
  const hash = location.hash || "#/segments";
  const found = ROUTES.find(([re]) => re.test(hash));
  if (!found) { location.hash = "#/segments"; return; }
  const section = hash.startsWith("#/audience") ? "audience" : hash.startsWith("#/settings") ? "settings" : "segments";
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  fill(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const result = await found[1](...hash.match(found[0]).slice(1));
    cleanup = typeof result === "function" ? result : null;
  } catch (err) {
    fill(main, h("div", { class: "banner error", role: "alert" }, describe(err)));
  }
  main.focus({ preventScroll: true });
}

function showShell(on) {
  document.getElementById("nav").hidden = !on;
  document.getElementById("session").hidden = !on;
  document.getElementById("ws-name").textContent = session.workspace;
}

function signIn(message) {
  showShell(false);
  const token = h("input", { type: "password", name: "token", autocomplete: "off", required: true });
  const ws = h("input", { type: "text", name: "workspace", value: session.workspace || "demo", required: true,
    autocomplete: "on", spellcheck: "false" });
  const error = h("div", { class: "banner error", role: "alert", hidden: !message }, message || "");
  const form = h("form", { class: "panel login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Open the segments console"),
    h("p", { class: "muted" }, "Paste the API token that ", h("code", {}, "segment-worker dev"),
      " or ", h("code", {}, "segment-worker tokens create"), " printed. It is kept only for this browser tab."),
    error,
    field("API token", token),
    field("Workspace", ws, "Remembered on this browser."),
    h("button", { type: "submit", class: "primary" }, "Open console"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    session.token = token.value.trim();
    session.workspace = ws.value.trim();
    signingIn = true;
    try {
      await get("");
      if (!location.hash || location.hash === "#/login") location.hash = "#/segments"; else route();
    } catch (err) {
      session.token = "";
      error.hidden = false;
      error.textContent = err instanceof ApiError && err.status === 401
        ? "This token is not known to the API." : err instanceof ApiError && err.status === 404
          ? "This token is not allowed to see that workspace." : describe(err);
    } finally {
      signingIn = false;
    }
  });
  fill(main, form);
  token.focus();
}

let signingIn = false; // a wrong token while signing in is answered on the form itself
setUnauthorizedHandler(() => { if (signingIn) return; session.token = ""; signIn("Your token is no longer accepted; paste it again."); });
document.getElementById("sign-out").addEventListener("click", () => { session.token = ""; if (cleanup) cleanup(); signIn(); });
document.getElementById("switch-ws").addEventListener("click", () => {
  const token = session.token; session.token = ""; if (cleanup) cleanup(); signIn();
  document.querySelector('input[name="token"]').value = token;
  document.querySelector('input[name="workspace"]').select();
});
window.addEventListener("hashchange", route);
route();

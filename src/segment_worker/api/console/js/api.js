// The /v1 client: the token from sessionStorage (gone when the tab closes), the workspace from
// localStorage (remembered). Every call sends Authorization: Bearer.

const TOKEN = "sw.token";
const WORKSPACE = "sw.workspace";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN) || ""; },
  set token(v) { if (v) sessionStorage.setItem(TOKEN, v); else sessionStorage.removeItem(TOKEN); },
  get workspace() { return localStorage.getItem(WORKSPACE) || ""; },
  set workspace(v) { localStorage.setItem(WORKSPACE, v); },
};

/** An error answer of the API: {status, code, message, details}. */
export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "error";
    this.details = err.details;
  }
  /** [{path, message}] of a validation error (422), else []. */
  get problems() { return Array.isArray(this.details) ? this.details.filter((d) => d && d.path) : []; }
}

// The console lives at <prefix>/console/, the API at <prefix>/v1: resolve against the page so a
// proxy prefix keeps working.
const root = () => new URL("../", new URL(".", document.baseURI));

/** The URL of a route under /v1/workspaces/{ws}. */
export function wsUrl(path, query) {
  const url = new URL(`v1/workspaces/${encodeURIComponent(session.workspace)}${path}`, root());
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  return url;
}

let onUnauthorized = () => {};
export const setUnauthorizedHandler = (fn) => { onUnauthorized = fn; };

/** Call a workspace route; answers the parsed JSON (null for 204) or throws ApiError. */
export async function api(method, path, { body, query, raw } = {}) {
  const headers = { Authorization: `Bearer ${session.token}` };
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
  const res = await fetch(wsUrl(path, query), { method, headers, body: payload });
  if (res.status === 401) onUnauthorized();
  if (!res.ok) {
    let parsed = null;
    try { parsed = await res.json(); } catch { /* not JSON: keep the status */ }
    throw new ApiError(res.status, parsed);
  }
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

export const get = (path, query) => api("GET", path, { query });
export const post = (path, body) => api("POST", path, { body });
export const patch = (path, body) => api("PATCH", path, { body });
export const put = (path, body) => api("PUT", path, { body });
export const del = (path, body) => api("DELETE", path, { body });

/** Every item of a paginated list (for small lists: segments, attributes). */
export async function all(path, limit = 500) {
  const items = [];
  let cursor;
  do {
    const page = await get(path, { limit, cursor });
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/** A person-readable sentence for an error. */
export function describe(err) {
  if (err instanceof ApiError) return `${err.message} (HTTP ${err.status})`;
  return `Could not reach the API: ${err.message}`;
}

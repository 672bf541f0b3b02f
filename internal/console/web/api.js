// The console's client of the native API, mounted under /console/api with
// the session cookie. The anti-forgery token lives only in this module's
// memory: never in storage, never in a URL.
const base = "/console/api";
let csrf = "";

export function setCSRF(token) {
  csrf = token || "";
}

export class APIError extends Error {
  constructor(status, body) {
    super(body.message || "request failed");
    this.status = status;
    this.code = body.code || "HTTP_" + status;
    this.details = body.details || {};
  }
}

export async function call(method, path, body, headers = {}) {
  const h = { Accept: "application/json", ...headers };
  const init = { method, headers: h, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    h["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET") h["X-CSRF-Token"] = csrf;
  let r;
  try {
    r = await fetch(base + path, init);
  } catch (e) {
    throw new APIError(0, { code: "NETWORK", message: "The server cannot be reached. Check the connection and try again." });
  }
  if (r.status === 204) return null;
  let data = null;
  try {
    data = await r.json();
  } catch (e) {
    data = null;
  }
  if (!r.ok) {
    throw new APIError(r.status, (data && data.error) || { code: "HTTP_" + r.status, message: r.statusText });
  }
  return data;
}

// openEvents follows the server's event stream; EventSource reconnects by
// itself and resumes after the last event id it saw.
export function openEvents(onEvent) {
  const es = new EventSource(base + "/v1/events");
  for (const type of ["instance", "item", "operation"]) {
    es.addEventListener(type, (e) => {
      try {
        onEvent(type, JSON.parse(e.data));
      } catch (err) {
        console.error(err);
      }
    });
  }
  return es;
}

function newIdempotencyKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// postPerTenant sends body with the ids of instances to path, one request
// per tenant (one operation belongs to one tenant: an admin's selection
// over several tenants becomes one operation each), each with its own
// Idempotency-Key. It returns the accepted operations and the refusal that
// stopped the rest, if any.
export async function postPerTenant(path, body, instances) {
  const groups = new Map();
  for (const i of instances) {
    if (!groups.has(i.tenant)) groups.set(i.tenant, []);
    groups.get(i.tenant).push(i.id);
  }
  const ops = [];
  try {
    for (const ids of groups.values()) {
      ops.push(await call("POST", path, { ...body, instanceIds: ids }, { "Idempotency-Key": newIdempotencyKey() }));
    }
  } catch (e) {
    return { ops, failure: e };
  }
  return { ops, failure: null };
}

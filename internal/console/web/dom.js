// h builds an element: h("a", {href: "#/x", class: "y"}, "text", child).
// Text is always set as text, never parsed as HTML.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

export function announce(msg) {
  const live = document.getElementById("live");
  live.textContent = "";
  setTimeout(() => (live.textContent = msg), 50);
}

const stateWords = {
  PENDING: "Pending", RUNNING: "Running", STOPPING: "Stopping", STOPPED: "Stopped", STARTING: "Starting",
  REBOOTING: "Rebooting", RESETTING_PASSWORD: "Resetting password", ERROR: "Error",
  UNKNOWN: "Unknown (host unreachable)", MISSING: "Missing from its host",
  SUCCESS: "Success", OPERATING: "Operating", FAILED: "Failed",
  running: "In progress", succeeded: "Succeeded", failed: "Failed", partial: "Partly failed", pending: "Pending",
};

export function badge(state) {
  // Lowercase "running" is an item or an operation still at work, not a
  // machine that is up: it gets the colour of work in progress.
  const cls = state === "running" ? "in-progress" : String(state).toLowerCase().replace(/_/g, "-");
  return h("span", { class: "badge badge-" + cls, "data-state": state }, stateWords[state] || state);
}

export const stepWords = {
  queued: "Queued", shutting_down: "Stopping", force_stopping: "Forcing a stop", stopped: "Stopped",
  staging: "Staging the password", starting: "Starting", waiting_for_guest: "Waiting for the guest agent",
  applying: "Applying", done: "Done",
};

export const kindWords = { reset_password: "Reset password", start: "Start", stop: "Stop", reboot: "Reboot" };

export function when(t) {
  if (!t) return "";
  const d = new Date(t);
  return d.toLocaleString();
}

export function focusables(root) {
  return Array.from(root.querySelectorAll(
    'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])'
  )).filter((el) => el.offsetParent !== null || el === document.activeElement);
}

// trapFocus keeps keyboard focus inside a modal dialog: Tab from its last
// control goes to its first, Shift+Tab from its first to its last.
export function trapFocus(dlg) {
  dlg.addEventListener("keydown", (ev) => {
    if (ev.key !== "Tab") return;
    const f = focusables(dlg);
    if (!f.length) return;
    const first = f[0], last = f[f.length - 1];
    if (ev.shiftKey && document.activeElement === first) { ev.preventDefault(); last.focus(); }
    else if (!ev.shiftKey && document.activeElement === last) { ev.preventDefault(); first.focus(); }
  });
}

// The console's application: sign-in, the instance list, the instance
// detail, the operations history and the live progress of an operation.
// Routes live in the URL's fragment (#/instances ...): nothing secret ever
// goes there.
import { h, clear, badge, stepWords, kindWords, when, announce } from "./dom.js";
import { call, setCSRF, openEvents, APIError } from "./api.js";
import { violations } from "./policy.js";
import { openResetDialog } from "./reset.js";
import { openPowerDialog } from "./power.js";

const main = document.getElementById("main");
const state = {
  session: null,
  events: null,
  // view-specific hooks for live events
  onEvent: null,
  selection: new Map(), // id -> instance, kept across pages
  list: { namePrefix: "", state: "", os: "", limit: 50, cursors: [""], page: 0 },
  // The generated passwords of just accepted operations (id -> password),
  // each shown on its operation's page until the user leaves them.
  generated: null,
  // The operations one request became, one per tenant (an admin's selection
  // over several tenants), listed on each of their pages.
  split: null,
};

// ---- session

async function boot() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", route);
  try {
    const s = await call("GET", "/session");
    startSession(s);
  } catch (e) {
    showSignIn();
  }
}

function startSession(s) {
  state.session = s;
  setCSRF(s.csrfToken);
  if (s.mustChangePassword) {
    showChangePassword();
    return;
  }
  document.getElementById("top").hidden = false;
  document.getElementById("nav-users").hidden = !s.admin;
  document.getElementById("who").textContent = `Signed in as ${s.user} (tenant ${s.tenant}${s.admin ? ", admin" : ""})`;
  if (!state.events) state.events = openEvents(dispatchEvent);
  if (!location.hash || location.hash === "#" || location.hash === "#/sign-in") location.hash = "#/instances";
  else route();
}

async function signOut() {
  try {
    await call("POST", "/sign-out");
  } catch (e) {
    // The session is gone either way on this page.
  }
  endSession("You are signed out.");
}

function endSession(msg) {
  if (state.events) state.events.close();
  state.events = null;
  state.session = null;
  state.selection.clear();
  state.generated = null;
  setCSRF("");
  document.getElementById("top").hidden = true;
  history.replaceState(null, "", "#/sign-in");
  showSignIn(msg);
}

function failed(e) {
  if (e instanceof APIError && e.status === 401) {
    endSession("Your session has ended. Sign in again.");
    return true;
  }
  return false;
}

function showSignIn(msg) {
  document.getElementById("top").hidden = true;
  clear(main);
  const user = h("input", { id: "signin-user", name: "username", autocomplete: "username", required: true });
  const pw = h("input", { id: "signin-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const err = h("p", { class: "form-error", id: "signin-error", role: "alert", hidden: true });
  const info = msg ? h("p", { class: "info", id: "signin-info", role: "status" }, msg) : null;
  const form = h("form", { class: "card narrow", id: "signin-form", novalidate: true },
    h("h1", {}, "Sign in to fleetpass"), info, err,
    h("div", { class: "field" }, h("label", { for: user.id }, "User name"), user),
    h("div", { class: "field" }, h("label", { for: pw.id }, "Password"), pw),
    h("button", { type: "submit", id: "signin-submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    try {
      const s = await call("POST", "/sign-in", { user: user.value, password: pw.value });
      pw.value = "";
      startSession(s);
    } catch (e) {
      pw.value = "";
      err.textContent = e.code === "SIGN_IN_FAILED" ? "Wrong user name or password." : e.message;
      err.hidden = false;
      pw.focus();
    }
  });
  main.appendChild(form);
  user.focus();
}

async function showChangePassword() {
  clear(main);
  const spec = await call("GET", "/password-policy?for=console");
  const cur = h("input", { id: "cp-current", type: "password", autocomplete: "current-password" });
  const pw = h("input", { id: "cp-new", type: "password", autocomplete: "new-password", "aria-describedby": "cp-rules" });
  const confirm = h("input", { id: "cp-confirm", type: "password", autocomplete: "new-password" });
  const err = h("div", { class: "form-error", id: "cp-error", role: "alert", hidden: true });
  const rules = h("ul", { class: "rules", id: "cp-rules" });
  const render = () => {
    clear(rules);
    const broken = violations(spec, pw.value, [state.session.user]);
    for (const r of spec.rules) {
      const st = pw.value === "" ? "todo" : broken.includes(r.code) ? "bad" : "ok";
      rules.appendChild(h("li", { class: "rule rule-" + st, "data-rule": r.code, "data-state": st }, "The password " + r.message + "."));
    }
  };
  pw.addEventListener("input", render);
  render();
  const form = h("form", { class: "card narrow", id: "cp-form", novalidate: true },
    h("h1", {}, "Choose your own password"),
    h("p", {}, "This is your first sign-in with the initial password. Choose a new password to continue."),
    err,
    h("div", { class: "field" }, h("label", { for: cur.id }, "Current password"), cur),
    h("div", { class: "field" }, h("label", { for: pw.id }, "New password"), pw),
    rules,
    h("div", { class: "field" }, h("label", { for: confirm.id }, "Confirm password"), confirm),
    h("button", { type: "submit", id: "cp-submit" }, "Change password"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    if (pw.value !== confirm.value) {
      err.textContent = "The passwords do not match.";
      err.hidden = false;
      confirm.focus();
      return;
    }
    try {
      const s = await call("POST", "/password", { current: cur.value, new: pw.value });
      cur.value = pw.value = confirm.value = "";
      startSession(s);
    } catch (e) {
      if (failed(e)) return;
      err.textContent = sentence(e.message);
      err.hidden = false;
    }
  });
  main.appendChild(form);
  cur.focus();
}

// ---- routing

function route() {
  if (!state.session || state.session.mustChangePassword) return;
  state.onEvent = null;
  state.refreshSelection = null;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  for (const a of document.querySelectorAll("nav a")) a.removeAttribute("aria-current");
  if (parts[0] === "operations" && parts[1]) showOperation(decodeURIComponent(parts[1]));
  else if (parts[0] === "operations") { mark("nav-operations"); showOperations(); }
  else if (parts[0] === "users" && state.session.admin) { mark("nav-users"); showUsers(); }
  else if (parts[0] === "instances" && parts[1]) showInstance(decodeURIComponent(parts[1]));
  else { mark("nav-instances"); showInstances(); }
  if (!(parts[0] === "operations" && parts[1])) { state.generated = null; state.split = null; }
}

function mark(id) {
  document.getElementById(id).setAttribute("aria-current", "page");
}

function dispatchEvent(type, ev) {
  if (state.onEvent) state.onEvent(type, ev);
}

// sentence capitalises a server message to read as a sentence.
function sentence(s) {
  s = String(s || "");
  return s.charAt(0).toUpperCase() + s.slice(1) + (/[.!?]$/.test(s) ? "" : ".");
}

function title(text) {
  document.title = text + " · fleetpass";
  return h("h1", { id: "page-title", tabindex: "-1" }, text);
}

// ---- instance list

function instanceRow(inst, refresh) {
  const checked = state.selection.has(inst.id);
  const cb = h("input", { type: "checkbox", class: "row-select", "aria-label": "Select " + inst.name, checked });
  cb.addEventListener("change", () => {
    if (cb.checked) state.selection.set(inst.id, inst);
    else state.selection.delete(inst.id);
    refresh();
  });
  const tr = h("tr", { "data-id": inst.id },
    h("td", { class: "col-select" }, cb),
    h("td", { class: "col-id mono" }, inst.id),
    h("td", { class: "col-name" }, h("a", { href: "#/instances/" + encodeURIComponent(inst.id) }, inst.name)),
    h("td", { class: "col-state" }, badge(inst.state)),
    h("td", { class: "col-os" }, inst.osType === "windows" ? "Windows" : "Linux"),
    h("td", { class: "col-agent" }, agentCell(inst)),
    h("td", { class: "col-op" }, latestOp(inst)),
    h("td", { class: "col-more" }, moreMenu(inst)));
  return tr;
}

// updateRow changes a row's live cells in place, so an open menu, the
// focus and the checkbox survive the event.
function updateRow(tr, inst) {
  const set = (sel, node) => {
    const td = tr.querySelector(sel);
    clear(td);
    td.appendChild(node);
  };
  set(".col-state", badge(inst.state));
  set(".col-agent", agentCell(inst));
  set(".col-op", latestOp(inst));
}

function agentCell(inst) {
  if (inst.noGuestChannel) {
    return h("span", { class: "dead", "data-alive": "false", title: "The VM has no QEMU guest agent channel: no password can reach it." },
      "No agent channel");
  }
  return h("span", { class: inst.guestAlive ? "alive" : "dead", "data-alive": String(inst.guestAlive) },
    inst.guestAlive ? "Alive" : "Not alive");
}

function latestOp(inst) {
  const op = inst.latestOperation;
  if (!op) return h("span", { class: "muted" }, "None");
  return h("span", {}, h("a", { href: "#/operations/" + encodeURIComponent(op.id) }, kindWords[op.kind] || op.kind), " ", badge(op.state));
}

// moreMenu is the row's More menu: Instance status > Start, Stop,
// Reboot, and Password/key > Reset Password. One submenu is open at a
// time; arrow keys move into and out of them.
function moreMenu(inst) {
  const wrap = h("div", { class: "menu-wrap" });
  const btn = h("button", { type: "button", class: "secondary more", "aria-haspopup": "menu", "aria-expanded": "false",
    "aria-label": "More actions for " + inst.name }, "More");
  const groups = [
    { label: "Instance status", cls: "menu-power", items: [
      { label: "Start", cls: "menu-start", run: () => startPower("start", [inst]) },
      { label: "Stop", cls: "menu-stop", run: () => startPower("stop", [inst]) },
      { label: "Reboot", cls: "menu-reboot", run: () => startPower("reboot", [inst]) },
    ] },
    { label: "Password/key", cls: "menu-password", items: [
      { label: "Reset Password", cls: "menu-reset", run: () => startReset([inst]) },
    ] },
  ];
  const menu = h("div", { role: "menu", class: "menu", "aria-label": "More", hidden: true });
  const heads = [];
  const subs = [];
  const closeSubs = () => {
    subs.forEach((s) => (s.hidden = true));
    heads.forEach((x) => x.setAttribute("aria-expanded", "false"));
  };
  // The menu floats over the page (fixed), so the table's scrolling box
  // does not clip it; it opens upwards when there is no room below, and
  // closes when the page scrolls away from it.
  const place = () => {
    const r = btn.getBoundingClientRect();
    menu.style.position = "fixed";
    menu.style.right = Math.max(0, document.documentElement.clientWidth - r.right) + "px";
    const mh = menu.offsetHeight;
    menu.style.top = (r.bottom + mh > window.innerHeight && r.top - mh > 0 ? r.top - mh : r.bottom) + "px";
  };
  const close = (focusBtn) => {
    menu.hidden = true;
    closeSubs();
    btn.setAttribute("aria-expanded", "false");
    document.removeEventListener("click", outside, true);
    window.removeEventListener("scroll", onScroll, true);
    if (focusBtn) btn.focus();
  };
  const outside = (ev) => { if (!wrap.contains(ev.target)) close(false); };
  const onScroll = (ev) => { if (!menu.contains(ev.target)) close(false); };
  for (const g of groups) {
    const head = h("button", { type: "button", role: "menuitem", class: g.cls, "aria-haspopup": "menu", "aria-expanded": "false" }, g.label + " ▸");
    const items = g.items.map((it) => {
      const b = h("button", { type: "button", role: "menuitem", class: it.cls }, it.label);
      b.addEventListener("click", () => { close(true); it.run(); });
      b.addEventListener("keydown", (ev) => { if (ev.key === "ArrowLeft") { ev.preventDefault(); sub.hidden = true; head.focus(); } });
      return b;
    });
    const sub = h("div", { role: "menu", class: "menu submenu", "aria-label": g.label, hidden: true }, items);
    const open = () => { closeSubs(); sub.hidden = false; head.setAttribute("aria-expanded", "true"); place(); items[0].focus(); };
    head.addEventListener("click", open);
    head.addEventListener("keydown", (ev) => { if (ev.key === "ArrowRight") { ev.preventDefault(); open(); } });
    heads.push(head);
    subs.push(sub);
    menu.append(head, sub);
  }
  btn.addEventListener("click", () => {
    if (!menu.hidden) { close(false); return; }
    for (const m of document.querySelectorAll(".menu:not([hidden])")) m.hidden = true;
    menu.hidden = false;
    place();
    btn.setAttribute("aria-expanded", "true");
    heads[0].focus();
    document.addEventListener("click", outside, true);
    window.addEventListener("scroll", onScroll, true);
  });
  wrap.addEventListener("keydown", (ev) => {
    if (menu.hidden) return;
    if (ev.key === "Escape") { ev.stopPropagation(); close(true); return; }
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    // Up and down move between the menu's visible items.
    const items = [...menu.querySelectorAll('[role="menuitem"]')].filter((el) => el.offsetParent !== null);
    const k = items.indexOf(document.activeElement);
    if (k < 0 || !items.length) return;
    ev.preventDefault();
    items[(k + (ev.key === "ArrowDown" ? 1 : items.length - 1)) % items.length].focus();
  });
  wrap.append(btn, menu);
  return wrap;
}

function startReset(instances) {
  return startDialog(instances, (fresh, accepted) => openResetDialog(fresh, accepted));
}

function startPower(action, instances) {
  return startDialog(instances, (fresh, accepted) => openPowerDialog(action, fresh, accepted));
}

// startDialog reads the instances again (a dialog's steps depend on
// their current state) and opens a dialog on them; an instance deleted
// since it was selected leaves the selection instead of breaking the
// action on the others. What the dialog had accepted is shown on the
// first operation's page.
async function startDialog(instances, open) {
  try {
    const got = await Promise.allSettled(instances.map((i) => call("GET", "/v1/instances/" + encodeURIComponent(i.id))));
    const fresh = [];
    const gone = [];
    got.forEach((r, k) => {
      if (r.status === "fulfilled") fresh.push(r.value);
      else if (r.reason && r.reason.code === "INSTANCE_NOT_FOUND") gone.push(instances[k]);
      else throw r.reason;
    });
    for (const g of gone) state.selection.delete(g.id);
    if (gone.length) {
      const names = gone.map((g) => g.name || g.id).join(", ");
      const msg = (gone.length === 1 ? `Instance ${names} no longer exists and was removed from the selection.`
        : `${gone.length} instances no longer exist and were removed from the selection: ${names}.`);
      for (const g of gone) {
        const tr = document.querySelector(`#instances tr[data-id="${CSS.escape(g.id)}"]`);
        if (tr) tr.remove();
      }
      if (state.refreshSelection) state.refreshSelection();
      announce(msg);
      alertBox(msg);
    }
    if (!fresh.length) return;
    await open(fresh, (ops, failure) => {
      state.selection.clear();
      state.generated = new Map();
      for (const op of ops) {
        if (op.generatedPassword) state.generated.set(op.id, op.generatedPassword);
        op.generatedPassword = "";
      }
      state.split = ops.length > 1 || failure ? { ids: ops.map((op) => op.id), error: failure ? failure.message : "" } : null;
      location.hash = "#/operations/" + encodeURIComponent(ops[0].id);
    });
  } catch (e) {
    if (failed(e)) return;
    announce(e.message);
    alertBox(e.message);
  }
}

function alertBox(msg) {
  const old = document.getElementById("page-error");
  if (old) old.remove();
  main.prepend(h("p", { class: "form-error", id: "page-error", role: "alert" }, msg));
}

async function showInstances() {
  const L = state.list;
  clear(main);
  const search = h("input", { type: "search", id: "filter-name", value: L.namePrefix, placeholder: "Name prefix or instance ID" });
  const stateSel = h("select", { id: "filter-state" },
    ["", "RUNNING", "STOPPED", "STOPPING", "STARTING", "REBOOTING", "RESETTING_PASSWORD", "ERROR", "PENDING", "UNKNOWN", "MISSING"].map((s) =>
      h("option", { value: s, selected: L.state === s }, s ? s.charAt(0) + s.slice(1).toLowerCase().replace(/_/g, " ") : "All states")));
  const osSel = h("select", { id: "filter-os" },
    [["", "All OS types"], ["linux", "Linux"], ["windows", "Windows"]].map(([v, t]) => h("option", { value: v, selected: L.os === v }, t)));
  const sizeSel = h("select", { id: "page-size" }, [20, 50, 100].map((n) => h("option", { value: n, selected: L.limit === n }, String(n))));
  const resetBtn = h("button", { type: "button", id: "batch-reset" }, "Reset Password");
  const powerBtns = ["start", "stop", "reboot"].map((a) => h("button", { type: "button", class: "secondary", id: "batch-" + a },
    kindWords[a]));
  const selInfo = h("span", { id: "selection-info", class: "muted", "aria-live": "polite" });
  const tbody = h("tbody", {});
  const selectAll = h("input", { type: "checkbox", id: "select-page", "aria-label": "Select all instances on this page" });
  const prev = h("button", { type: "button", class: "secondary", id: "page-prev" }, "Previous");
  const next = h("button", { type: "button", class: "secondary", id: "page-next" }, "Next");
  const pageInfo = h("span", { id: "page-info" });
  const status = h("p", { id: "list-status", class: "muted", role: "status" });
  let rows = [];
  let nextCursor = "";

  const refresh = () => {
    rows = rows.filter((i) => tbody.querySelector(`tr[data-id="${CSS.escape(i.id)}"]`));
    const n = state.selection.size;
    resetBtn.disabled = n === 0;
    for (const b of powerBtns) b.disabled = n === 0;
    selInfo.textContent = n === 0 ? "Select instances to act on several at once." : `${n} selected`;
    selectAll.checked = rows.length > 0 && rows.every((i) => state.selection.has(i.id));
  };
  const load = async () => {
    const q = new URLSearchParams({ limit: String(L.limit) });
    if (L.namePrefix) q.set("namePrefix", L.namePrefix);
    if (L.state) q.set("state", L.state);
    if (L.os) q.set("os", L.os);
    if (L.cursors[L.page]) q.set("cursor", L.cursors[L.page]);
    status.textContent = "Loading…";
    let list;
    try {
      if (/^ins-[a-z0-9]{8,12}$/.test(L.namePrefix)) {
        // An instance id in the search box finds that instance.
        list = await call("GET", "/v1/instances/" + L.namePrefix)
          .then((i) => ({ instances: [i] }))
          .catch((e) => { if (e.code === "INSTANCE_NOT_FOUND") return { instances: [] }; throw e; });
      } else {
        list = await call("GET", "/v1/instances?" + q.toString());
      }
    } catch (e) {
      if (failed(e)) return;
      status.textContent = e.message;
      return;
    }
    rows = list.instances;
    nextCursor = list.nextCursor || "";
    clear(tbody);
    for (const inst of rows) tbody.appendChild(instanceRow(inst, refresh));
    status.textContent = rows.length ? "" : "No instances match.";
    prev.disabled = L.page === 0;
    next.disabled = !nextCursor;
    pageInfo.textContent = `Page ${L.page + 1}`;
    refresh();
  };
  const reload = () => { L.cursors = [""]; L.page = 0; load(); };
  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { L.namePrefix = search.value.trim(); reload(); }, 250); });
  stateSel.addEventListener("change", () => { L.state = stateSel.value; reload(); });
  osSel.addEventListener("change", () => { L.os = osSel.value; reload(); });
  sizeSel.addEventListener("change", () => { L.limit = Number(sizeSel.value); reload(); });
  prev.addEventListener("click", () => { if (L.page > 0) { L.page--; load(); } });
  next.addEventListener("click", () => { if (nextCursor) { L.cursors[L.page + 1] = nextCursor; L.page++; load(); } });
  selectAll.addEventListener("change", () => {
    for (const i of rows) {
      if (selectAll.checked) state.selection.set(i.id, i);
      else state.selection.delete(i.id);
    }
    for (const cb of tbody.querySelectorAll(".row-select")) cb.checked = selectAll.checked;
    refresh();
  });
  resetBtn.addEventListener("click", () => {
    if (state.selection.size > 100) {
      alertBox("At most 100 instances can be reset at once; select fewer.");
      return;
    }
    startReset([...state.selection.values()]);
  });
  for (const b of powerBtns) {
    const action = b.id.replace("batch-", "");
    b.addEventListener("click", () => {
      if (state.selection.size > 100) {
        alertBox(`At most 100 instances can take an action at once; select fewer.`);
        return;
      }
      startPower(action, [...state.selection.values()]);
    });
  }

  state.refreshSelection = refresh;
  state.onEvent = (type, ev) => {
    if (type !== "instance" || !ev.instance) return;
    const inst = ev.instance;
    const i = rows.findIndex((r) => r.id === inst.id);
    if (i < 0) return;
    rows[i] = inst;
    if (state.selection.has(inst.id)) state.selection.set(inst.id, inst);
    const tr = tbody.querySelector(`tr[data-id="${CSS.escape(inst.id)}"]`);
    if (tr) updateRow(tr, inst);
  };

  main.append(
    title("Instances"),
    h("div", { class: "toolbar" },
      h("div", { class: "actions" }, ...powerBtns, resetBtn, selInfo),
      h("div", { class: "filters", role: "search" },
        h("label", { for: search.id }, "Search"), search,
        h("label", { for: stateSel.id }, "State"), stateSel,
        h("label", { for: osSel.id }, "OS"), osSel)),
    h("div", { class: "table-wrap" },
      h("table", { class: "list", id: "instances" },
        h("caption", { class: "visually-hidden" }, "Instances"),
        h("thead", {}, h("tr", {},
          h("th", { class: "col-select", scope: "col" }, selectAll),
          h("th", { class: "col-id", scope: "col" }, "ID"),
          h("th", { class: "col-name", scope: "col" }, "Name"),
          h("th", { class: "col-state", scope: "col" }, "State"),
          h("th", { class: "col-os", scope: "col" }, "OS"),
          h("th", { class: "col-agent", scope: "col" }, "Agent"),
          h("th", { class: "col-op", scope: "col" }, "Latest operation"),
          h("th", { class: "col-more", scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
        tbody)),
    status,
    h("div", { class: "pager" }, prev, pageInfo, next, h("label", { for: sizeSel.id }, "Per page"), sizeSel));
  refresh();
  await load();
}

// ---- instance detail

async function showInstance(id) {
  clear(main);
  let inst, ops;
  try {
    [inst, ops] = await Promise.all([
      call("GET", "/v1/instances/" + encodeURIComponent(id)),
      call("GET", "/v1/operations?limit=50&instanceId=" + encodeURIComponent(id)),
    ]);
  } catch (e) {
    if (failed(e)) return;
    main.append(title("Instance"), h("p", { class: "form-error", role: "alert" }, e.message));
    return;
  }
  const stateCell = h("dd", { id: "detail-state" }, badge(inst.state));
  const agentDd = h("dd", { id: "detail-agent" }, agentCell(inst));
  state.onEvent = (type, ev) => {
    if (type === "instance" && ev.instance && ev.instance.id === id) {
      inst = ev.instance;
      clear(stateCell); stateCell.append(badge(inst.state));
      clear(agentDd); agentDd.append(agentCell(inst));
    }
  };
  main.append(
    h("p", {}, h("a", { href: "#/instances" }, "← Instances")),
    title(inst.name),
    h("div", { class: "actions" },
      ["start", "stop", "reboot"].map((a) => h("button", { type: "button", class: "secondary", id: "detail-" + a,
        onclick: () => startPower(a, [inst]) }, kindWords[a])),
      h("button", { type: "button", id: "detail-reset", onclick: () => startReset([inst]) }, "Reset Password")),
    h("dl", { class: "facts" },
      h("dt", {}, "ID"), h("dd", { class: "mono" }, inst.id),
      h("dt", {}, "State"), stateCell,
      h("dt", {}, "OS"), h("dd", {}, inst.osType === "windows" ? "Windows" : "Linux"),
      h("dt", {}, "Default user"), h("dd", {}, inst.adminUser),
      h("dt", {}, "Agent"), agentDd,
      h("dt", {}, "Tenant"), h("dd", {}, inst.tenant),
      h("dt", {}, "Power"), h("dd", {}, `${inst.power.driver} ${inst.power.host || ""}`.trim()),
      h("dt", {}, "Guest"), h("dd", {}, `${inst.guest.driver} ${inst.guest.host || ""}`.trim())),
    h("h2", {}, "Operations"),
    operationsTable(ops.operations, "instance-operations"));
}

function operationsTable(ops, id) {
  if (!ops.length) return h("p", { class: "muted", id }, "No operations yet.");
  return h("div", { class: "table-wrap" }, h("table", { class: "list", id },
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Operation"), h("th", { scope: "col" }, "Kind"), h("th", { scope: "col" }, "Status"),
      h("th", { scope: "col" }, "Instances"), h("th", { scope: "col", class: "col-by" }, "Requested by"), h("th", { scope: "col", class: "col-when" }, "Created"))),
    h("tbody", {}, ops.map((op) => h("tr", { "data-op": op.id },
      h("td", { class: "mono" }, h("a", { href: "#/operations/" + encodeURIComponent(op.id) }, op.id)),
      h("td", {}, kindWords[op.kind] || op.kind),
      h("td", {}, badge(op.status)),
      h("td", {}, `${op.summary.succeeded} of ${op.summary.total} succeeded` + (op.summary.failed ? `, ${op.summary.failed} failed` : "")),
      h("td", { class: "col-by" }, requester(op.requestedBy)),
      h("td", { class: "col-when" }, when(op.createdAt)))))));
}

// ---- operations

async function showOperations() {
  clear(main);
  const cursors = [""];
  let page = 0;
  const holder = h("div", {});
  const prev = h("button", { type: "button", class: "secondary", id: "ops-prev" }, "Previous");
  const next = h("button", { type: "button", class: "secondary", id: "ops-next" }, "Next");
  let nextCursor = "";
  const load = async () => {
    const q = new URLSearchParams({ limit: "20" });
    if (cursors[page]) q.set("cursor", cursors[page]);
    let list;
    try {
      list = await call("GET", "/v1/operations?" + q.toString());
    } catch (e) {
      if (failed(e)) return;
      clear(holder); holder.append(h("p", { class: "form-error", role: "alert" }, e.message));
      return;
    }
    nextCursor = list.nextCursor || "";
    clear(holder);
    holder.append(operationsTable(list.operations, "operations"));
    prev.disabled = page === 0;
    next.disabled = !nextCursor;
  };
  prev.addEventListener("click", () => { if (page > 0) { page--; load(); } });
  next.addEventListener("click", () => { if (nextCursor) { cursors[page + 1] = nextCursor; page++; load(); } });
  let pending = null;
  state.onEvent = (type) => {
    if (type !== "operation" || page !== 0) return;
    clearTimeout(pending);
    pending = setTimeout(load, 300);
  };
  main.append(title("Operations"), holder, h("div", { class: "pager" }, prev, next));
  await load();
}

// showOperation is the live progress of one operation, item by item.
async function showOperation(id) {
  clear(main);
  let op;
  try {
    op = await call("GET", "/v1/operations/" + encodeURIComponent(id));
  } catch (e) {
    if (failed(e)) return;
    main.append(title("Operation"), h("p", { class: "form-error", role: "alert" }, e.message));
    return;
  }
  const items = new Map(op.items.map((it) => [it.instanceId, it]));
  const statusEl = h("span", { id: "op-status" });
  const summaryEl = h("p", { id: "op-summary", role: "status" });
  const tbody = h("tbody", {});
  const renderItem = (it) => h("tr", { "data-instance": it.instanceId, "data-state": it.state, "data-step": it.step },
    h("td", {}, h("a", { href: "#/instances/" + encodeURIComponent(it.instanceId) }, it.instanceName), h("br"), h("span", { class: "mono muted" }, it.instanceId)),
    h("td", { class: "item-step" }, it.state === "failed" ? `Failed while: ${(stepWords[it.step] || it.step).toLowerCase()}` : stepWords[it.step] || it.step),
    h("td", { class: "item-state" }, badge(it.state)),
    h("td", { class: "item-message" }, it.state === "failed" ? sentence(it.message || it.errorCode) : itemDetails(it)));
  const render = () => {
    clear(statusEl);
    statusEl.append(badge(op.status));
    // Counted from the items, which item events keep current: the
    // operation's own summary only changes with its (rarer) events.
    let succeeded = 0, failedN = 0;
    for (const it of items.values()) {
      if (it.state === "succeeded") succeeded++;
      else if (it.state === "failed") failedN++;
    }
    const total = Math.max(items.size, op.summary ? op.summary.total : 0);
    summaryEl.textContent = op.status === "running"
      ? `In progress: ${succeeded} done, ${failedN} failed, ${total - succeeded - failedN} to go.`
      : `Finished: ${succeeded} of ${total} succeeded` + (failedN ? `, ${failedN} failed.` : ".");
    clear(tbody);
    for (const it of items.values()) tbody.appendChild(renderItem(it));
  };
  const apply = (fresh) => {
    op = fresh;
    for (const it of fresh.items || []) items.set(it.instanceId, it);
    render();
  };
  let done = op.status !== "running";
  state.onEvent = (type, ev) => {
    if (type === "item" && ev.item && ev.item.operationId === id) {
      const it = { ...ev.item };
      delete it.operationId;
      const old = items.get(it.instanceId);
      // An item never goes back from an end state.
      if (old && (old.state === "succeeded" || old.state === "failed") && it.state !== old.state) return;
      items.set(it.instanceId, it);
      render();
    } else if (type === "operation" && ev.operation && ev.operation.id === id) {
      const prevStatus = op.status;
      op = { ...op, ...ev.operation, items: op.items };
      if (ev.operation.items && ev.operation.items.length) apply(ev.operation);
      else render();
      if (prevStatus === "running" && op.status !== "running") announce("The operation finished: " + op.status);
    }
  };
  // The stream drives the steps; a long-poll makes sure the end state is
  // shown even if an event was missed.
  const follow = async () => {
    while (!done && location.hash === "#/operations/" + encodeURIComponent(id)) {
      try {
        const fresh = await call("GET", "/v1/operations/" + encodeURIComponent(id) + "/wait?timeout=20s");
        if (location.hash !== "#/operations/" + encodeURIComponent(id)) return;
        apply(fresh);
        done = fresh.status !== "running";
      } catch (e) {
        if (failed(e)) return;
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  };
  let generatedBox = null;
  const generated = state.generated && state.generated.get(id);
  if (generated) {
    const code = h("code", { id: "generated-password" }, generated);
    const copied = h("span", { id: "copy-status", role: "status" });
    generatedBox = h("div", { class: "generated", id: "generated", role: "region", "aria-label": "Generated password" },
      h("p", {}, h("strong", {}, "The generated password. "), "It is shown only this once: copy it now and keep it somewhere safe."),
      h("p", {}, code),
      h("button", { type: "button", id: "copy-password", onclick: async () => {
        try {
          await navigator.clipboard.writeText(code.textContent);
          copied.textContent = "Copied.";
        } catch (e) {
          const r = document.createRange();
          r.selectNodeContents(code);
          getSelection().removeAllRanges();
          getSelection().addRange(r);
          copied.textContent = "Select and copy it by hand (Ctrl+C).";
        }
      } }, "Copy"),
      " ",
      h("button", { type: "button", class: "secondary", id: "hide-password", onclick: () => { code.textContent = ""; generatedBox.remove(); } }, "I have saved it"),
      " ", copied);
    state.generated.delete(id);
  }
  // A request over several tenants became one operation per tenant: each of
  // their pages lists them all.
  let splitBox = "";
  if (state.split && state.split.ids.includes(id)) {
    const n = state.split.ids.length;
    splitBox = h("div", { class: "notice", id: "split-notice", role: "status" },
      h("p", {}, n > 1 ? `The selected instances belong to ${n} tenants, so the request became ${n} operations, one per tenant:` : "The request was accepted for some tenants only:"),
      h("ul", {}, ...state.split.ids.map((oid) => h("li", {}, oid === id ? h("span", { class: "mono" }, oid + " (this one)") :
        h("a", { href: "#/operations/" + encodeURIComponent(oid), class: "mono" }, oid)))),
      state.split.error ? h("p", { class: "form-error", role: "alert" }, "Not accepted for the other tenants: " + state.split.error) : "");
  }
  main.append(
    h("p", {}, h("a", { href: "#/operations" }, "← Operations")),
    title(`${kindWords[op.kind] || op.kind} · ${op.id}`),
    h("p", {}, "Status: ", statusEl, ` · requested by ${requester(op.requestedBy)} on ${when(op.createdAt)}`),
    summaryEl,
    splitBox,
    generatedBox || "",
    h("div", { class: "table-wrap" }, h("table", { class: "list", id: "progress" },
      h("caption", { class: "visually-hidden" }, "Progress per instance"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Instance"), h("th", { scope: "col" }, "Step"),
        h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Details"))),
      tbody)));
  render();
  document.getElementById("page-title").focus();
  follow();
}

// itemDetails says how an item resets its instance: with a shutdown only
// when it shuts the machine down (an offline reset of a stopped machine
// does not).
function itemDetails(it) {
  if (!it.mode) return "";
  const how = it.mode === "online" ? "Without shutdown" : it.shutdown ? "With shutdown" : "While stopped";
  return how + (it.user ? `, user ${it.user}` : "");
}

// requester names who asked: a key by its name (and id), a user by name.
function requester(r) {
  if (!r) return "";
  if (r.kind === "key") return r.name ? `key ${r.name} (${r.id})` : `key ${r.id}`;
  return r.name || r.id;
}

// ---- console users (admins)

async function showUsers() {
  clear(main);
  const holder = h("div", {});
  const load = async () => {
    let list;
    try {
      list = await call("GET", "/users");
    } catch (e) {
      if (failed(e)) return;
      clear(holder); holder.append(h("p", { class: "form-error", role: "alert" }, e.message));
      return;
    }
    clear(holder);
    holder.append(h("div", { class: "table-wrap" }, h("table", { class: "list", id: "users" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "User"), h("th", { scope: "col" }, "Tenant"),
        h("th", { scope: "col" }, "Role"), h("th", { scope: "col" }, "Password"), h("th", { scope: "col", class: "col-when" }, "Created"))),
      h("tbody", {}, list.users.map((u) => h("tr", { "data-user": u.name },
        h("td", {}, u.name), h("td", {}, u.tenant), h("td", {}, u.admin ? "Admin" : "Tenant user"),
        h("td", {}, u.mustChangePassword ? "Initial (must change)" : "Chosen"), h("td", { class: "col-when" }, when(u.createdAt))))))));
  };
  const name = h("input", { id: "user-name", autocomplete: "off", spellcheck: "false" });
  const tenant = h("input", { id: "user-tenant", autocomplete: "off", spellcheck: "false", value: "" });
  const admin = h("input", { type: "checkbox", id: "user-admin" });
  const pw = h("input", { id: "user-password", type: "password", autocomplete: "new-password" });
  const err = h("div", { class: "form-error", id: "user-error", role: "alert", hidden: true });
  const ok = h("p", { class: "info", id: "user-created", role: "status", hidden: true });
  const form = h("form", { class: "card", id: "user-form", novalidate: true },
    h("h2", {}, "New console user"),
    h("p", { class: "muted" }, "The user signs in with this initial password and must change it at once. Give it to them over a safe channel."),
    err, ok,
    h("div", { class: "field" }, h("label", { for: name.id }, "User name"), name),
    h("div", { class: "field" }, h("label", { for: tenant.id }, "Tenant"), tenant),
    h("div", { class: "check" }, h("label", {}, admin, " Admin (sees and manages every tenant)")),
    h("div", { class: "field" }, h("label", { for: pw.id }, "Initial password (12 or more characters)"), pw),
    h("button", { type: "submit", id: "user-submit" }, "Create user"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = ok.hidden = true;
    try {
      const u = await call("POST", "/users", { name: name.value.trim(), tenant: tenant.value.trim(), admin: admin.checked, password: pw.value });
      pw.value = "";
      ok.textContent = `Created ${u.name} in tenant ${u.tenant}.`;
      ok.hidden = false;
      name.value = "";
      load();
    } catch (e) {
      if (failed(e)) return;
      err.textContent = e.message;
      err.hidden = false;
    }
  });
  main.append(title("Console users"), holder, form);
  await load();
}

boot();

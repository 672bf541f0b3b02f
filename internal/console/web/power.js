// The Start, Stop and Reboot dialog: the instances concerned with their
// state, and for Stop and Reboot how the machine is to go down: a
// graceful shutdown (the default; the item fails, and the machine keeps
// running, if the OS ignores it), a graceful shutdown forced when it does
// not end in time, or a forced stop at once. Forcing needs the user's
// explicit agreement, as in the Reset Password dialog.
import { h, clear, trapFocus } from "./dom.js";
import { postPerTenant } from "./api.js";
import { instanceErrors } from "./reset.js";

const words = {
  start: { title: "Start", verb: "Start", busy: "Starting…" },
  stop: { title: "Stop", verb: "Stop", busy: "Stopping…" },
  reboot: { title: "Reboot", verb: "Reboot", busy: "Rebooting…" },
};

// The stop modes of the native API, in the order offered.
const modes = [
  { value: "soft", label: "Shut down gracefully",
    hint: "The operating system is asked to shut down. If it does not within the time limit, the action fails and nothing is forced." },
  { value: "soft-then-hard", label: "Shut down gracefully, then force it if needed",
    hint: "If the operating system does not shut down in time, the instance is forcibly stopped." },
  { value: "hard", label: "Force stop now",
    hint: "The power is cut at once, like pulling the plug." },
];

let seq = 0;

// openPowerDialog asks to confirm action ("start", "stop" or "reboot") on
// instances; onAccepted receives the operations it became (one per tenant
// of the selection) and the refusal of the rest, if any.
export function openPowerDialog(action, instances, onAccepted) {
  const w = words[action];
  const opener = document.activeElement;
  const n = ++seq;
  const id = (s) => "power-" + s;
  instances = [...instances];
  const instErrors = new Map();
  let busy = false;

  const stops = action !== "start";
  const radios = stops ? modes.map((m) => h("input", { type: "radio", name: "power-mode-" + n, id: id("mode-" + m.value), value: m.value,
    checked: m.value === "soft", "aria-describedby": id("mode-" + m.value + "-hint") })) : [];
  const consent = h("input", { type: "checkbox", id: id("consent") });
  const consentBox = h("div", { class: "check consent", id: id("consent-box"), hidden: true },
    h("p", { class: "warning", id: id("warning") },
      "A forced stop cuts the power: it may interrupt service and lose unsaved data, and the file systems are not cleanly unmounted."),
    h("label", {}, consent, " Agree to a forced shutdown"));
  const generalError = h("div", { class: "form-error", id: id("error"), role: "alert", hidden: true });
  const list = h("ul", { class: "inst-list", id: id("instances") });
  const summary = h("p", { id: id("summary") });
  const footer = h("div", { class: "dialog-buttons" });
  const title = h("h2", { id: id("title") }, w.title);
  const form = h("form", { novalidate: true }, title, generalError, summary, list,
    stops && h("fieldset", { class: "radios", id: id("modes") }, h("legend", {}, action === "stop" ? "How to stop" : "How to shut down before the restart"),
      modes.map((m, i) => h("div", {}, h("label", {}, radios[i], " " + m.label),
        h("p", { class: "hint", id: id("mode-" + m.value + "-hint") }, m.hint)))),
    stops && consentBox,
    footer);
  const dlg = h("dialog", { id: "power-dialog", "data-action": action, "aria-labelledby": title.id, "aria-describedby": summary.id }, form);

  const mode = () => (stops ? radios.find((r) => r.checked).value : "");
  const needConsent = () => stops && mode() !== "soft";

  function renderSummary() {
    summary.textContent = instances.length === 1
      ? `${w.verb} instance ${instances[0].name} (${instances[0].id}).`
      : `${w.verb} ${instances.length} instances.`;
  }

  function drop(iid) {
    if (instances.length <= 1) return;
    instances = instances.filter((i) => i.id !== iid);
    instErrors.delete(iid);
    if (!instErrors.size) generalError.hidden = true;
    renderSummary();
    renderInstances();
    renderFooter();
    (list.querySelector(".inst-drop") || footer.querySelector("button")).focus();
  }

  function renderInstances() {
    clear(list);
    for (const i of instances) {
      const reason = instErrors.get(i.id) || (i.busy ? instanceErrors.INSTANCE_BUSY[1] : "");
      list.appendChild(h("li", { "data-id": i.id, "data-busy": i.busy ? "true" : null },
        h("span", { class: "inst-name" }, i.name), " ", h("span", { class: "inst-id" }, i.id), " ",
        h("span", { class: "inst-state" }, "(" + (i.busy ? "busy, " : "") + i.state.toLowerCase().replace(/_/g, " ") + ")"),
        reason && instances.length > 1 && h("button", { type: "button", class: "secondary inst-drop",
          "aria-label": "Leave " + i.name + " out", onclick: () => drop(i.id) }, "Leave out"),
        reason && h("p", { class: "field-error inst-error", role: instErrors.has(i.id) ? "alert" : null }, reason)));
    }
  }

  function renderFooter() {
    consentBox.hidden = !needConsent();
    clear(footer);
    footer.append(
      h("button", { type: "button", class: "secondary", id: id("cancel"), onclick: () => dlg.close() }, "Cancel"),
      h("button", { type: "submit", id: id("submit"), disabled: busy || (needConsent() && !consent.checked) }, busy ? w.busy : w.verb));
  }

  async function submit() {
    generalError.hidden = true;
    instErrors.clear();
    renderInstances();
    busy = true;
    renderFooter();
    const body = { action };
    if (stops) body.stopMode = mode();
    const { ops, failure } = await postPerTenant("/v1/power-actions", body, instances);
    busy = false;
    if (ops.length === 0) {
      renderFooter();
      showServerError(failure);
      return;
    }
    dlg.close();
    onAccepted(ops, failure);
  }

  function showServerError(e) {
    const ie = instanceErrors[e.code];
    if (ie && e.details && Array.isArray(e.details[ie[0]])) {
      for (const iid of e.details[ie[0]]) instErrors.set(iid, ie[1]);
      renderInstances();
      generalError.textContent = instErrors.size === 1 && instances.length === 1
        ? `This instance cannot be ${action === "stop" ? "stopped" : action === "start" ? "started" : "rebooted"} now; see the reason below.`
        : "Some instances cannot take this action now; see the reason beside each, or leave them out.";
    } else {
      generalError.textContent = e.message || "The action was refused.";
    }
    generalError.hidden = false;
    renderFooter();
  }

  for (const r of radios) r.addEventListener("change", () => { if (!needConsent()) consent.checked = false; renderFooter(); });
  consent.addEventListener("change", renderFooter);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (busy || (needConsent() && !consent.checked)) return;
    submit();
  });
  trapFocus(dlg);
  dlg.addEventListener("close", () => {
    dlg.remove();
    if (opener && opener.isConnected) opener.focus();
  });

  renderSummary();
  renderInstances();
  renderFooter();
  document.body.appendChild(dlg);
  dlg.showModal();
  (radios[0] || footer.querySelector("#" + id("submit"))).focus();
  return dlg;
}

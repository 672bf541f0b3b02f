// The Reset Password dialog of the console guide: user name type and user
// name, new password and its confirmation checked against the rule as the
// user types, and, when a selected instance is running, a second step that
// asks for consent to a forced shutdown.
import { h, clear, trapFocus } from "./dom.js";
import { call, postPerTenant } from "./api.js";
import { violations } from "./policy.js";

// Server refusals that concern instances, in words a user understands, and
// where the server lists the instances concerned.
export const instanceErrors = {
  INSTANCE_BUSY: ["busyIds", "Another operation is already in progress on this instance. Wait for it to finish, then try again."],
  INSTANCE_NOT_FOUND: ["unknownIds", "This instance no longer exists, or you are not allowed to see it."],
  FORCED_SHUTDOWN_CONSENT_REQUIRED: ["instanceIds", "This instance is running: resetting it needs your agreement to shut it down."],
  INSTANCE_NOT_RUNNING: ["instanceIds", "This instance is not running, so its password cannot be changed without a shutdown."],
  GUEST_NOT_ALIVE: ["instanceIds", "Its guest agent is not responding, so its password cannot be changed without a shutdown."],
  INSTANCE_NOT_STOPPED: ["instanceIds", "This instance must be stopped first."],
};

let seq = 0;

// openResetDialog shows the dialog for instances; onAccepted receives the
// accepted operation (with the generated password, if one was asked for).
export async function openResetDialog(instances, onAccepted) {
  const opener = document.activeElement;
  const oses = [...new Set(instances.map((i) => i.osType))].sort();
  const spec = await call("GET", "/password-policy?os=" + encodeURIComponent(oses.join(",")));
  // The server says which instances an offline reset must shut down and
  // whether all can change without a shutdown: its rules, not a copy.
  const plan = await call("GET", "/reset-plan?ids=" + encodeURIComponent(instances.map((i) => i.id).join(",")));
  const n = ++seq;
  const id = (s) => "reset-" + s;
  instances = [...instances];
  let defaultUsers = [...new Set(instances.map((i) => i.adminUser))];
  const planned = (i) => plan.running.includes(i.id);
  let running = instances.filter(planned);
  const canOnline = plan.online;
  const instErrors = new Map();
  let step = 1;
  let busy = false;

  // ---- fields
  const userDefault = h("input", { type: "radio", name: "reset-user-type-" + n, id: id("user-default"), value: "default", checked: true });
  const userCustom = h("input", { type: "radio", name: "reset-user-type-" + n, id: id("user-custom"), value: "custom" });
  const userInput = h("input", { type: "text", id: id("user"), autocomplete: "off", spellcheck: "false", "aria-describedby": id("user-error") });
  const userError = h("p", { class: "field-error", id: id("user-error"), hidden: true });
  const online = canOnline ? h("input", { type: "checkbox", id: id("online") }) : null;
  const generate = h("input", { type: "checkbox", id: id("generate") });
  const pw = h("input", { type: "password", id: id("password"), autocomplete: "new-password", "aria-describedby": id("password-error") + " " + id("rules") });
  const pwError = h("div", { class: "field-error", id: id("password-error"), hidden: true, role: "alert" });
  const confirm = h("input", { type: "password", id: id("confirm"), autocomplete: "new-password", "aria-describedby": id("confirm-error") });
  const confirmError = h("p", { class: "field-error", id: id("confirm-error"), hidden: true, role: "alert" });
  const rules = h("ul", { class: "rules", id: id("rules"), "aria-label": "Password rules" });
  const generalError = h("div", { class: "form-error", id: id("error"), role: "alert", hidden: true });
  const consent = h("input", { type: "checkbox", id: id("consent") });
  const instList1 = h("ul", { class: "inst-list", id: id("instances") });
  const instList2 = h("ul", { class: "inst-list", id: id("running") });
  const pwFields = h("div", { class: "pw-fields" },
    h("div", { class: "field" }, h("label", { for: pw.id }, "New password"), pw, pwError),
    rules,
    h("div", { class: "field" }, h("label", { for: confirm.id }, "Confirm password"), confirm, confirmError));
  const generateNote = h("p", { class: "hint", id: id("generate-note"), hidden: true },
    "fleetpass will generate a strong password that follows the rules of every selected instance. It is shown once, after you submit, with a button to copy it.");

  const summary = h("p", { id: id("summary") });
  const renderSummary = () => {
    summary.textContent = instances.length === 1
      ? `Reset the password of instance ${instances[0].name} (${instances[0].id}).`
      : `Reset the password of ${instances.length} instances.`;
  };
  const step1 = h("section", { id: id("step1"), "aria-label": "Step 1: user and password" },
    summary,
    instList1,
    h("fieldset", { class: "radios" }, h("legend", {}, "User name type"),
      h("label", {}, userDefault, " OS default (root on Linux, Administrator on Windows)"),
      h("label", {}, userCustom, " Custom user name")),
    h("div", { class: "field" }, h("label", { for: userInput.id }, "User name"), userInput, userError),
    online && h("div", { class: "check" }, h("label", {}, online, " Reset without shutdown"),
      h("p", { class: "hint" }, "The guest agent of every selected instance is alive, so the password can change while the instances keep running.")),
    h("div", { class: "check" }, h("label", {}, generate, " Generate a strong password")),
    generateNote,
    pwFields);
  const warning = h("p", { class: "warning", id: id("warning") });
  const renderWarning = () => {
    warning.textContent = running.length === 1
      ? "This instance is running. To reset its password it will be shut down, and forcibly stopped if it does not shut down in time. " +
        "A forced shutdown may interrupt service and lose unsaved data. It is started again afterwards."
      : "These instances are running. To reset their password they will be shut down, and forcibly stopped if they do not shut down in time. " +
        "A forced shutdown may interrupt service and lose unsaved data. They are started again afterwards.";
  };
  const step2 = h("section", { id: id("step2"), hidden: true, "aria-label": "Step 2: forced shutdown" },
    warning,
    instList2,
    h("div", { class: "check consent" }, h("label", {}, consent, " Agree to a forced shutdown")));
  const footer = h("div", { class: "dialog-buttons" });
  const title = h("h2", { id: id("title") }, "Reset Password");
  const form = h("form", { novalidate: true }, title, generalError, step1, step2, footer);
  const dlg = h("dialog", { id: "reset-dialog", "aria-labelledby": title.id, "aria-describedby": id("summary") }, form);

  // ---- behaviour
  const users = () => (userCustom.checked ? [userInput.value.trim()] : defaultUsers);
  const isOnline = () => !!(online && online.checked);
  const needConsent = () => !isOnline() && running.length > 0;

  function syncUser() {
    if (userCustom.checked) {
      userInput.readOnly = false;
      if (userInput.dataset.default === "1") userInput.value = "";
      userInput.dataset.default = "";
    } else {
      userInput.readOnly = true;
      userInput.value = defaultUsers.join(", ");
      userInput.dataset.default = "1";
      userError.hidden = true;
    }
    renderRules();
  }

  function renderRules() {
    clear(rules);
    const broken = violations(spec, pw.value, users());
    for (const r of spec.rules) {
      const state = pw.value === "" ? "todo" : broken.includes(r.code) ? "bad" : "ok";
      const mark = state === "ok" ? "✓" : state === "bad" ? "✗" : "•";
      const words = state === "ok" ? "met: " : state === "bad" ? "not met: " : "";
      rules.appendChild(h("li", { class: "rule rule-" + state, "data-rule": r.code, "data-state": state },
        h("span", { "aria-hidden": "true", class: "mark" }, mark + " "),
        h("span", { class: "visually-hidden" }, words),
        "The password " + r.message + "."));
    }
  }

  function checkConfirm(final) {
    const mismatch = confirm.value !== pw.value && (final || confirm.value.length >= pw.value.length);
    confirmError.textContent = mismatch ? "The passwords do not match." : "";
    confirmError.hidden = !mismatch || (!final && confirm.value === "");
    confirm.setAttribute("aria-invalid", String(!confirmError.hidden));
    return !mismatch;
  }

  function showPwError(msg, items) {
    clear(pwError);
    pwError.appendChild(h("p", {}, msg));
    if (items && items.length) pwError.appendChild(h("ul", {}, items.map((t) => h("li", {}, t))));
    pwError.hidden = false;
    pw.setAttribute("aria-invalid", "true");
  }

  // drop takes an instance out of this reset (a busy one, or one the
  // server refused), keeping at least one.
  function drop(iid) {
    if (instances.length <= 1) return;
    instances = instances.filter((i) => i.id !== iid);
    running = instances.filter(planned);
    defaultUsers = [...new Set(instances.map((i) => i.adminUser))];
    instErrors.delete(iid);
    if (!instErrors.size) generalError.hidden = true;
    syncUser();
    renderSummary();
    renderWarning();
    renderInstances();
    renderFooter();
    const next = instList1.querySelector(".inst-drop") || userDefault;
    next.focus();
  }

  function renderInstances() {
    // Step one flags what would refuse the reset (an operation already at
    // work on the instance, a reason the server gave) and offers to
    // leave that instance out.
    const row = (i, withDrop) => {
      const reason = instErrors.get(i.id) || (i.busy ? instanceErrors.INSTANCE_BUSY[1] : "");
      return h("li", { "data-id": i.id, "data-busy": i.busy ? "true" : null },
        h("span", { class: "inst-name" }, i.name), " ", h("span", { class: "inst-id" }, i.id), " ",
        h("span", { class: "inst-state" }, "(" + (i.busy ? "busy, " : "") + i.state.toLowerCase().replace(/_/g, " ") + ")"),
        withDrop && reason && instances.length > 1 && h("button", { type: "button", class: "secondary inst-drop",
          "aria-label": "Leave " + i.name + " out of this reset", onclick: () => drop(i.id) }, "Leave out"),
        reason && h("p", { class: "field-error inst-error", role: instErrors.has(i.id) ? "alert" : null }, reason));
    };
    clear(instList1);
    instances.forEach((i) => instList1.appendChild(row(i, true)));
    clear(instList2);
    running.forEach((i) => instList2.appendChild(row(i, false)));
  }

  function renderFooter() {
    clear(footer);
    title.textContent = needConsent() ? `Reset Password (step ${step} of 2)` : "Reset Password";
    const cancel = h("button", { type: "button", class: "secondary", id: id("cancel"), onclick: () => dlg.close() }, "Cancel");
    if (step === 1) {
      if (needConsent()) {
        footer.append(cancel, h("button", { type: "submit", id: id("next") }, "Next"));
      } else {
        footer.append(cancel, h("button", { type: "submit", id: id("submit") }, busy ? "Resetting…" : "Reset Password"));
      }
    } else {
      footer.append(
        h("button", { type: "button", class: "secondary", id: id("back"), onclick: () => goStep(1) }, "Previous"),
        cancel,
        h("button", { type: "submit", id: id("submit"), disabled: !consent.checked || busy }, busy ? "Resetting…" : "Reset Password"));
    }
  }

  function goStep(s) {
    step = s;
    title.textContent = needConsent() ? `Reset Password (step ${s} of 2)` : "Reset Password";
    step1.hidden = s !== 1;
    step2.hidden = s !== 2;
    renderFooter();
    const first = s === 1 ? (userCustom.checked ? userInput : userDefault) : consent;
    first.focus();
  }

  function validate() {
    let firstBad = null;
    if (userCustom.checked && userInput.value.trim() === "") {
      userError.textContent = "Enter the user name whose password to reset.";
      userError.hidden = false;
      userInput.setAttribute("aria-invalid", "true");
      firstBad = firstBad || userInput;
    } else {
      userError.hidden = true;
      userInput.removeAttribute("aria-invalid");
    }
    if (!generate.checked) {
      const broken = violations(spec, pw.value, users());
      if (pw.value === "") {
        showPwError("Enter a new password.");
        firstBad = firstBad || pw;
      } else if (broken.length) {
        // The rules are listed once, below, each marked met or not.
        showPwError(broken.length === 1 ? "The password does not follow the rule marked ✗ below."
          : "The password does not follow the rules marked ✗ below.");
        firstBad = firstBad || pw;
      } else {
        pwError.hidden = true;
        pw.removeAttribute("aria-invalid");
      }
      if (!checkConfirm(true)) firstBad = firstBad || confirm;
    }
    if (firstBad) firstBad.focus();
    return !firstBad;
  }

  async function submit() {
    generalError.hidden = true;
    instErrors.clear();
    renderInstances();
    const body = { mode: isOnline() ? "online" : "offline" };
    if (userCustom.checked) body.user = userInput.value.trim();
    if (generate.checked) body.generate = true;
    else body.password = pw.value;
    if (needConsent()) body.forceStop = consent.checked;
    busy = true;
    renderFooter();
    let result;
    try {
      result = await postPerTenant("/v1/password-resets", body, instances);
    } finally {
      body.password = "";
    }
    const { ops, failure } = result;
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
    if (e.code === "PASSWORD_POLICY_VIOLATION") {
      if (step !== 1) goStep(1);
      const v = (e.details && e.details.violations) || [];
      const known = new Set(spec.rules.map((r) => r.code));
      // Rules the list shows are marked there; only others are spelled out.
      for (const x of v) {
        const li = rules.querySelector(`li[data-rule="${CSS.escape(x.rule || "")}"]`);
        if (li) { li.className = "rule rule-bad"; li.dataset.state = "bad"; }
      }
      const extra = v.filter((x) => !known.has(x.rule)).map((x) => "It " + x.message + ".");
      showPwError("The server refused the password: it does not follow the rules marked ✗ below.", extra);
      pw.focus();
    } else if (ie && e.details && Array.isArray(e.details[ie[0]])) {
      for (const iid of e.details[ie[0]]) instErrors.set(iid, ie[1]);
      renderInstances();
      // Step one lists every selected instance, so each reason shows.
      if (step !== 1) goStep(1);
      else renderFooter();
      const first = dlg.querySelector(".inst-error");
      generalError.textContent = instErrors.size === 1
        ? (instances.length === 1 ? "This instance cannot be reset; see the reason below." : "One instance cannot be reset; see the reason beside it, or leave it out.")
        : "Some instances cannot be reset; see the reason beside each, or leave them out.";
      generalError.hidden = false;
      if (first) first.scrollIntoView({ block: "nearest" });
    } else if (e.code === "INVALID_ARGUMENT" && /^user:/.test(e.message)) {
      if (step !== 1) goStep(1);
      userError.textContent = "This user name is not valid: use letters, digits, '.', '_', '-', '@' or '$'.";
      userError.hidden = false;
      userInput.focus();
    } else {
      generalError.textContent = e.message || "The reset was refused.";
      generalError.hidden = false;
      renderFooter();
    }
  }

  userDefault.addEventListener("change", syncUser);
  userCustom.addEventListener("change", () => { syncUser(); userInput.focus(); });
  userInput.addEventListener("input", () => { userError.hidden = true; renderRules(); });
  pw.addEventListener("input", () => { pwError.hidden = true; pw.removeAttribute("aria-invalid"); renderRules(); if (confirm.value) checkConfirm(false); });
  confirm.addEventListener("input", () => checkConfirm(false));
  confirm.addEventListener("blur", () => { if (confirm.value) checkConfirm(true); });
  generate.addEventListener("change", () => {
    pwFields.hidden = generate.checked;
    generateNote.hidden = !generate.checked;
    if (generate.checked) { pw.value = ""; confirm.value = ""; }
    renderRules();
  });
  if (online) online.addEventListener("change", renderFooter);
  consent.addEventListener("change", renderFooter);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (busy) return;
    if (step === 1) {
      if (!validate()) return;
      if (needConsent()) goStep(2);
      else submit();
    } else if (consent.checked) {
      submit();
    }
  });
  trapFocus(dlg);
  dlg.addEventListener("close", () => {
    // The password leaves the page with the dialog.
    pw.value = "";
    confirm.value = "";
    dlg.remove();
    if (opener && opener.isConnected) opener.focus();
  });

  syncUser();
  renderSummary();
  renderWarning();
  renderInstances();
  renderFooter();
  document.body.appendChild(dlg);
  dlg.showModal();
  userDefault.focus();
  return dlg;
}

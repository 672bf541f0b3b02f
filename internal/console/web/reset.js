// The Reset Password dialog of the console guide: user name type and user
// name, new password and its confirmation checked against the rule as the
// user types, and, when a selected instance is running, a second step that
// asks for consent to a forced shutdown.
import { h, clear, focusables, poweredOn } from "./dom.js";
import { call, newIdempotencyKey } from "./api.js";
import { violations } from "./policy.js";

// Server refusals that concern instances, in words a user understands, and
// where the server lists the instances concerned.
const instanceErrors = {
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
  const n = ++seq;
  const id = (s) => "reset-" + s;
  const defaultUsers = [...new Set(instances.map((i) => i.adminUser))];
  const running = instances.filter(poweredOn);
  const canOnline = instances.every((i) => i.state === "RUNNING" && i.guestAlive);
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

  const step1 = h("section", { id: id("step1"), "aria-label": "Step 1: user and password" },
    h("p", { id: id("summary") }, instances.length === 1
      ? `Reset the password of instance ${instances[0].name} (${instances[0].id}).`
      : `Reset the password of ${instances.length} instances.`),
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
  const step2 = h("section", { id: id("step2"), hidden: true, "aria-label": "Step 2: forced shutdown" },
    h("p", { class: "warning" },
      "These instances are running. To reset their password they will be shut down, and forcibly stopped if they do not shut down in time. " +
      "A forced shutdown may interrupt service and lose unsaved data. They are started again afterwards."),
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

  function renderInstances() {
    const row = (i) => h("li", { "data-id": i.id },
      h("span", { class: "inst-name" }, i.name), " ", h("span", { class: "inst-id" }, i.id), " ",
      h("span", { class: "inst-state" }, "(" + i.state.toLowerCase().replace(/_/g, " ") + ")"),
      instErrors.has(i.id) && h("p", { class: "field-error inst-error", role: "alert" }, instErrors.get(i.id)));
    clear(instList1);
    instances.forEach((i) => instList1.appendChild(row(i)));
    clear(instList2);
    running.forEach((i) => instList2.appendChild(row(i)));
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
        showPwError("The password does not follow these rules:",
          spec.rules.filter((r) => broken.includes(r.code)).map((r) => "It " + r.message + "."));
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
    // One operation belongs to one tenant: an admin's selection over
    // several tenants is sent as one request per tenant.
    const groups = new Map();
    for (const i of instances) {
      if (!groups.has(i.tenant)) groups.set(i.tenant, []);
      groups.get(i.tenant).push(i.id);
    }
    const ops = [];
    let failure = null;
    try {
      for (const ids of groups.values()) {
        ops.push(await call("POST", "/v1/password-resets", { ...body, instanceIds: ids }, { "Idempotency-Key": newIdempotencyKey() }));
      }
    } catch (e) {
      failure = e;
    } finally {
      body.password = "";
    }
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
      showPwError("The server refused the password: it does not follow these rules:", v.map((x) => "It " + x.message + "."));
      pw.focus();
    } else if (ie && e.details && Array.isArray(e.details[ie[0]])) {
      for (const iid of e.details[ie[0]]) instErrors.set(iid, ie[1]);
      renderInstances();
      // Step one lists every selected instance, so each reason shows.
      if (step !== 1) goStep(1);
      else renderFooter();
      const first = dlg.querySelector(".inst-error");
      generalError.textContent = "Some instances cannot be reset; see the reason beside each.";
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
  // Keep keyboard focus inside the dialog.
  dlg.addEventListener("keydown", (ev) => {
    if (ev.key !== "Tab") return;
    const f = focusables(dlg);
    if (!f.length) return;
    const first = f[0], last = f[f.length - 1];
    if (ev.shiftKey && document.activeElement === first) { ev.preventDefault(); last.focus(); }
    else if (!ev.shiftKey && document.activeElement === last) { ev.preventDefault(); first.focus(); }
  });
  dlg.addEventListener("close", () => {
    // The password leaves the page with the dialog.
    pw.value = "";
    confirm.value = "";
    dlg.remove();
    if (opener && opener.isConnected) opener.focus();
  });

  syncUser();
  renderInstances();
  renderFooter();
  document.body.appendChild(dlg);
  dlg.showModal();
  userDefault.focus();
  return dlg;
}

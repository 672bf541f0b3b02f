// Mirrors password.Check of the server on a policy's Spec, so the rules
// can be ticked off as the user types. The server checks again; this is
// only a guide.
export function violations(spec, pw, users) {
  const out = [];
  const chars = Array.from(pw);
  if (chars.length < spec.minLength || (spec.maxLength && chars.length > spec.maxLength)) out.push("length");
  if (!chars.every((c) => spec.allowed.includes(c))) out.push("charset");
  if (spec.minClasses > 0) {
    const n = (spec.classes || []).filter((cl) => chars.some((c) => cl.chars.includes(c))).length;
    if (n < spec.minClasses) out.push("classes");
  }
  if (spec.forbidUser) {
    const lower = pw.toLowerCase();
    const min = spec.minUserNameLength || 3;
    if (users.some((u) => u && u.length >= min && lower.includes(u.toLowerCase()))) out.push("contains_user");
  }
  return out;
}

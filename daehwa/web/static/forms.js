// The form progress chip in the chat header: for a persona with a form (e.g. the reservation desk), how many fields
// are filled, which one is asked next, and whether it is done. Read from GET /api/conversations/{id}/form.

import { api } from "./api.js";
import { t } from "./i18n.js";

let latest = 0; // answers to an older request (another conversation) are dropped

function chip() {
  let node = document.getElementById("form-chip");
  if (!node) {
    node = document.createElement("span");
    node.id = "form-chip";
    node.className = "form-chip";
    node.setAttribute("role", "status");
    node.hidden = true;
    document.getElementById("chat-meta")?.after(node);
  }
  return node;
}

/** Show the form chip of conversation `id` (or hide it: `id` null, or a persona without a form). */
export async function refreshFormChip(id) {
  const ticket = ++latest;
  const node = chip();
  if (!id) {
    node.hidden = true;
    return;
  }
  let form;
  try {
    form = await api("GET", `/api/conversations/${encodeURIComponent(id)}/form`);
  } catch {
    form = null; // the chip is a help, never an error
  }
  if (ticket !== latest) return;
  if (!form || !form.form) {
    node.hidden = true;
    return;
  }
  const next = form.fields.find((f) => f.name === form.next);
  let status = "";
  if (form.done) status = t("form_done");
  else if (form.status === "cancelled") status = t("form_cancelled");
  else if (form.status === "confirming") status = t("form_confirming");
  else if (next) status = `${t("form_next")}: ${next.label}`;
  node.textContent = `${form.title} ${form.filled}/${form.total} · ${status}`;
  node.dataset.status = form.status;
  node.dataset.next = form.next || "";
  node.title = form.fields
    .filter((f) => f.display)
    .map((f) => `${f.label}: ${f.display}`)
    .join("\n");
  node.hidden = false;
}

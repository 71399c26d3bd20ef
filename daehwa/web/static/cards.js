// Conversation intelligence in the page (docs/intelligence.md): recommendation cards under a reply, and the
// "my interests" panel of the settings dialog. app.js calls renderCards(node, message) when it fills a message and
// attachInterests(user) once after sign-in; everything else lives here (the dialog's account part: account.js).

import { api } from "./api.js";
import { el } from "./dom.js";
import { t } from "./i18n.js";

function feedback(item, action) {
  return api("POST", "/api/recommendations/feedback", {
    catalogue: item.catalogue,
    item_id: item.id,
    action,
  }).catch(() => {}); // feedback is a hint: a failure must not disturb reading
}

/** Cards for the reply's `recommendations` (none for other messages); safe to call again on every refill. */
export function renderCards(node, message) {
  node.querySelector(".rec-cards")?.remove();
  const items = message.role === "assistant" && message.status !== "streaming" ? message.recommendations : null;
  if (!Array.isArray(items) || !items.length) return;
  const box = el("div", "rec-cards");
  box.setAttribute("role", "list");
  box.setAttribute("aria-label", t("recommended"));
  for (const item of items) {
    const card = el("div", "rec-card");
    card.setAttribute("role", "listitem");
    card.dataset.item = item.id;
    const link = el("a", "rec-title", item.title);
    if (/^(https?:\/\/|\/)/.test(item.url)) link.href = item.url; // only web links: never javascript:
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.addEventListener("click", () => feedback(item, "click"));
    const text = el("p", "rec-desc muted small", item.description || "");
    const dismiss = el("button", "btn btn-ghost small rec-dismiss", t("not_interested"));
    dismiss.type = "button";
    dismiss.addEventListener("click", async () => {
      dismiss.disabled = true;
      await feedback(item, "dismiss");
      card.remove();
      if (!box.querySelector(".rec-card")) box.remove();
    });
    card.append(link, text, dismiss);
    box.append(card);
  }
  node.querySelector(".msg-main")?.append(box);
}

async function fillInterests(list, status, toggle) {
  list.replaceChildren();
  let result;
  try {
    result = await api("GET", "/api/me/interests");
  } catch {
    status.textContent = t("interests_failed");
    return;
  }
  toggle.checked = result.enabled;
  if (result.anonymous) {
    status.textContent = t("interests_off");
    return;
  }
  if (!result.enabled) status.textContent = t("interests_paused");
  else status.textContent = result.data.length ? "" : t("interests_empty");
  for (const interest of result.data.slice(0, 30)) {
    const row = el("li", "interest");
    row.dataset.term = interest.term;
    const remove = el("button", "icon-btn small interest-delete", "×");
    remove.type = "button";
    remove.setAttribute("aria-label", t("interest_delete", { term: interest.term }));
    remove.addEventListener("click", async () => {
      await api("DELETE", `/api/me/interests/${encodeURIComponent(interest.term)}`);
      row.remove();
      if (!list.children.length && toggle.checked) status.textContent = t("interests_empty");
    });
    row.append(el("span", "interest-term", interest.term), remove);
    list.append(row);
  }
}

/** The settings button next to the user's name, and its dialog: "my interests" (account.js adds the account part). */
export function attachInterests(user) {
  document.getElementById("interests-open")?.remove();
  document.getElementById("interests-dialog")?.remove();
  const open = el("button", "btn btn-ghost small", t("settings"));
  open.id = "interests-open";
  open.type = "button";
  const dialog = el("dialog", "interests-dialog");
  dialog.id = "interests-dialog";
  dialog.setAttribute("aria-labelledby", "interests-heading");
  const heading = el("h2", "", t("interests"));
  heading.id = "interests-heading";
  const hint = el("p", "muted small", t("interests_hint"));
  // The switch: off = nothing more is learned and nothing remembered is used (PUT /api/me/interests).
  const toggle = el("input");
  toggle.type = "checkbox";
  toggle.id = "interests-enabled";
  toggle.disabled = user.anonymous;
  const toggleLabel = el("label", "interests-switch small");
  toggleLabel.append(toggle, document.createTextNode(" " + t("interests_remember")));
  const status = el("p", "muted small interests-status");
  const list = el("ul", "interest-list");
  toggle.addEventListener("change", async () => {
    toggle.disabled = true;
    try {
      await api("PUT", "/api/me/interests", { enabled: toggle.checked });
    } catch {
      toggle.checked = !toggle.checked;
    } finally {
      toggle.disabled = false;
    }
    await fillInterests(list, status, toggle);
  });
  const clear = el("button", "btn small", t("interests_clear"));
  clear.id = "interests-clear";
  clear.type = "button";
  clear.disabled = user.anonymous;
  clear.addEventListener("click", async () => {
    await api("DELETE", "/api/me/interests");
    await fillInterests(list, status, toggle);
  });
  const close = el("button", "btn btn-primary small", t("close"));
  close.type = "button";
  close.addEventListener("click", () => dialog.close());
  const buttons = el("div", "interests-buttons");
  buttons.append(clear);
  const closeRow = el("div", "dialog-close-row"); // account.js puts the account part above it
  closeRow.append(close);
  dialog.append(heading, hint, toggleLabel, status, list, buttons, closeRow);
  open.addEventListener("click", async () => {
    dialog.showModal();
    await fillInterests(list, status, toggle);
  });
  const me = document.querySelector(".me");
  me?.insertBefore(open, document.getElementById("logout"));
  document.body.append(dialog);
}

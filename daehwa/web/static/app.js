// The chat page: login, conversation list, messages, composer, streamed turns. Talks only to this server's API
// (docs/api.md) plus POST /api/web/render, which turns Markdown into sanitised HTML (docs/web.md).
//
// Safety rule of this file: text from users or models enters the DOM only through `textContent` / `Text` nodes,
// or as HTML the server sanitised, through `setServerHTML` (the one Trusted Types policy the CSP allows).

import { ApiError, api, setCsrfToken, streamTurn } from "./api.js";
import { attachAccount } from "./account.js";
import { attachInterests, renderCards } from "./cards.js";
import { attachComposer } from "./composer.js";
import { el } from "./dom.js";
import { refreshFormChip } from "./forms.js";
import { applyI18n, fillLanguageSelect, locale, setLocale, t } from "./i18n.js";
import { resumeReply } from "./resume.js";

const $ = (id) => document.getElementById(id);

const htmlPolicy = window.trustedTypes
  ? window.trustedTypes.createPolicy("daehwa", { createHTML: (html) => html })
  : { createHTML: (html) => html };

function setServerHTML(el, html) {
  el.innerHTML = htmlPolicy.createHTML(html);
}

const state = {
  user: null,
  conversations: [],
  hasMore: false,
  nextBefore: null,
  query: "",
  current: null, // the open Conversation, or null for the "new chat" screen
  messages: [], // its messages, oldest first
  olderBefore: null, // cursor of the page before the oldest message shown; null once the start is shown
  olderLoad: null, // the request for that page while it runs
  personas: [],
  defaultPersona: null,
  models: [],
  defaultModel: null,
  turns: new Map(), // conversation id -> the turn streaming there
  draftConversation: null, // created by "Start" (speaks-first persona) and not yet written in
};

const htmlCache = new Map(); // assistant text -> sanitised HTML from the server
const RENDER_BATCH = 100;
const MESSAGE_PAGE = 100; // messages per request: the latest when a conversation opens, then older ones on scroll
const OLDER_MARGIN = 400; // px from the top of the list at which the page before is fetched

let composer;
let errorRetry = null;

// -- small helpers ---------------------------------------------------------------------------------------------

function iconButton(label, className, pathD) {
  const button = el("button", `icon-btn ${className}`);
  button.type = "button";
  button.setAttribute("aria-label", label);
  button.title = label;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", pathD);
  svg.append(path);
  button.append(svg);
  return button;
}

const ICONS = {
  copy: "M9 9h10v10H9zM5 15V5h10",
  edit: "M4 20h4L19 9l-4-4L4 16zM13 7l4 4",
  regenerate: "M20 12a8 8 0 1 1-2.3-5.6M20 4v5h-5",
  rename: "M4 20h4L19 9l-4-4L4 16z",
  delete: "M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13",
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function reasonOf(error) {
  if (!(error instanceof ApiError)) return String((error && error.message) || error);
  if (error.status === 0) return t("network_error");
  if (error.status === 429) return t("rate_limited", { seconds: error.retryAfter ?? "?" });
  if (error.code === "not_found") return t("not_found");
  return error.message;
}

function sessionEnded(error) {
  if (error instanceof ApiError && error.status === 401) {
    showLogin(t("session_expired"));
    return true;
  }
  return false;
}

function showError(text, retry) {
  errorRetry = retry || null;
  $("error-text").textContent = text;
  $("error-retry").hidden = !retry;
  $("error-bar").hidden = false;
}

function hideError() {
  errorRetry = null;
  $("error-bar").hidden = true;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Plain http on a LAN address is not a secure context: no async clipboard there.
    const area = el("textarea", "offscreen");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.getAttribute("aria-label");
  button.classList.add("copied");
  button.setAttribute("aria-label", t("copied"));
  button.title = t("copied");
  setTimeout(() => {
    button.classList.remove("copied");
    button.setAttribute("aria-label", label);
    button.title = label;
  }, 1500);
}

// -- login -----------------------------------------------------------------------------------------------------

function showLogin(message) {
  state.user = null;
  setCsrfToken(null);
  $("app").hidden = true;
  $("login-view").hidden = false;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("login-username").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  const error = $("login-error");
  $("login-submit").disabled = true;
  try {
    const me = await api("POST", "/api/auth/login", { username, password });
    $("login-password").value = "";
    error.hidden = true;
    await signedIn(me);
  } catch (e) {
    error.textContent = e instanceof ApiError && e.status === 401 ? t("login_failed") : reasonOf(e);
    error.hidden = false;
    $("login-password").focus();
  } finally {
    $("login-submit").disabled = false;
  }
}

// "Continue as guest": only on the page when the server allows anonymous chat (the template leaves it out otherwise).
async function onGuest() {
  const error = $("login-error");
  $("guest-login").disabled = true;
  try {
    const me = await api("POST", "/api/auth/anonymous");
    error.hidden = true;
    await signedIn(me);
  } catch (e) {
    error.textContent = e instanceof ApiError && e.status === 403 ? t("guest_unavailable") : reasonOf(e);
    error.hidden = false;
  } finally {
    $("guest-login").disabled = false;
  }
}

async function signedIn(me) {
  state.user = me.user;
  setCsrfToken(me.csrf_token);
  $("me-name").textContent = me.user.name;
  attachInterests(me.user);
  attachAccount(me.user, () => signedOut(t("account_deleted")));
  $("login-view").hidden = true;
  $("app").hidden = false;
  await Promise.all([loadPickers(), loadConversations()]);
  await route();
}

async function onLogout() {
  try {
    await api("POST", "/api/auth/logout");
  } catch (e) {
    if (!sessionEnded(e)) return showError(reasonOf(e));
  }
  signedOut();
}

function signedOut(message) {
  for (const turn of state.turns.values()) turn.controller.abort();
  state.turns.clear();
  state.current = null;
  state.messages = [];
  $("messages").replaceChildren();
  history.replaceState(null, "", "/");
  showLogin(message);
}

// -- routing ---------------------------------------------------------------------------------------------------

function conversationIdFromPath() {
  const match = location.pathname.match(/^\/c\/([^/]+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function route() {
  const id = conversationIdFromPath();
  if (id) await openConversation(id, { push: false });
  else showNewChat({ push: false });
}

// -- conversation list -----------------------------------------------------------------------------------------

async function loadConversations({ append = false } = {}) {
  const params = new URLSearchParams({ limit: "50", kind: "chat" });
  if (state.query) params.set("q", state.query);
  if (append && state.nextBefore) params.set("before", state.nextBefore);
  try {
    const page = await api("GET", `/api/conversations?${params}`);
    state.conversations = append ? state.conversations.concat(page.data) : page.data;
    state.hasMore = page.has_more;
    state.nextBefore = page.next_before;
  } catch (e) {
    if (!sessionEnded(e)) showError(t("load_failed", { reason: reasonOf(e) }), () => loadConversations({ append }));
  }
  renderConversations();
}

function renderConversations() {
  const list = $("conv-list");
  list.replaceChildren(...state.conversations.map(conversationItem));
  const empty = $("conv-empty");
  empty.hidden = state.conversations.length > 0;
  empty.textContent = state.query ? t("no_results") : t("no_conversations");
  $("conv-more").hidden = !state.hasMore;
}

function conversationItem(conv) {
  const item = el("li", "conv-item");
  item.dataset.id = conv.id;
  const link = el("a", "conv-link", conv.title || t("untitled"));
  link.href = `/c/${encodeURIComponent(conv.id)}`;
  if (state.current && state.current.id === conv.id) link.setAttribute("aria-current", "page");
  link.addEventListener("click", (event) => {
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    closeSidebar();
    openConversation(conv.id, { push: true });
  });
  const rename = iconButton(t("rename"), "conv-rename", ICONS.rename);
  rename.addEventListener("click", () => startRename(item, conv));
  const remove = iconButton(t("delete"), "conv-delete", ICONS.delete);
  remove.addEventListener("click", () => confirmDelete(conv));
  item.append(link, rename, remove);
  return item;
}

function startRename(item, conv) {
  const input = el("input", "conv-rename-input");
  input.value = conv.title || "";
  input.setAttribute("aria-label", t("rename_label"));
  input.maxLength = 200;
  const link = item.querySelector(".conv-link");
  link.replaceWith(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== conv.title) {
      try {
        const updated = await api("PATCH", `/api/conversations/${encodeURIComponent(conv.id)}`, { title });
        Object.assign(conv, updated);
        if (state.current && state.current.id === conv.id) {
          state.current = { ...state.current, ...updated };
          renderHeader();
        }
      } catch (e) {
        if (!sessionEnded(e)) showError(reasonOf(e));
      }
    }
    renderConversations();
    const again = document.querySelector(`.conv-item[data-id="${CSS.escape(conv.id)}"] .conv-rename`);
    if (again) again.focus();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
}

async function confirmDelete(conv) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = t("confirm_delete", { title: conv.title || t("untitled") });
  dialog.returnValue = "";
  dialog.showModal();
  const answer = await new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
  });
  if (answer !== "ok") return;
  try {
    await api("DELETE", `/api/conversations/${encodeURIComponent(conv.id)}`);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) {
      if (!sessionEnded(e)) showError(reasonOf(e));
      return;
    }
  }
  state.conversations = state.conversations.filter((c) => c.id !== conv.id);
  renderConversations();
  if (state.current && state.current.id === conv.id) showNewChat({ push: true });
}

function bumpConversation(conv) {
  // The server lists newest first: a conversation just written in moves to the top.
  const existing = state.conversations.find((c) => c.id === conv.id);
  state.conversations = [{ ...existing, ...conv }, ...state.conversations.filter((c) => c.id !== conv.id)];
  renderConversations();
}

// -- persona and model pickers (new chat) ----------------------------------------------------------------------

async function loadPickers() {
  try {
    const [personas, models] = await Promise.all([
      api("GET", `/api/personas?locale=${locale()}`),
      api("GET", "/api/models"),
    ]);
    state.personas = personas.data;
    state.defaultPersona = personas.default;
    state.models = models.data;
    state.defaultModel = models.default;
  } catch (e) {
    if (!sessionEnded(e)) showError(t("load_failed", { reason: reasonOf(e) }), loadPickers);
  }
  fillPickers();
}

function personaTitle(persona) {
  if (!persona) return "";
  return (persona.titles && persona.titles[locale()]) || persona.title || persona.name;
}

function fillPickers() {
  const personaSelect = $("persona-select");
  const chosen = personaSelect.value || state.defaultPersona;
  personaSelect.replaceChildren(...state.personas.map((p) => new Option(personaTitle(p), p.name)));
  // A guest is offered only the personas open to guests, which need not include the server's default.
  const offered = (name) => state.personas.some((p) => p.name === name);
  const fallback = offered(state.defaultPersona) ? state.defaultPersona : state.personas[0]?.name;
  personaSelect.value = offered(chosen) ? chosen : fallback || "";

  const modelSelect = $("model-select");
  const model = modelSelect.value;
  const options = [new Option(`${t("model_default")} (${state.defaultModel || "?"})`, "")];
  for (const m of state.models) {
    const option = new Option(m.available ? m.id : `${m.id} (${t("model_unavailable")})`, m.id);
    option.disabled = !m.available;
    if (m.reason) option.title = m.reason;
    options.push(option);
  }
  modelSelect.replaceChildren(...options);
  modelSelect.value = model;
  if (modelSelect.selectedIndex < 0) modelSelect.value = "";
  showPersonaDetails();
}

function selectedPersona() {
  return state.personas.find((p) => p.name === $("persona-select").value) || null;
}

function showPersonaDetails() {
  const persona = selectedPersona();
  const description = persona ? (persona.descriptions && persona.descriptions[locale()]) || persona.description : "";
  $("persona-description").textContent = description || "";
  const box = $("persona-variables");
  const fields = [];
  for (const v of (persona && persona.variables) || []) {
    const label = el("label", "picker");
    label.append(el("span", "", v.description || v.name));
    let input;
    if (v.choices && v.choices.length) {
      input = el("select");
      input.append(...v.choices.map((c) => new Option(c, c)));
    } else {
      input = el("input");
      input.maxLength = 200;
    }
    input.name = v.name;
    input.value = v.default ?? "";
    input.dataset.variable = v.name;
    label.append(input);
    fields.push(label);
  }
  box.replaceChildren(...fields);
  $("start-chat").hidden = !(persona && persona.speaks_first);
}

function chosenVariables() {
  const out = {};
  for (const input of $("persona-variables").querySelectorAll("[data-variable]")) {
    if (input.value.trim()) out[input.dataset.variable] = input.value.trim();
  }
  return out;
}

async function createConversation() {
  const body = { persona: $("persona-select").value || undefined, variables: chosenVariables() };
  const model = $("model-select").value;
  if (model) body.model = model;
  const created = await api("POST", "/api/conversations", body);
  state.current = created.conversation;
  state.messages = created.messages || [];
  setOlder(null);
  history.pushState(null, "", `/c/${encodeURIComponent(created.conversation.id)}`);
  $("new-chat-panel").hidden = true;
  bumpConversation(created.conversation);
  renderHeader();
  refreshFormChip(created.conversation.id);
  renderMessages();
  return created.conversation;
}

async function onStartChat() {
  hideError();
  $("start-chat").disabled = true;
  try {
    await createConversation();
    $("composer-input").focus();
  } catch (e) {
    if (!sessionEnded(e)) showError(reasonOf(e), onStartChat);
  } finally {
    $("start-chat").disabled = false;
  }
}

// -- the open conversation ------------------------------------------------------------------------------------

function showNewChat({ push }) {
  state.current = null;
  refreshFormChip(null);
  state.messages = [];
  setOlder(null);
  if (push) history.pushState(null, "", "/");
  $("messages").replaceChildren();
  $("new-chat-panel").hidden = false;
  hideError();
  fillPickers();
  renderHeader();
  renderConversations();
  updateBusy();
  $("composer-input").focus();
}

function renderHeader() {
  const conv = state.current;
  $("chat-title").textContent = conv ? conv.title || t("untitled") : t("new_chat");
  if (!conv) {
    $("chat-meta").textContent = "";
    return;
  }
  const persona = state.personas.find((p) => p.name === conv.persona);
  $("chat-meta").textContent = [persona ? personaTitle(persona) : conv.persona, conv.model].filter(Boolean).join(" · ");
  document.title = `${conv.title || t("untitled")} · ${t("app_name")}`;
}

async function openConversation(id, { push }) {
  hideError();
  let data;
  try {
    data = await api("GET", messagesPath(id));
  } catch (e) {
    if (sessionEnded(e)) return;
    showNewChat({ push: false });
    history.replaceState(null, "", "/");
    showError(e instanceof ApiError && e.status === 404 ? t("not_found") : reasonOf(e));
    return;
  }
  if (push) history.pushState(null, "", `/c/${encodeURIComponent(id)}`);
  state.current = data.conversation;
  state.messages = data.messages;
  setOlder(data);
  $("new-chat-panel").hidden = true;
  renderHeader();
  refreshFormChip(id);
  renderConversations();
  renderMessages();
  updateBusy();
  const last = data.messages[data.messages.length - 1];
  if (last && last.status === "streaming" && !state.turns.has(id)) followStreaming(id);
  $("composer-input").focus();
  maybeLoadOlder(); // a short latest page may not fill the screen
}

async function followStreaming(id) {
  // A reply still being written (e.g. the page was reloaded mid-reply): the server either finishes it or, because
  // the old connection is gone, stores it as interrupted. Poll until it is final.
  for (let i = 0; i < 300; i++) {
    await sleep(1000);
    if (!state.current || state.current.id !== id || state.turns.has(id)) return;
    let data;
    try {
      data = await api("GET", messagesPath(id));
    } catch {
      continue;
    }
    if (!state.current || state.current.id !== id || state.turns.has(id)) return;
    const last = data.messages[data.messages.length - 1];
    // The fresh latest page replaces its own messages; older pages already loaded stay.
    const at = data.messages.length ? state.messages.findIndex((m) => m.id === data.messages[0].id) : -1;
    if (at >= 0) {
      state.messages = state.messages.slice(0, at).concat(data.messages);
    } else {
      state.messages = data.messages;
      setOlder(data);
    }
    if (!last || last.status !== "streaming") {
      renderMessages();
      return;
    }
    const node = messageNode(last.id);
    if (node) node.querySelector(".msg-body").textContent = last.content;
  }
}

// -- older messages: one page at a time, fetched when the list is scrolled near its top ----------------------------

function messagesPath(id, before) {
  const params = new URLSearchParams({ limit: String(MESSAGE_PAGE) });
  if (before) params.set("before", before);
  return `/api/conversations/${encodeURIComponent(id)}?${params}`;
}

/** Remember where the page before the shown messages starts (`page` is an API answer, or null for none). */
function setOlder(page) {
  state.olderBefore = page && page.has_more ? page.next_before : null;
  state.olderLoad = null; // a request still running for another conversation is ignored when it answers
  showOlderStatus(false);
}

function maybeLoadOlder() {
  if ($("messages").scrollTop < OLDER_MARGIN) loadOlder();
}

async function loadOlder() {
  if (!state.current || !state.olderBefore || state.olderLoad) return;
  const load = { id: state.current.id, before: state.olderBefore };
  state.olderLoad = load;
  const box = $("messages");
  showOlderStatus(true);
  let page = null;
  let error = null;
  try {
    page = await api("GET", messagesPath(load.id, load.before));
    // Their Markdown before they are shown: a reply turning from plain text into HTML just above the reader would
    // move the page under them. If it fails they come as plain text, rendered later.
    const replies = page.messages.filter((m) => m.role === "assistant" && m.status !== "streaming");
    await fetchHTML(replies.map((m) => m.content));
  } catch (e) {
    error = e;
  }
  if (state.olderLoad !== load) return; // another conversation was opened meanwhile
  state.olderLoad = null;
  if (error) {
    showOlderStatus(false);
    if (sessionEnded(error)) return;
    // The cursor was deleted (regenerate or edit from another tab): start again from the latest page.
    if (error instanceof ApiError && error.param === "before") return openConversation(load.id, { push: false });
    showError(t("load_failed", { reason: reasonOf(error) }), loadOlder);
    return;
  }
  const known = new Set(state.messages.map((m) => m.id));
  const older = page.messages.filter((m) => !known.has(m.id));
  state.messages = older.concat(state.messages);
  state.olderBefore = page.has_more ? page.next_before : null;
  // Keep the reader's place: the oldest message shown stays where it is on screen, the new ones go above it.
  const anchor = box.querySelector(".msg");
  const top = anchor ? anchor.getBoundingClientRect().top : 0;
  const fragment = document.createDocumentFragment();
  const pending = [];
  for (const m of older) {
    if (m.role === "system") continue;
    const node = messageElement(m);
    fragment.append(node);
    if (m.role === "assistant" && m.status !== "streaming" && !htmlCache.has(m.content)) pending.push(node);
  }
  showOlderStatus(false);
  const status = box.querySelector(".older-status");
  if (status) status.after(fragment);
  else box.prepend(fragment);
  if (anchor) box.scrollTop += anchor.getBoundingClientRect().top - top;
  renderLater(pending.reverse());
  maybeLoadOlder();
}

function olderStatus() {
  const box = dotsStatus("older-status", "loading_older");
  box.hidden = !state.olderLoad;
  return box;
}

function showOlderStatus(visible) {
  const status = $("messages").querySelector(".older-status");
  if (status) status.hidden = !visible;
}

// -- messages --------------------------------------------------------------------------------------------------

function visibleMessages() {
  return state.messages.filter((m) => m.role !== "system");
}

function messageNode(id) {
  return $("messages").querySelector(`.msg[data-id="${CSS.escape(id)}"]`);
}

function nearBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function renderMessages() {
  const box = $("messages");
  const fragment = document.createDocumentFragment();
  const pending = [];
  for (const m of visibleMessages()) {
    const node = messageElement(m);
    fragment.append(node);
    if (m.role === "assistant" && m.status !== "streaming" && !htmlCache.has(m.content)) pending.push(node);
  }
  box.replaceChildren(olderStatus(), fragment);
  refreshActions();
  scrollToBottom();
  // Incremental rendering: everything shows at once as plain text, then the Markdown arrives in batches, newest
  // (the part on screen) first.
  renderLater(pending.reverse());
}

async function renderLater(nodes) {
  for (let i = 0; i < nodes.length; i += RENDER_BATCH) {
    const batch = nodes.slice(i, i + RENDER_BATCH).filter((n) => n.isConnected);
    if (!(await fetchHTML(batch.map((n) => n.message.content)))) return; // the plain text stays: still readable, still safe
    const stick = nearBottom();
    for (const node of batch) if (node.isConnected) fillBody(node);
    if (stick) scrollToBottom();
  }
}

/** Put the server's HTML for these replies' Markdown into htmlCache; false if the server could not be asked. */
async function fetchHTML(contents) {
  const texts = [...new Set(contents.filter((c) => !htmlCache.has(c)))];
  if (!texts.length) return true;
  let result;
  try {
    result = await api("POST", "/api/web/render", { items: texts.map((content) => ({ role: "assistant", content })) });
  } catch (e) {
    sessionEnded(e);
    return false;
  }
  texts.forEach((text, j) => htmlCache.set(text, result.html[j]));
  return true;
}

function messageElement(m) {
  const node = el("article", `msg msg-${m.role}`);
  node.dataset.id = m.id;
  node.message = m;
  const main = el("div", "msg-main");
  const role = el("div", "msg-role", m.role === "user" ? t("you") : assistantName());
  const body = el("div", "msg-body");
  const note = el("div", "msg-note");
  note.hidden = true;
  const actions = el("div", "msg-actions");
  const copy = iconButton(t("copy"), "msg-copy", ICONS.copy);
  copy.addEventListener("click", () => copyText(node.message.content, copy));
  actions.append(copy);
  main.append(role, body, note, actions);
  node.append(main);
  fillBody(node);
  return node;
}

function assistantName() {
  const conv = state.current;
  const persona = conv && state.personas.find((p) => p.name === conv.persona);
  return persona ? personaTitle(persona) : t("assistant");
}

function fillBody(node) {
  const m = node.message;
  const body = node.querySelector(".msg-body");
  node.dataset.status = m.status;
  if (m.role === "assistant" && m.status !== "streaming" && htmlCache.has(m.content)) {
    body.classList.remove("plain");
    setServerHTML(body, htmlCache.get(m.content));
    enhanceCode(body);
  } else {
    body.classList.add("plain");
    body.textContent = m.content;
  }
  if (m.role === "assistant" && m.status === "streaming" && !m.content) body.replaceChildren(thinking());
  renderCards(node, m);
  const note = node.querySelector(".msg-note");
  const text = statusNote(m);
  note.hidden = !text;
  note.textContent = text;
  if (m.role === "assistant" && CONTEXT_STATUSES.has(m.status) && !node.querySelector(".msg-context")) {
    note.after(contextDisclosure(node));
  }
}

// -- the "context" disclosure under a reply: what the model was sent for it (loaded when first opened) ----------

const CONTEXT_STATUSES = new Set(["complete", "interrupted", "fallback"]);

function contextDisclosure(node) {
  const box = el("details", "msg-context");
  const summary = el("summary", "msg-context-toggle", t("context"));
  const list = el("ul", "msg-context-lines");
  box.append(summary, list);
  box.addEventListener("toggle", async () => {
    if (!box.open || box.dataset.loaded) return;
    box.dataset.loaded = "1";
    const m = node.message;
    try {
      const path = `/api/conversations/${encodeURIComponent(m.conversation_id)}/messages/${encodeURIComponent(m.id)}/context`;
      const result = await api("GET", path);
      fillContext(list, result.context);
    } catch (e) {
      delete box.dataset.loaded;
      if (!sessionEnded(e)) list.replaceChildren(el("li", "", t("context_failed")));
    }
  });
  return box;
}

function fillContext(list, report) {
  if (!report) {
    list.replaceChildren(el("li", "", t("context_none")));
    return;
  }
  const byId = new Map(visibleMessages().map((m) => [m.id, m]));
  const sum = (items) => items.reduce((n, item) => n + item.tokens, 0);
  const lines = [
    t("context_tokens", {
      used: report.tokens,
      budget: report.budget.tokens,
      how: t(report.exact ? "context_exact" : "context_estimate"),
      tokenizer: report.tokenizer,
    }),
    t("context_recent", { count: report.messages.length, tokens: sum(report.messages), dropped: report.dropped }),
  ];
  if (report.summary) lines.push(t("context_summary", { count: report.summary.messages, tokens: report.summary.tokens }));
  for (const r of report.recalled) {
    const first = byId.get(r.ids[0]);
    const text = first ? first.content.slice(0, 80) : r.ids.join(" + ");
    lines.push(t("context_recalled", { score: r.score.toFixed(2), tokens: r.tokens, text }));
  }
  for (const n of report.notes) lines.push(t("context_note", { text: n }));
  list.replaceChildren(...lines.map((line) => el("li", "", line)));
}

function statusNote(m) {
  switch (m.status) {
    case "interrupted":
      return t("status_interrupted");
    case "error":
      return m.error && m.error.message ? `${t("status_error")} ${m.error.message}` : t("status_error");
    case "blocked":
      return t("status_blocked");
    case "fallback":
      return t("status_fallback");
    case "streaming":
      return state.turns.has(m.conversation_id) ? "" : t("generating");
    default:
      return "";
  }
}

function thinking() {
  return dotsStatus("thinking", "thinking");
}

// A live status line with three animated dots: <div class="NAME"><span class="dots"/><span class="NAME-text"/>.
function dotsStatus(name, textKey) {
  const box = el("div", name);
  box.setAttribute("role", "status");
  const dots = el("span", "dots");
  dots.setAttribute("aria-hidden", "true");
  dots.append(el("i"), el("i"), el("i"));
  box.append(dots, el("span", `${name}-text`, t(textKey)));
  return box;
}

function enhanceCode(body) {
  for (const block of body.querySelectorAll(".codeblock")) {
    const bar = el("div", "code-bar");
    bar.append(el("span", "code-lang", block.dataset.lang || ""));
    const copy = iconButton(t("copy_code"), "code-copy", ICONS.copy);
    copy.append(el("span", "code-copy-label", t("copy")));
    copy.addEventListener("click", () => copyText(block.querySelector("code").textContent, copy));
    bar.append(copy);
    block.prepend(bar);
  }
}

let actionNodes = [];

function refreshActions() {
  // Edit belongs to the last user message, Regenerate to the last reply, and neither while a turn runs.
  for (const button of actionNodes) button.remove();
  actionNodes = [];
  if (!state.current || state.turns.has(state.current.id)) return;
  const messages = visibleMessages();
  const lastUser = [...messages].reverse().find((m) => m.role === "user");
  const last = messages[messages.length - 1];
  if (lastUser) {
    const node = messageNode(lastUser.id);
    if (node) {
      const edit = iconButton(t("edit"), "msg-edit", ICONS.edit);
      edit.addEventListener("click", () => startEdit(node));
      node.querySelector(".msg-actions").append(edit);
      actionNodes.push(edit);
    }
  }
  if (last && last.role === "assistant" && lastUser) {
    const node = messageNode(last.id);
    if (node) {
      const regen = iconButton(t("regenerate"), "msg-regenerate", ICONS.regenerate);
      regen.addEventListener("click", () => regenerate());
      node.querySelector(".msg-actions").append(regen);
      actionNodes.push(regen);
    }
  }
}

// -- turns -----------------------------------------------------------------------------------------------------

function currentTurn() {
  return state.current ? state.turns.get(state.current.id) : undefined;
}

function updateBusy() {
  const busy = Boolean(currentTurn());
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  document.body.classList.toggle("busy", busy);
}

async function onSend() {
  const input = $("composer-input");
  const text = input.value;
  if (!text.trim() || currentTurn()) return;
  hideError();
  let conv = state.current;
  if (!conv) {
    try {
      conv = await createConversation();
    } catch (e) {
      if (!sessionEnded(e)) showError(t("send_failed", { reason: reasonOf(e) }), onSend);
      return;
    }
  }
  input.value = "";
  composer.grow();
  const user = { id: "pending-user", role: "user", content: text, status: "complete", conversation_id: conv.id };
  await runTurn(conv, `/api/conversations/${encodeURIComponent(conv.id)}/messages`, { content: text }, {
    user,
    onRefused: (e) => {
      // Nothing was stored: the text goes back into the box, and Retry sends it again.
      if (!input.value) input.value = text;
      else input.value = `${text}\n${input.value}`;
      composer.grow();
      showError(t("send_failed", { reason: reasonOf(e) }), onSend);
      input.focus();
    },
  });
}

async function regenerate() {
  const conv = state.current;
  if (!conv || currentTurn()) return;
  hideError();
  const last = state.messages[state.messages.length - 1];
  if (last && last.role === "assistant") {
    state.messages = state.messages.slice(0, -1);
    const node = messageNode(last.id);
    if (node) node.remove();
  }
  await runTurn(conv, `/api/conversations/${encodeURIComponent(conv.id)}/regenerate`, {}, {
    onRefused: (e) => {
      if (last && last.role === "assistant") {
        state.messages.push(last);
        $("messages").append(messageElement(last));
        refreshActions();
      }
      showError(reasonOf(e), regenerate);
    },
  });
}

function startEdit(node) {
  const m = node.message;
  const body = node.querySelector(".msg-body");
  if (node.querySelector(".msg-editor")) return;
  const editor = el("div", "msg-editor");
  const area = el("textarea", "msg-edit-input");
  area.value = m.content;
  area.setAttribute("aria-label", t("edit"));
  const save = el("button", "btn btn-primary btn-small", t("save_send"));
  save.type = "button";
  const cancel = el("button", "btn btn-ghost btn-small", t("cancel"));
  cancel.type = "button";
  const buttons = el("div", "editor-actions");
  buttons.append(cancel, save);
  editor.append(area, buttons);
  body.hidden = true;
  node.querySelector(".msg-actions").hidden = true;
  body.after(editor);
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
  const close = () => {
    editor.remove();
    body.hidden = false;
    node.querySelector(".msg-actions").hidden = false;
  };
  cancel.addEventListener("click", () => {
    close();
    node.querySelector(".msg-edit")?.focus();
  });
  const submit = () => {
    const text = area.value;
    if (!text.trim()) return;
    close();
    submitEdit(m, text);
  };
  save.addEventListener("click", submit);
  attachComposer(area, { onSend: submit, onEscape: () => cancel.click() });
}

async function submitEdit(original, text) {
  const conv = state.current;
  if (!conv || currentTurn()) return;
  hideError();
  const index = state.messages.findIndex((m) => m.id === original.id);
  const removed = index >= 0 ? state.messages.slice(index) : [];
  if (index >= 0) state.messages = state.messages.slice(0, index);
  for (const m of removed) messageNode(m.id)?.remove();
  const user = { ...original, id: "pending-user", content: text };
  await runTurn(conv, `/api/conversations/${encodeURIComponent(conv.id)}/edit`, { content: text }, {
    user,
    onRefused: (e) => {
      state.messages = state.messages.concat(removed);
      renderMessages();
      const node = messageNode(original.id);
      if (node) {
        startEdit(node);
        node.querySelector(".msg-edit-input").value = text;
      }
      showError(t("send_failed", { reason: reasonOf(e) }), () => submitEdit(original, text));
    },
  });
}

/**
 * Stream one turn into the page. `ctx.user` is the user message shown at once (absent for regenerate);
 * `ctx.onRefused(error)` runs when the server refused the turn before starting it (nothing stored).
 */
async function runTurn(conv, path, body, ctx) {
  const box = $("messages");
  const userNode = ctx.user ? messageElement(ctx.user) : null;
  if (userNode) {
    userNode.classList.add("pending");
    box.append(userNode);
  }
  const reply = {
    id: "pending-reply",
    role: "assistant",
    content: "",
    status: "streaming",
    conversation_id: conv.id,
  };
  const turn = {
    conversationId: conv.id,
    controller: new AbortController(),
    started: false,
    finished: false,
    stopRequested: false,
    reply,
    replyNode: null,
    text: null,
    error: null,
  };
  state.turns.set(conv.id, turn);
  refreshActions();
  updateBusy();
  turn.replyNode = messageElement(reply);
  box.append(turn.replyNode);
  scrollToBottom();

  const showing = () => state.current && state.current.id === conv.id;
  const onEvent = (name, data, id) => {
    if (name === "start") {
      turn.started = true;
      reply.id = data.message_id;
      turn.replyNode.dataset.id = data.message_id;
      if (data.user_message) {
        Object.assign(ctx.user, data.user_message);
        state.messages.push(data.user_message);
        if (userNode) {
          userNode.dataset.id = data.user_message.id;
          userNode.classList.remove("pending");
        }
      }
      state.messages.push(reply);
      if (data.conversation) {
        if (showing()) {
          state.current = { ...state.current, ...data.conversation };
          renderHeader();
        }
        bumpConversation(data.conversation);
      }
    } else if (name === "delta") {
      if (data.index) return;
      if (id !== null && id !== undefined) turn.offset = id; // where a resume continues
      const stick = nearBottom();
      if (turn.text === null) {
        turn.text = document.createTextNode("");
        turn.replyNode.querySelector(".msg-body").replaceChildren(turn.text);
      }
      turn.text.appendData(data.text);
      reply.content += data.text;
      if (stick && showing()) scrollToBottom();
    } else if (name === "error") {
      turn.error = data.error;
    } else if (name === "done") {
      turn.finished = true;
      finishReply(turn, data);
    }
  };

  try {
    await streamTurn(path, body, onEvent, { signal: turn.controller.signal });
    if (!turn.finished) throw new ApiError(0, null, null);
  } catch (e) {
    if (!turn.started && !(e && e.name === "AbortError")) {
      userNode?.remove();
      turn.replyNode.remove();
      state.turns.delete(conv.id);
      updateBusy();
      if (!sessionEnded(e) && showing()) ctx.onRefused(e);
      refreshActions();
      return;
    }
    if (!turn.finished && !(e && e.name === "AbortError")) {
      // The connection broke mid-reply: the reply goes on on the server; any process sends the rest.
      const signal = turn.controller.signal;
      await resumeReply(conv.id, reply.id, turn.offset, onEvent, { signal }).catch(() => false);
    }
    if (!turn.finished) {
      // Stopped locally or the connection broke mid-reply: the server keeps what was written as "interrupted".
      reply.status = "interrupted";
      turn.finished = true;
      await renderFinal(turn);
      if (!(e && e.name === "AbortError") && showing()) showError(reasonOf(e), () => regenerate());
    }
  } finally {
    state.turns.delete(conv.id);
    if (showing()) {
      updateBusy();
      refreshActions();
    }
  }
  // The user left this conversation and came back while the reply streamed: the page shows a fresh copy, not the
  // nodes this turn wrote into, so read the finished conversation again.
  if (showing() && !turn.replyNode.isConnected) await openConversation(conv.id, { push: false });
  if (turn.started) refreshTitle(conv.id);
  if (showing()) refreshFormChip(conv.id);
}

async function refreshTitle(id) {
  // A conversation's first message names it; re-read the list (one small request) to pick up the new title.
  await loadConversations();
  const fresh = state.conversations.find((c) => c.id === id);
  if (fresh && state.current && state.current.id === id && fresh.title !== state.current.title) {
    state.current = { ...state.current, title: fresh.title };
    renderHeader();
  }
}

async function finishReply(turn, result) {
  const message = result.message || {};
  Object.assign(turn.reply, message);
  await renderFinal(turn);
  const failed = result.outcome === "error" || turn.error;
  if (failed && state.current && state.current.id === turn.conversationId) {
    const err = turn.error || result.error || message.error;
    showError((err && err.message) || t("status_error"), () => regenerate());
  }
}

async function renderFinal(turn) {
  const reply = turn.reply;
  const node = turn.replyNode;
  node.message = reply;
  if (reply.content && !htmlCache.has(reply.content)) {
    try {
      const result = await api("POST", "/api/web/render", { items: [{ role: "assistant", content: reply.content }] });
      htmlCache.set(reply.content, result.html[0]);
    } catch (e) {
      sessionEnded(e);
    }
  }
  if (node.isConnected) {
    const stick = nearBottom();
    fillBody(node);
    if (stick) scrollToBottom();
  }
}

async function onStop() {
  const turn = currentTurn();
  if (!turn || turn.stopRequested) return;
  turn.stopRequested = true;
  try {
    const result = await api("POST", `/api/conversations/${encodeURIComponent(turn.conversationId)}/stop`);
    if (result && result.stopped) {
      // The stream ends with "done" (outcome interrupted); give it a moment before cutting the connection.
      for (let i = 0; i < 30 && !turn.finished; i++) await sleep(100);
    }
  } catch {
    // Fall through: closing the connection stops the turn too.
  }
  if (!turn.finished) turn.controller.abort();
}

// -- layout: sidebar drawer (narrow screens), theme, language -----------------------------------------------

function openSidebar() {
  $("sidebar").classList.add("open");
  $("scrim").hidden = false;
  $("sidebar-open").setAttribute("aria-expanded", "true");
  $("new-chat").focus();
}

function closeSidebar() {
  if (!$("sidebar").classList.contains("open")) return;
  $("sidebar").classList.remove("open");
  $("scrim").hidden = true;
  $("sidebar-open").setAttribute("aria-expanded", "false");
}

function onLanguage(event) {
  setLocale(event.target.value);
  $("lang-select").value = locale();
  $("login-lang").value = locale();
  renderConversations();
  fillPickers();
  renderHeader();
  if (state.current) renderMessages();
}

function onTheme(event) {
  try {
    localStorage.setItem("daehwa.theme", event.target.value);
  } catch {
    // Private mode: the theme lasts for this page only.
  }
  if (event.target.value === "auto") window.daehwaTheme.apply();
  else document.documentElement.dataset.theme = event.target.value;
}

// -- start -----------------------------------------------------------------------------------------------------

function bind() {
  fillLanguageSelect($("lang-select"));
  fillLanguageSelect($("login-lang"));
  applyI18n(document);
  $("theme-select").value = window.daehwaTheme ? window.daehwaTheme.choice() : "auto";

  $("login-form").addEventListener("submit", onLogin);
  $("guest-login")?.addEventListener("click", onGuest);
  $("logout").addEventListener("click", onLogout);
  $("lang-select").addEventListener("change", onLanguage);
  $("login-lang").addEventListener("change", onLanguage);
  $("theme-select").addEventListener("change", onTheme);
  $("new-chat").addEventListener("click", () => {
    closeSidebar();
    showNewChat({ push: true });
  });
  $("start-chat").addEventListener("click", onStartChat);
  $("persona-select").addEventListener("change", showPersonaDetails);
  $("sidebar-open").addEventListener("click", openSidebar);
  $("sidebar-close").addEventListener("click", () => {
    closeSidebar();
    $("sidebar-open").focus();
  });
  $("scrim").addEventListener("click", closeSidebar);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && $("sidebar").classList.contains("open")) {
      closeSidebar();
      $("sidebar-open").focus();
    }
  });
  let searchTimer;
  $("conv-search").addEventListener("input", (event) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.query = event.target.value.trim();
      state.nextBefore = null;
      loadConversations();
    }, 200);
  });
  $("conv-more").addEventListener("click", () => loadConversations({ append: true }));
  $("messages").addEventListener("scroll", maybeLoadOlder, { passive: true });
  $("error-retry").addEventListener("click", () => {
    const retry = errorRetry;
    hideError();
    if (retry) retry();
  });
  $("error-dismiss").addEventListener("click", hideError);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    onSend();
  });
  $("stop").addEventListener("click", onStop);
  composer = attachComposer($("composer-input"), {
    onSend,
    onEscape: () => {
      if (currentTurn()) onStop();
    },
  });
  window.addEventListener("popstate", () => {
    if (state.user) route();
  });
}

async function boot() {
  bind();
  try {
    await signedIn(await api("GET", "/api/auth/me"));
  } catch (e) {
    showLogin(e instanceof ApiError && e.status !== 401 ? reasonOf(e) : "");
  }
  document.body.dataset.ready = "true";
}

boot();

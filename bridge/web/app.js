// The live page: a small chat dashboard built only on /client.js (no Chatwoot credentials).
import { connect } from "/client.js";

const TYPING_TTL = 30000; // Chatwoot's dashboard drops a typing indicator after 30 s
const TITLE = "Chatwoot bridge";
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const hash = new URLSearchParams(location.hash.slice(1));
const token = hash.get("token") ?? params.get("token") ?? undefined;
const filterAccounts = params.get("accounts")?.split(",").map(Number).filter(Boolean) ?? null;

const state = {
  accounts: [],
  account: null,
  commands: new Set(),
  conversations: new Map(), // "a:c" -> conversation (push shape)
  open: null, // "a:c"
  thread: new Map(), // message id -> message, for the open conversation
  full: false, // the last history page was full: older ones exist
  pending: new Map(), // echo_id -> { key, content, created_at }
  typing: new Map(), // "a:c" -> { name, private, timer }
  online: new Set(), // "a:contact id"
  fresh: new Map(), // "a:c" -> new messages not seen (title badge)
  listRefresh: null,
  replayed: 0,
};

const key = (account, conversation) => `${account}:${conversation}`;
const since = sessionStorage.getItem("bridge.since") ?? undefined;
const bridge = connect({ token, accounts: filterAccounts, since });
window.bridge = bridge; // for the console (and the browser tests)

// Connection indicator

const LABELS = {
  live: "Live",
  polling: "Polling Chatwoot",
  down: "Chatwoot unreachable",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  closed: "Disconnected",
};

bridge.on("state", ({ connection }) => {
  const el = $("connection");
  el.dataset.state = connection;
  el.querySelector(".label").textContent = LABELS[connection] ?? connection;
  el.title = bridge.lastError ? bridge.lastError.message : "";
});

bridge.on("error", (error) => toast(error.message));

bridge.on("welcome", (welcome) => {
  state.replayed = welcome.replayed;
  document.body.dataset.replayed = String(welcome.replayed);
  document.body.dataset.epoch = welcome.epoch;
  state.commands = new Set(welcome.client?.commands ?? []);
  const accounts = welcome.accounts ?? filterAccounts ?? [];
  const first = state.accounts.length === 0;
  state.accounts = accounts;
  renderAccounts();
  renderComposer();
  if (first || !state.account) {
    state.account = accounts[0] ?? null;
    renderAccounts();
    loadConversations();
  }
});

bridge.on("reset", () => {
  // The bridge could not replay what we missed: start again from Chatwoot's state.
  loadConversations();
  if (state.open) openConversation(state.open, { quiet: true });
});

// Events

// Where a reload resumes from: the last event seen, or the head at the welcome or reset.
function savePosition() {
  const at = bridge.position;
  if (at) sessionStorage.setItem("bridge.since", `${at.epoch}:${at.seq}`);
}
bridge.on("*", savePosition);
bridge.on("welcome", savePosition);
bridge.on("reset", savePosition);

bridge.on("message.created", ({ account_id: account, conversation_id: cid, data }) => {
  if (cid === null) return;
  const k = key(account, cid);
  const conv = upsertConversation(account, { id: cid, ...(data.conversation ?? {}) }, { partial: true });
  if (!data.private && data.message_type !== 2) conv.messages = [data];
  conv.last_activity_at = Math.max(conv.last_activity_at ?? 0, data.created_at ?? 0);
  const incoming = data.message_type === 0;
  if (k === state.open) {
    addMessage(data);
    if (incoming) clearTyping(k);
    if (incoming && document.visibilityState === "visible") markRead(account, cid, { force: true });
  } else if (incoming) {
    if (data.conversation?.unread_count === undefined) conv.unread_count = (conv.unread_count ?? 0) + 1;
    state.fresh.set(k, (state.fresh.get(k) ?? 0) + 1);
  }
  if (!conv.meta) scheduleListRefresh();
  renderList();
  renderTitle();
});

bridge.on("message.updated", ({ account_id: account, conversation_id: cid, data }) => {
  if (key(account, cid) === state.open && state.thread.has(data.id)) addMessage(data);
  const conv = state.conversations.get(key(account, cid));
  if (conv?.messages?.[0]?.id === data.id) {
    conv.messages = [data];
    renderList();
  }
});

for (const name of [
  "conversation.created",
  "conversation.updated",
  "conversation.status_changed",
  "conversation.contact_changed",
  "assignee.changed",
  "team.changed",
  "conversation.read",
]) {
  bridge.on(name, ({ account_id: account, data }) => {
    const conv = upsertConversation(account, data);
    renderList();
    if (key(account, conv.id) === state.open) renderThreadHead();
    if (name === "conversation.read" && key(account, conv.id) === state.open) renderMessages();
  });
}

bridge.on("conversation.typing_on", ({ account_id: account, data }) => {
  const cid = data.conversation?.id;
  if (!cid) return;
  const k = key(account, cid);
  clearTimeout(state.typing.get(k)?.timer);
  const timer = setTimeout(() => clearTyping(k), TYPING_TTL);
  state.typing.set(k, { name: data.user?.name ?? "Someone", private: data.is_private, timer });
  renderTyping();
  renderList();
});

bridge.on("conversation.typing_off", ({ account_id: account, data }) => {
  if (data.conversation?.id) clearTyping(key(account, data.conversation.id));
});

bridge.on("presence.update", ({ account_id: account, data }) => {
  for (const k of [...state.online]) if (k.startsWith(`${account}:`)) state.online.delete(k);
  for (const [id, status] of Object.entries(data.contacts ?? {})) {
    if (status === "online") state.online.add(key(account, id));
  }
  renderList();
  renderThreadHead();
});

// Loading

async function loadConversations() {
  if (!state.account || !state.commands.has("history")) {
    renderList();
    return;
  }
  const status = $("status-filter").value;
  try {
    const { conversations } = await bridge.conversations({ accountId: state.account, status });
    const seen = new Set();
    for (const conv of conversations) {
      seen.add(key(state.account, conv.id));
      upsertConversation(state.account, conv, { fromList: true });
    }
    for (const [k, conv] of state.conversations) {
      if (k.startsWith(`${state.account}:`) && !seen.has(k) && conv.meta && status !== "all") {
        if (conv.status !== status) state.conversations.delete(k);
      }
    }
    renderList();
  } catch (error) {
    toast(`Could not load conversations: ${error.message}`);
  }
}

function scheduleListRefresh() {
  clearTimeout(state.listRefresh);
  state.listRefresh = setTimeout(loadConversations, 500);
}

async function openConversation(k, { quiet = false } = {}) {
  const [account, cid] = k.split(":").map(Number);
  if (state.open !== k) {
    state.open = k;
    state.thread = new Map();
    state.full = false;
  }
  state.fresh.delete(k);
  $("thread-empty").hidden = true;
  $("thread-body").hidden = false;
  renderThreadHead();
  renderTyping();
  renderList();
  renderTitle();
  if (!quiet) renderMessages();
  if (!state.commands.has("history")) return;
  try {
    const { messages } = await bridge.messages({ accountId: account, conversationId: cid });
    if (state.open !== k) return;
    for (const message of messages) state.thread.set(message.id, message);
    state.full = messages.length >= 20;
    renderMessages({ scroll: true });
  } catch (error) {
    toast(`Could not load messages: ${error.message}`);
  }
  markRead(account, cid);
}

async function loadOlder() {
  if (!state.open || !state.thread.size) return;
  const [account, cid] = state.open.split(":").map(Number);
  const before = Math.min(...state.thread.keys());
  const { messages } = await bridge.messages({ accountId: account, conversationId: cid, before });
  for (const message of messages) state.thread.set(message.id, message);
  state.full = messages.length >= 20;
  renderMessages();
}

async function markRead(account, cid, { force = false } = {}) {
  const conv = state.conversations.get(key(account, cid));
  if (!conv || (!conv.unread_count && !force)) return;
  if (!state.commands.has("conversations.read")) return;
  conv.unread_count = 0;
  renderList();
  try {
    const { conversation } = await bridge.markRead({ accountId: account, conversationId: cid });
    if (conversation) upsertConversation(account, conversation);
    renderList();
  } catch (error) {
    toast(`Could not mark as read: ${error.message}`);
  }
}

function readingNow(k) {
  return k === state.open && document.visibilityState === "visible" && state.commands.has("conversations.read");
}

// Sending and typing

let typingSentAt = 0;
let typingOffTimer = null;

async function sendDraft() {
  const draft = $("draft");
  const content = draft.value.trim();
  if (!content || !state.open) return;
  const [account, cid] = state.open.split(":").map(Number);
  const echoId = `page-${crypto.randomUUID()}`;
  state.pending.set(echoId, { key: state.open, content, created_at: Date.now() / 1000 });
  draft.value = "";
  renderMessages({ scroll: true });
  stopTyping(account, cid);
  try {
    const message = await bridge.send({ accountId: account, conversationId: cid, content, echoId });
    addMessage(message);
  } catch (error) {
    const pending = state.pending.get(echoId);
    if (pending) pending.failed = error.message;
    renderMessages();
    toast(`Not sent: ${error.message}`);
  }
}

function onDraftInput() {
  if (!state.open || !state.commands.has("typing")) return;
  const [account, cid] = state.open.split(":").map(Number);
  const now = Date.now();
  if (now - typingSentAt > 5000) {
    typingSentAt = now;
    bridge.typing({ accountId: account, conversationId: cid, on: true }).catch(() => {});
  }
  clearTimeout(typingOffTimer);
  typingOffTimer = setTimeout(() => stopTyping(account, cid), 3000);
}

function stopTyping(account, cid) {
  clearTimeout(typingOffTimer);
  if (!typingSentAt) return;
  typingSentAt = 0;
  bridge.typing({ accountId: account, conversationId: cid, on: false }).catch(() => {});
}

// State helpers

function upsertConversation(account, data, { partial = false, fromList = false } = {}) {
  const k = key(account, data.id);
  const old = state.conversations.get(k);
  const conv = { ...(old ?? { id: data.id, account_id: account, unread_count: 0 }) };
  for (const [name, value] of Object.entries(data)) {
    if (value === undefined) continue;
    if (name === "messages" && old?.messages?.[0] && value?.[0] && value[0].id < old.messages[0].id) continue;
    conv[name] = value;
  }
  if (partial && !old) conv.messages = [];
  if (fromList && old && old.last_activity_at > (conv.last_activity_at ?? 0)) conv.last_activity_at = old.last_activity_at;
  // Counts in events are computed before our own read reached Chatwoot.
  if (readingNow(k) && state.thread.size) conv.unread_count = 0;
  state.conversations.set(k, conv);
  return conv;
}

function addMessage(message) {
  if (message.echo_id) state.pending.delete(message.echo_id);
  const old = state.thread.get(message.id);
  state.thread.set(message.id, old ? { ...old, ...message } : message);
  renderMessages({ scroll: !old });
}

function clearTyping(k) {
  const typing = state.typing.get(k);
  if (!typing) return;
  clearTimeout(typing.timer);
  state.typing.delete(k);
  renderTyping();
  renderList();
}

// Rendering (textContent only: nothing from Chatwoot is ever parsed as HTML)

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function renderAccounts() {
  const select = $("account");
  select.hidden = state.accounts.length < 2;
  select.replaceChildren(
    ...state.accounts.map((id) => {
      const option = el("option", "", `Account ${id}`);
      option.value = String(id);
      option.selected = id === state.account;
      return option;
    }),
  );
}

function contactOf(conv) {
  return conv.meta?.sender ?? null;
}

function renderList() {
  const list = $("conversations");
  const items = [...state.conversations.values()]
    .filter((c) => c.account_id === state.account || Number(c.account_id) === state.account)
    .sort((a, b) => (b.last_activity_at ?? 0) - (a.last_activity_at ?? 0));
  $("list-empty").hidden = items.length > 0;
  list.replaceChildren(
    ...items.map((conv) => {
      const k = key(conv.account_id, conv.id);
      const contact = contactOf(conv);
      const li = el("li", "conversation");
      li.dataset.key = k;
      li.dataset.testid = "conversation";
      li.tabIndex = 0;
      if (k === state.open) li.classList.add("active");
      if (state.fresh.has(k)) li.classList.add("fresh");
      const avatar = el("span", "avatar", initials(contact?.name));
      const dot = el("span", "presence");
      if (contact && state.online.has(key(conv.account_id, contact.id))) dot.classList.add("online");
      avatar.append(dot);
      const body = el("div", "conversation-body");
      const top = el("div", "row");
      top.append(el("span", "name", contact?.name ?? `Conversation #${conv.id}`));
      top.append(el("span", "time muted small", when(conv.last_activity_at)));
      const bottom = el("div", "row");
      const typing = state.typing.get(k);
      const last = conv.messages?.[0];
      const preview = typing ? `${typing.name} is typing…` : previewOf(last);
      bottom.append(el("span", typing ? "preview typing-preview" : "preview", preview));
      if (conv.unread_count > 0) {
        const badge = el("span", "badge", String(conv.unread_count));
        badge.dataset.testid = "unread";
        bottom.append(badge);
      }
      if (conv.status && conv.status !== "open") bottom.append(el("span", `pill ${conv.status}`, conv.status));
      body.append(top, bottom);
      li.append(avatar, body);
      li.addEventListener("click", () => openConversation(k));
      li.addEventListener("keydown", (event) => {
        if (event.key === "Enter") openConversation(k);
      });
      return li;
    }),
  );
}

function renderThreadHead() {
  if (!state.open) return;
  const conv = state.conversations.get(state.open) ?? {};
  const contact = contactOf(conv);
  $("thread-title").textContent = contact?.name ?? `Conversation #${state.open.split(":")[1]}`;
  const online = contact && state.online.has(key(conv.account_id, contact.id));
  $("thread-sub").textContent = [online ? "online" : "offline", contact?.email].filter(Boolean).join(" · ");
  const avatar = $("thread-avatar");
  avatar.firstChild?.nodeType === Node.TEXT_NODE && avatar.firstChild.remove();
  avatar.prepend(document.createTextNode(initials(contact?.name)));
  avatar.querySelector(".presence").classList.toggle("online", Boolean(online));
  const status = $("thread-status");
  status.textContent = conv.status ?? "";
  status.className = `pill ${conv.status ?? ""}`;
}

const TICKS = { sent: "✓", delivered: "✓✓", read: "✓✓", failed: "!" };

function renderMessages({ scroll = false } = {}) {
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const conv = state.conversations.get(state.open) ?? {};
  const seenAt = conv.contact_last_seen_at ?? 0;
  const rows = [...state.thread.values()].sort((a, b) => a.id - b.id);
  const items = rows.map((m) => {
    const li = el("li", "message");
    li.dataset.id = String(m.id);
    li.dataset.testid = "message";
    if (m.message_type === 2) {
      li.classList.add("activity");
      li.append(el("span", "", m.content));
      return li;
    }
    li.classList.add(m.message_type === 0 ? "incoming" : "outgoing");
    if (m.private) li.classList.add("note");
    li.append(el("div", "content", m.content ?? (m.attachments?.length ? "[attachment]" : "")));
    const meta = el("div", "meta");
    meta.append(el("span", "", when(m.created_at)));
    if (m.message_type !== 0 && !m.private) {
      const status = m.status === "failed" ? "failed" : seenAt && m.created_at <= seenAt ? "read" : m.status ?? "sent";
      const tick = el("span", `tick ${status}`, TICKS[status] ?? "✓");
      tick.title = status;
      tick.dataset.testid = "tick";
      tick.dataset.status = status;
      meta.append(tick);
    }
    li.append(meta);
    return li;
  });
  for (const [echoId, pending] of state.pending) {
    if (pending.key !== state.open) continue;
    const li = el("li", "message outgoing pending");
    li.dataset.testid = "message";
    li.dataset.echo = echoId;
    li.append(el("div", "content", pending.content));
    const meta = el("div", "meta");
    meta.append(el("span", `tick ${pending.failed ? "failed" : "sending"}`, pending.failed ? "!" : "…"));
    li.append(meta);
    items.push(li);
  }
  $("message-list").replaceChildren(...items);
  $("older").hidden = !state.full;
  if (scroll || atBottom) box.scrollTop = box.scrollHeight;
}

function renderTyping() {
  const box = $("typing");
  const typing = state.open ? state.typing.get(state.open) : null;
  box.hidden = !typing;
  box.textContent = typing ? `${typing.name} is ${typing.private ? "writing a private note" : "typing"}…` : "";
}

function renderComposer() {
  const allowed = state.commands.has("messages.create");
  $("draft").disabled = !allowed;
  $("send").disabled = !allowed;
  const note = $("composer-note");
  note.hidden = allowed;
  note.textContent = allowed ? "" : "Your token does not allow sending messages (messages.create).";
}

function renderTitle() {
  let count = 0;
  for (const [k, n] of state.fresh) if (k !== state.open) count += n;
  document.title = count ? `(${count}) ${TITLE}` : TITLE;
}

let toastTimer = null;
function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), 5000);
}

function previewOf(message) {
  if (!message) return "";
  const text = message.content ?? (message.attachments?.length ? "[attachment]" : "");
  return message.message_type === 1 ? `You: ${text}` : text;
}

function initials(name) {
  if (!name) return "?";
  return name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((part) => part[0].toUpperCase())
    .join("");
}

function when(ts) {
  if (!ts) return "";
  const date = new Date(Number(ts) * 1000);
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

// Wiring

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  sendDraft();
});
$("draft").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    sendDraft();
  }
});
$("draft").addEventListener("input", onDraftInput);
$("older").addEventListener("click", loadOlder);
$("status-filter").addEventListener("change", () => {
  for (const [k] of state.conversations) if (k.startsWith(`${state.account}:`)) state.conversations.delete(k);
  loadConversations();
});
$("account").addEventListener("change", (event) => {
  state.account = Number(event.target.value);
  loadConversations();
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.open) {
    const [account, cid] = state.open.split(":").map(Number);
    markRead(account, cid);
  }
});

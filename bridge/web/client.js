// chatwoot-bridge browser client: a dependency-free ES module (protocol v1, docs/protocol.md).
//
//   import { connect } from "/client.js";
//   const bridge = connect({ token, accounts: [1] });
//   bridge.on("message.created", (event) => render(event.data));
//   bridge.on("state", ({ connection }) => indicator(connection)); // live | polling | down | ...
//   bridge.on("reset", () => refetchEverything());
//   const { conversations } = await bridge.conversations({ accountId: 1 });
//   await bridge.send({ accountId: 1, conversationId: 42, content: "Hi", echoId: "tmp-1" });
//
// It reconnects with jittered exponential backoff, resumes with `since` (the bridge replays
// what was missed), reports `reset` when it cannot, pings to notice dead sockets, and turns
// request frames into promises. Types: /client.d.ts.

export const PROTOCOL = 1;

/** Errors of requests and of the connection; `code` is the protocol's error code. */
export class BridgeError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "BridgeError";
    this.code = code;
  }
}

/** "Full jitter" backoff: a random delay in [0, min(max, initial * 2^attempt)) ms. */
export function backoffDelay(attempt, { initial = 500, max = 30000 } = {}, random = Math.random) {
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

// Close codes after which reconnecting with the same credentials cannot help.
const FATAL = new Map([
  [1008, "forbidden"], // origin not allowed
  [4000, "bad_request"],
  [4003, "forbidden"],
]);

const DEFAULTS = {
  requestTimeout: 15000,
  pingInterval: 25000,
  pongTimeout: 10000,
  backoff: { initial: 500, max: 30000 },
};

export class BridgeClient {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...options.backoff } };
    this.url = options.url ?? defaultUrl();
    this.filter = {
      accounts: options.accounts ?? null,
      conversations: options.conversations ?? null,
      events: options.events ?? null,
    };
    // Where to resume from: { epoch, seq } of the last event seen (or the welcome's head).
    this.position = options.since ? parsePosition(options.since) : null;
    this.socket = "connecting"; // connecting | open | closed
    this.upstream = null; // live | connecting | polling | down, from welcome and status frames
    this.welcome = null;
    this.lastError = null;
    this._listeners = new Map();
    this._pending = new Map();
    this._refs = 0;
    this._attempt = 0;
    this._ws = null;
    this._stopped = false;
    this._explained = false;
    this._retryTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._onOnline = () => this._reconnectNow();
    if (typeof window !== "undefined") window.addEventListener("online", this._onOnline);
    this._open();
  }

  /** `live`, `polling`, `down` (bridge reachable, Chatwoot not), `connecting`, `reconnecting`,
   * `offline` (bridge unreachable) or `closed`. */
  get connection() {
    if (this._stopped) return "closed";
    if (this.socket !== "open") return this.welcome ? "reconnecting" : "connecting";
    return this.upstream ?? "connecting";
  }

  /** Listen to an event name (`message.created`, globs like `message.*`, `*`), or to
   * `state`, `welcome`, `reset`, `error`, `status`. Returns a function that stops listening. */
  on(name, listener) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(listener);
    return () => this._listeners.get(name)?.delete(listener);
  }

  /** Replace the filter (within the token's scope); resolves with the filter in force. */
  async subscribe({ accounts = null, conversations = null, events = null } = {}) {
    this.filter = { accounts, conversations, events };
    const frame = await this._request("subscribe", { accounts, conversations, events });
    return frame.filter;
  }

  /** The conversation list of an account (with unread counts), a page at a time. */
  conversations({ accountId, status = "open", page = 1 }) {
    return this._call("conversations", { account_id: accountId, status, page });
  }

  /** A conversation's latest 20 messages, or the 20 before a message id; ascending. */
  messages({ accountId, conversationId, before }) {
    const fields = { account_id: accountId, conversation_id: conversationId };
    if (before !== undefined && before !== null) fields.before = before;
    return this._call("messages", fields);
  }

  /** Send a message as the bridge's Chatwoot user; `echoId` comes back on its
   * `message.created`, so a pending bubble can be matched. Resolves with the message. */
  async send({ accountId, conversationId, content, echoId, private: isPrivate = false }) {
    const fields = { account_id: accountId, conversation_id: conversationId, content };
    if (echoId) fields.echo_id = echoId;
    if (isPrivate) fields.private = true;
    return (await this._call("send", fields)).message;
  }

  typing({ accountId, conversationId, on = true }) {
    return this._call("typing", { account_id: accountId, conversation_id: conversationId, on });
  }

  markRead({ accountId, conversationId }) {
    return this._call("read", { account_id: accountId, conversation_id: conversationId });
  }

  /** Stop for good: no reconnects; pending requests fail. */
  close() {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    this._stopPing();
    if (typeof window !== "undefined") window.removeEventListener("online", this._onOnline);
    this._failPending("closed", "the client was closed");
    if (this._ws) this._ws.close(1000, "bye");
    this._emitState();
  }

  // Private

  async _call(type, fields) {
    return (await this._request(type, fields)).data;
  }

  _request(type, fields) {
    if (this.socket !== "open") {
      return Promise.reject(new BridgeError("disconnected", "not connected to the bridge"));
    }
    const ref = `r${++this._refs}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new BridgeError("timeout", `no answer to ${type} within ${this.options.requestTimeout} ms`));
      }, this.options.requestTimeout);
      this._pending.set(ref, { resolve, reject, timer });
      this._ws.send(JSON.stringify({ type, ref, ...fields }));
    });
  }

  async _open() {
    if (this._stopped) return;
    this.socket = "connecting";
    let token = this.options.token;
    try {
      if (typeof token === "function") token = await token();
    } catch (error) {
      this.lastError = new BridgeError("unauthorized", `token provider failed: ${error}`);
      this._emit("error", this.lastError);
      this._scheduleReconnect();
      return;
    }
    const query = new URLSearchParams();
    for (const key of ["accounts", "conversations", "events"]) {
      const value = this.filter[key];
      if (value && value.length) query.set(key, value.join(","));
    }
    if (this.position) query.set("since", `${this.position.epoch}:${this.position.seq}`);
    if (token) query.set("token", token);
    const WS = this.options.WebSocket ?? WebSocket;
    const ws = new WS(`${this.url}?${query}`);
    this._ws = ws;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this.socket = "open";
      this._startPing();
    };
    ws.onmessage = (message) => {
      if (ws === this._ws) this._frame(message.data);
    };
    ws.onclose = (close) => {
      if (ws === this._ws) this._closed(close.code, close.reason);
    };
  }

  _frame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    this._alive();
    switch (frame.type) {
      case "welcome":
        this.welcome = frame;
        this.upstream = frame.upstream;
        this._attempt = 0;
        // A fresh client starts at the head; a resuming one keeps its position (the replay
        // moves it on, or a reset frame replaces it).
        if (!this.position) this.position = { epoch: frame.epoch, seq: frame.seq };
        this._emit("welcome", frame);
        this._emitState();
        break;
      case "reset":
        this.position = { epoch: frame.epoch, seq: frame.seq };
        this._emit("reset", frame);
        break;
      case "event":
        this.position = { epoch: frame.epoch, seq: frame.seq };
        this._dispatch(frame);
        break;
      case "status":
        this.upstream = frame.upstream;
        this._emit("status", frame);
        this._emitState();
        break;
      case "result":
      case "subscribed":
        this._settle(frame.ref, null, frame);
        break;
      case "error": {
        const error = new BridgeError(frame.code, frame.message);
        if (frame.ref !== null && frame.ref !== undefined && this._pending.has(frame.ref)) {
          this._settle(frame.ref, error);
        } else {
          // Unsolicited: the bridge explains why it is about to close (4001, 4003, ...).
          this.lastError = error;
          this._explained = true;
          this._emit("error", error);
        }
        break;
      }
      default:
        break; // pong and frames of later protocol versions
    }
  }

  _dispatch(frame) {
    const name = frame.event;
    for (const [pattern, listeners] of this._listeners) {
      if (!matches(pattern, name)) continue;
      for (const listener of listeners) {
        try {
          listener(frame);
        } catch (error) {
          console.error("chatwoot-bridge listener failed", error);
        }
      }
    }
  }

  _emit(name, value) {
    for (const listener of this._listeners.get(name) ?? []) {
      try {
        listener(value);
      } catch (error) {
        console.error("chatwoot-bridge listener failed", error);
      }
    }
  }

  _emitState() {
    this._emit("state", { connection: this.connection, upstream: this.upstream, socket: this.socket });
  }

  _settle(ref, error, frame) {
    const pending = this._pending.get(ref);
    if (!pending) return;
    this._pending.delete(ref);
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(frame);
  }

  _failPending(code, message) {
    for (const [ref, pending] of this._pending) {
      clearTimeout(pending.timer);
      pending.reject(new BridgeError(code, message));
      this._pending.delete(ref);
    }
  }

  _closed(code, reason) {
    this.socket = "closed";
    this._stopPing();
    this._failPending("disconnected", "the connection to the bridge closed");
    if (this._stopped) return;
    const explained = this._explained;
    this._explained = false;
    if (FATAL.has(code)) {
      this._stopped = true;
      if (!explained) {
        this.lastError = new BridgeError(FATAL.get(code), reason || `closed with ${code}`);
        this._emit("error", this.lastError);
      }
      this._emitState();
      return;
    }
    if (code === 4001 && typeof this.options.token !== "function") {
      // A fixed token that the bridge refuses will not get better by retrying fast.
      this._attempt = Math.max(this._attempt, 5);
    }
    this._emitState();
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._stopped) return;
    const delay = backoffDelay(this._attempt++, this.options.backoff);
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  _reconnectNow() {
    if (this._stopped || this.socket === "open") return;
    clearTimeout(this._retryTimer);
    this._open();
  }

  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => {
      if (this.socket !== "open") return;
      this._ws.send('{"type":"ping"}');
      clearTimeout(this._pongTimer);
      this._pongTimer = setTimeout(() => this._dead(), this.options.pongTimeout);
    }, this.options.pingInterval);
  }

  _dead() {
    // No pong: the socket is half-open (sleep, network change). Do not wait for the
    // browser's close handshake on it: drop it and reconnect now.
    const ws = this._ws;
    this._ws = null;
    ws?.close();
    this._closed(4008, "no pong");
  }

  _alive() {
    clearTimeout(this._pongTimer);
    this._pongTimer = null;
  }

  _stopPing() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
  }
}

/** Connect to the bridge; see BridgeClient. */
export function connect(options = {}) {
  return new BridgeClient(options);
}

function defaultUrl() {
  const { protocol, host } = window.location;
  return `${protocol === "https:" ? "wss" : "ws"}://${host}/ws`;
}

function parsePosition(since) {
  const at = since.lastIndexOf(":");
  return { epoch: since.slice(0, at), seq: Number(since.slice(at + 1)) };
}

function matches(pattern, name) {
  if (pattern === name || pattern === "*") return true;
  if (!pattern.includes("*")) return false;
  const escaped = pattern.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${escaped}$`).test(name);
}

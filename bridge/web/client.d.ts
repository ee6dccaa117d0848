// Types of /client.js, the chatwoot-bridge browser client (protocol v1).

export declare const PROTOCOL: 1;

export type Upstream = "live" | "connecting" | "polling" | "down";
export type Connection =
  | Upstream
  | "reconnecting"
  | "offline"
  | "closed";
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "rate_limited"
  | "unsupported"
  | "upstream_error"
  | "timeout"
  | "disconnected"
  | "closed";

export declare class BridgeError extends Error {
  readonly code: ErrorCode;
}

/** One event frame: Chatwoot's event name and push-shaped data. */
export interface BridgeEvent<D = Record<string, any>> {
  type: "event";
  epoch: string;
  seq: number;
  event: string;
  account_id: number;
  conversation_id: number | null;
  source: "cable" | "poll" | "webhook";
  occurred_at: string;
  received_at: string;
  data: D;
}

export interface Welcome {
  type: "welcome";
  protocol: 1;
  epoch: string;
  seq: number;
  upstream: Upstream;
  replayed: number;
  /** The bridged accounts this client may see. */
  accounts?: number[];
  /** The client's name and the commands its token allows. */
  client?: { name: string; commands: Array<"history" | "messages.create" | "typing" | "conversations.read"> };
}

export interface Reset {
  type: "reset";
  reason: "unknown_epoch" | "too_old";
  epoch: string;
  seq: number;
}

export interface Status {
  type: "status";
  upstream: Upstream;
  since: string;
  reason: string;
}

export interface StateChange {
  connection: Connection;
  upstream: Upstream | null;
  socket: "connecting" | "open" | "closed";
}

export interface Filter {
  accounts?: number[] | null;
  /** `"<account>:<display id>"` or a display id. */
  conversations?: Array<string | number> | null;
  /** Event names or globs, e.g. `message.*`. */
  events?: string[] | null;
}

export interface Options extends Filter {
  /** Default: `/ws` on the page's host. */
  url?: string;
  /** A static token, or a function that returns a fresh one (JWTs) before each connect. */
  token?: string | (() => string | Promise<string>);
  /** Resume from `<epoch>:<seq>`. */
  since?: string;
  requestTimeout?: number;
  pingInterval?: number;
  pongTimeout?: number;
  backoff?: { initial?: number; max?: number };
  WebSocket?: typeof WebSocket;
}

export interface Message {
  id: number;
  content: string | null;
  message_type: 0 | 1 | 2 | 3;
  status: "sent" | "delivered" | "read" | "failed" | string;
  created_at: number;
  private: boolean;
  echo_id?: string;
  sender?: Record<string, any> | null;
  conversation_id: number;
  [key: string]: any;
}

export interface Conversation {
  id: number;
  account_id: number;
  inbox_id: number;
  status: "open" | "resolved" | "pending" | "snoozed";
  unread_count: number;
  last_activity_at: number;
  messages: Message[];
  meta: { sender?: Record<string, any>; assignee?: Record<string, any> | null; [key: string]: any };
  [key: string]: any;
}

type Listener<T> = (value: T) => void;

export declare class BridgeClient {
  constructor(options?: Options);
  readonly connection: Connection;
  readonly upstream: Upstream | null;
  readonly welcome: Welcome | null;
  position: { epoch: string; seq: number } | null;
  lastError: BridgeError | null;

  on(name: "state", listener: Listener<StateChange>): () => void;
  on(name: "welcome", listener: Listener<Welcome>): () => void;
  on(name: "reset", listener: Listener<Reset>): () => void;
  on(name: "status", listener: Listener<Status>): () => void;
  on(name: "error", listener: Listener<BridgeError>): () => void;
  /** An event name or glob (`message.created`, `conversation.*`, `*`). */
  on(name: string, listener: Listener<BridgeEvent>): () => void;

  subscribe(filter?: Filter): Promise<Filter>;
  conversations(args: {
    accountId: number;
    status?: "open" | "resolved" | "pending" | "snoozed" | "all";
    page?: number;
  }): Promise<{ account_id: number; page: number; conversations: Conversation[] }>;
  messages(args: {
    accountId: number;
    conversationId: number;
    before?: number;
  }): Promise<{ account_id: number; conversation_id: number; messages: Message[]; source: "cache" | "rest" }>;
  send(args: {
    accountId: number;
    conversationId: number;
    content: string;
    echoId?: string;
    private?: boolean;
  }): Promise<Message>;
  typing(args: { accountId: number; conversationId: number; on?: boolean }): Promise<Record<string, never>>;
  markRead(args: { accountId: number; conversationId: number }): Promise<{ conversation?: Conversation }>;
  close(): void;
}

export declare function connect(options?: Options): BridgeClient;

/** Full-jitter backoff delay in ms for a reconnect attempt (0-based). */
export declare function backoffDelay(
  attempt: number,
  backoff?: { initial?: number; max?: number },
  random?: () => number,
): number;

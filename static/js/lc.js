// Shared client plumbing for the three pages: HTTP with a token, a Socket.IO connection
// (the vendored socket.io-client, loaded as a classic script: window.io), calls that
// resolve with their ack, and a room subscription that follows the seq rules of
// docs/protocol.md (buffer during join, drop seq <= state.seq, recover by since_seq).

const TOKEN_KEY = "lc.token";
const USER_KEY = "lc.user";

export function savedSession() {
  const token = localStorage.getItem(TOKEN_KEY);
  const user = JSON.parse(localStorage.getItem(USER_KEY) || "null");
  return token && user ? { token, user } : null;
}

export function saveSession(token, user) {
  localStorage.setItem(TOKEN_KEY, token);
  localStorage.setItem(USER_KEY, JSON.stringify(user));
}

export function clearSession() {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(USER_KEY);
}

export class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export async function api(method, path, { token, body } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError("unavailable", "the server cannot be reached", 0);
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = data.error || {};
    throw new ApiError(err.code || "unavailable", err.message || res.statusText, res.status);
  }
  return data;
}

export async function login(username, password) {
  const data = await api("POST", "/api/auth/login", { body: { username, password } });
  saveSession(data.token, data.user);
  return data;
}

export async function guest(name) {
  const data = await api("POST", "/api/auth/guest", { body: { name } });
  saveSession(data.token, data.user);
  return data;
}

/** Words a person understands for each PROTOCOL.md error code. */
export const ERROR_WORDS = {
  invalid: "That was not accepted",
  unauthorized: "Please sign in first",
  forbidden: "You are not allowed to do that",
  not_found: "Not found",
  rate_limited: "Slow down a little",
  muted: "You are muted in this room",
  blocked: "That text contains a blocked word",
  room_not_live: "The room is not live",
  not_started: "Not started yet",
  ended: "Already ended",
  sold_out: "Sold out",
  limit_exceeded: "You reached the per-person limit",
  expired: "Expired",
  payment_failed: "The payment failed",
  group_full: "That group is full",
  already_joined: "You are already in that group",
  already_entered: "You are already entered",
  not_eligible: "You cannot enter",
  busy: "Busy: one is already running",
  conflict: "Something changed, please try again",
  unavailable: "The server is busy or unreachable, please retry",
};

export function describeError(error) {
  if (!error) return "";
  const words = ERROR_WORDS[error.code] || error.code || "Error";
  let text = error.message && error.message !== words ? `${words}: ${error.message}` : words;
  if (error.retry_after_ms) text += ` (wait ${Math.ceil(error.retry_after_ms / 1000)} s)`;
  if (error.until) text += ` (until ${new Date(error.until).toLocaleTimeString()})`;
  return text;
}

/** A Socket.IO connection whose `call` resolves with the ack (or a typed error). */
export function connect(token) {
  const socket = window.io({ auth: token ? { token } : {}, transports: ["websocket"] });
  socket.callAck = (event, data, timeoutMs = 10000) =>
    new Promise((resolve) => {
      socket.timeout(timeoutMs).emit(event, data, (err, ack) => {
        if (err) resolve({ ok: false, error: { code: "unavailable", message: "no answer from the server" } });
        else resolve(ack);
      });
    });
  return socket;
}

/**
 * Follows one room: joins (again after every reconnect, with since_seq), applies the
 * snapshot, then every broadcast in seq order exactly once.
 *   onState(state, recovered) - the snapshot (after a rejoin: recovered says whether the
 *                               missed broadcasts were replayed)
 *   onEvent(event, payload)   - each room broadcast, in order
 *   onConnection(up)          - connection lost / back
 */
export function followRoom(socket, roomId, { onState, onEvent, onConnection }) {
  let lastSeq = null;
  let joining = false;
  let buffered = [];

  async function join() {
    joining = true;
    buffered = [];
    const payload = { room_id: roomId };
    if (lastSeq !== null) payload.since_seq = lastSeq;
    const ack = await socket.callAck("room:join", payload);
    joining = false;
    if (!ack.ok) {
      onState(null, false, ack.error);
      return;
    }
    if (ack.recovered !== true || lastSeq === null) {
      lastSeq = ack.state.seq;
      onState(ack.state, false);
    } else {
      onState(ack.state, true);
    }
    // Replayed broadcasts and live ones that raced them: apply in seq order.
    const pending = buffered.sort((a, b) => a[1].seq - b[1].seq);
    buffered = [];
    for (const [event, payload] of pending) deliver(event, payload);
  }

  // A comment may reach a rejoining client both live and replayed (docs/protocol.md):
  // drop the ones already shown, by id (the last 1,000 kept).
  const seenComments = new Set();
  function freshComments(items) {
    return items.filter((item) => {
      if (!item?.id) return true;
      if (seenComments.has(item.id)) return false;
      seenComments.add(item.id);
      if (seenComments.size > 1000) seenComments.delete(seenComments.values().next().value);
      return true;
    });
  }

  function deliver(event, payload) {
    if (typeof payload?.seq === "number") {
      if (lastSeq !== null && payload.seq <= lastSeq) return;
      lastSeq = payload.seq;
    }
    if (event === "comment:batch" && Array.isArray(payload.items)) {
      const items = freshComments(payload.items);
      if (items.length === 0 && !payload.dropped) return;
      payload = { ...payload, items };
    }
    onEvent(event, payload);
  }

  socket.onAny((event, payload) => {
    if (!payload || payload.room_id !== roomId || typeof payload.seq !== "number") {
      onEvent(event, payload); // private messages (order:update, draw:won, ...) and others
      return;
    }
    if (joining) buffered.push([event, payload]);
    else deliver(event, payload);
  });
  socket.on("connect", () => { onConnection?.(true); join(); });
  socket.on("disconnect", () => onConnection?.(false));
  socket.on("connect_error", (err) => onConnection?.(false, err?.data || { code: "unavailable", message: err?.message }));
  return { join, get seq() { return lastSeq; } };
}

/** Element helper: text only, never HTML (user text stays inert). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function money(cents) {
  return `¥${(cents / 100).toFixed(2)}`;
}

export function newRequestId() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

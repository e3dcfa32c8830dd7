// Host control panel: rooms, products, flash sales, group buys, draws, PK and moderation.
// Every action writes its outcome (or its error, in words) to the status line of its card.
import {
  api, login, savedSession, clearSession, connect, followRoom, el, describeError, money,
  newRequestId,
} from "./lc.js";

const $ = (id) => document.getElementById(id);

const PK_ORDER = { invited: 0, fighting: 1, punishing: 2, ended: 3, declined: 3, lapsed: 3 };
const FEED_MAX = 200;

let session = null; // {token, user}
let rooms = [];
let roomId = null; // the room being controlled
let room = null;
let socket = null;
let clockOffset = 0; // server_time - Date.now()
let products = [];
let sales = new Map();
let campaigns = new Map();
let draw = null;
let drawResult = null;
let pk = null;
let invites = new Map();
let feed = []; // comment items, oldest first
let bannedWords = [];

// -- status lines ----------------------------------------------------------------------

function say(id, text, kind = "ok") {
  const node = $(id);
  node.textContent = text;
  node.className = `status ${kind}`;
}

function errorText(error) {
  let text = describeError(error);
  if (error?.fields && typeof error.fields === "object") {
    const parts = Object.entries(error.fields).map(([k, v]) => `${k}: ${v}`);
    if (parts.length) text += ` (${parts.join("; ")})`;
  }
  return text;
}

function fail(id, error) {
  say(id, errorText(error), "error");
}

/** Runs an HTTP call, reporting its error on the status line; returns data or null. */
async function http(statusId, method, path, body) {
  try {
    return await api(method, path, { token: session?.token, body });
  } catch (e) {
    fail(statusId, { code: e.code, message: e.message });
    if (e.code === "unauthorized") logout("Your session expired, please sign in again.");
    return null;
  }
}

/** Sends a socket event, reporting an ok=false ack; returns the ack or null. */
async function call(statusId, event, data) {
  if (!socket) {
    fail(statusId, { code: "unavailable", message: "not connected" });
    return null;
  }
  say(statusId, "…", "pending");
  const ack = await socket.callAck(event, data);
  if (!ack || !ack.ok) {
    fail(statusId, ack?.error || { code: "unavailable" });
    return null;
  }
  return ack;
}

// -- form helpers ----------------------------------------------------------------------

function num(value) {
  if (value === undefined || value === null || String(value).trim() === "") return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

function cents(value) {
  const n = num(String(value ?? "").replace(/[¥,\s]/g, ""));
  return n === null ? null : Math.round(n * 100);
}

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

function serverNow() {
  return Date.now() + clockOffset;
}

function secondsLeft(at) {
  return Math.max(0, Math.ceil((at - serverNow()) / 1000));
}

/** Time left until `at`, as "42 s", "3:05" or "1:02:03". */
function timeLeft(at) {
  const s = secondsLeft(at);
  if (s < 60) return `${s} s`;
  const pad = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

function productTitle(id) {
  return products.find((p) => p.id === id)?.title || id;
}

// -- session ---------------------------------------------------------------------------

function showLoggedIn() {
  const signedIn = Boolean(session);
  $("login-view").hidden = signedIn;
  $("panel").hidden = !signedIn;
  $("logout").hidden = !signedIn;
  $("whoami").textContent = signedIn ? `${session.user.name} (${session.user.role})` : "";
}

function logout(message) {
  clearSession();
  localStorage.removeItem(LAST_ROOM_KEY);
  session = null;
  leaveRoom();
  rooms = [];
  renderRooms();
  showLoggedIn();
  say("login-status", message || "Signed out.", message ? "error" : "ok");
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const { username, password } = formData(ev.target);
  say("login-status", "Signing in…", "pending");
  try {
    const data = await login(username.trim(), password);
    session = { token: data.token, user: data.user };
  } catch (e) {
    fail("login-status", { code: e.code, message: e.message });
    return;
  }
  ev.target.reset();
  say("login-status", "");
  if (!["host", "staff", "admin"].includes(session.user.role)) {
    say("rooms-status", "This account is not a host: it cannot create or run rooms.", "error");
  }
  showLoggedIn();
  loadRooms();
});

$("logout").addEventListener("click", () => logout());

// -- rooms -----------------------------------------------------------------------------

const LAST_ROOM_KEY = "lc.host.room";

async function loadRooms({ resume = false } = {}) {
  const data = await http("rooms-status", "GET", "/api/rooms?host=me");
  if (!data) return;
  rooms = data.rooms || [];
  renderRooms();
  const last = localStorage.getItem(LAST_ROOM_KEY);
  if (resume && !roomId && last && rooms.some((r) => r.id === last && r.status !== "ended")) pickRoom(last);
}

function renderRooms() {
  const items = rooms.map((r) =>
    el("li", { "data-testid": "room-item", "data-room-id": r.id, class: r.id === roomId ? "selected" : "" },
      el("div", {}, el("b", {}, r.title), " ", el("span", { class: `pill ${r.status}` }, r.status)),
      el("div", { class: "row" },
        el("button", { type: "button", "data-testid": "room-pick", onclick: () => pickRoom(r.id) },
          r.id === roomId ? "Controlling" : "Control"),
        el("a", { href: `/rooms/${encodeURIComponent(r.id)}`, target: "_blank", rel: "noopener" }, "viewer page"))));
  $("rooms").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "No rooms yet.")]));
}

$("room-create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = formData(ev.target);
  const body = { title: f.title.trim() };
  if (f.stream_url.trim()) body.stream_url = f.stream_url.trim();
  say("rooms-status", "Creating…", "pending");
  const created = await http("rooms-status", "POST", "/api/rooms", body);
  if (!created) return;
  say("rooms-status", `Room “${created.title}” created (${created.status}).`);
  ev.target.reset();
  rooms = [created, ...rooms.filter((r) => r.id !== created.id)];
  renderRooms();
  pickRoom(created.id);
});

$("rooms-refresh").addEventListener("click", loadRooms);

async function roomAction(action) {
  if (!roomId) return;
  say("room-action-status", action === "start" ? "Going live…" : "Ending…", "pending");
  const updated = await http("room-action-status", "POST", `/api/rooms/${encodeURIComponent(roomId)}/${action}`);
  if (!updated) return;
  say("room-action-status", action === "start" ? "The room is live." : "The show has ended.");
  applyRoom(updated);
}

$("room-start").addEventListener("click", () => roomAction("start"));
$("room-end").addEventListener("click", () => {
  if (room?.status === "live" && !confirm("End the show for everyone?")) return;
  roomAction("end");
});

function applyRoom(r) {
  room = { ...(room || {}), ...r };
  rooms = rooms.map((x) => (x.id === room.id ? { ...x, ...r } : x));
  renderRooms();
  renderRoomHead();
}

function renderRoomHead() {
  $("no-room").hidden = Boolean(room);
  $("room-head").hidden = !room;
  $("room-tools").hidden = !room;
  $("mod-col").hidden = !room;
  if (!room) return;
  $("room-title").textContent = room.title;
  $("room-status").textContent = room.status;
  $("room-status").className = `pill ${room.status}`;
  $("room-id").textContent = room.id;
  $("room-start").disabled = room.status === "live";
  $("room-end").disabled = room.status === "ended";
}

function leaveRoom() {
  if (socket) {
    socket.offAny();
    socket.disconnect();
  }
  socket = null;
  roomId = null;
  room = null;
  products = [];
  sales = new Map();
  campaigns = new Map();
  draw = null;
  drawResult = null;
  pk = null;
  invites = new Map();
  feed = [];
  bannedWords = [];
  $("conn").textContent = "";
  for (const id of ["room-action-status", "products-status", "flashsale-status", "groupbuy-status",
    "draw-status", "pk-status", "mod-status"]) say(id, "");
  renderAll();
}

function pickRoom(id) {
  leaveRoom();
  roomId = id;
  localStorage.setItem(LAST_ROOM_KEY, id);
  room = rooms.find((r) => r.id === id) || { id, title: id, status: "" };
  renderRooms();
  renderRoomHead();
  loadProducts();
  socket = connect(session.token);
  const mySocket = socket;
  followRoom(socket, id, {
    onState: (state, recovered, error) => {
      if (mySocket !== socket) return;
      if (!state) {
        fail("room-action-status", error);
        return;
      }
      applyState(state, recovered);
    },
    onEvent: (event, payload) => {
      if (mySocket !== socket) return;
      onEvent(event, payload);
    },
    onConnection: (up, error) => {
      if (mySocket !== socket) return;
      $("conn").textContent = up ? "connected" : "reconnecting…";
      $("conn").className = `pill ${up ? "live" : "ended"}`;
      if (!up && error?.code === "unauthorized") logout("Your session expired, please sign in again.");
    },
  });
}

// -- snapshot and broadcasts -----------------------------------------------------------

function applyState(state, recovered) {
  clockOffset = state.server_time - Date.now();
  applyRoom(state.room);
  $("online").textContent = state.online ?? 0;
  $("likes").textContent = state.likes ?? 0;
  setSlowMode(state.slow_mode_s || 0);
  if (Array.isArray(state.products)) mergeProducts(state.products);
  setPinned(state.pinned_product);
  sales = new Map((state.flashsales || []).map((s) => [s.id, s]));
  campaigns = new Map((state.groupbuys || []).map((c) => [c.id, c]));
  if (state.draw) draw = state.draw;
  if (state.pk) applyPk(state.pk, true);
  if (!recovered) feed = [];
  addComments(state.recent_comments || []);
  renderAll();
  loadBannedWords();
}

function onEvent(event, p) {
  if (p && p.room_id && p.room_id !== roomId && event !== "pk:update") return;
  switch (event) {
    case "room:status":
      applyRoom({ status: p.status });
      break;
    case "online:count":
      $("online").textContent = p.online;
      break;
    case "like:total":
      $("likes").textContent = p.total;
      break;
    case "room:slow_mode":
      setSlowMode(p.interval_s);
      break;
    case "product:pinned":
      setPinned(p.product);
      break;
    case "comment:batch":
      addComments(p.items || []);
      renderFeed();
      break;
    case "comment:deleted": {
      const gone = new Set(p.ids || []);
      feed = feed.filter((c) => !gone.has(c.id));
      renderFeed();
      break;
    }
    case "flashsale:update":
      sales.set(p.sale.id, p.sale);
      renderSales();
      break;
    case "groupbuy:update":
      applyGroupbuy(p.campaign, p.group);
      renderGroupbuys();
      break;
    case "draw:update":
      draw = p.draw;
      if (drawResult && drawResult.draw_id !== draw.id) drawResult = null;
      renderDraw();
      break;
    case "draw:result":
      drawResult = p;
      if (draw && draw.id === p.draw_id) draw = { ...draw, status: "drawn" };
      renderDraw();
      break;
    case "pk:update":
      applyPk(p.pk);
      renderPk();
      break;
    case "pk:invited":
      if (p?.pk) {
        invites.set(p.pk.id, p.pk);
        say("pk-status", `Invitation from “${p.pk.rooms?.[0]?.host?.name || "another host"}”.`, "ok");
        renderPk();
      }
      break;
    default:
      break;
  }
}

function renderAll() {
  renderRoomHead();
  renderProducts();
  renderSales();
  renderGroupbuys();
  renderDraw();
  renderPk();
  renderFeed();
  renderWords();
}

// -- products --------------------------------------------------------------------------

async function loadProducts() {
  const id = roomId;
  const data = await http("products-status", "GET", `/api/rooms/${encodeURIComponent(id)}/products`);
  if (!data || id !== roomId) return;
  mergeProducts(data.products || []);
  renderProducts();
}

function mergeProducts(list) {
  const byId = new Map(products.map((p) => [p.id, p]));
  for (const p of list) byId.set(p.id, { ...byId.get(p.id), ...p });
  products = [...byId.values()];
}

let pinned = null;
function setPinned(product) {
  pinned = product || null;
  $("pinned").textContent = pinned ? `${pinned.title} · ${money(pinned.price_cents)}` : "none";
  $("unpin").hidden = !pinned;
  renderProducts();
}

function renderProducts() {
  const items = products.map((p) =>
    el("li", { "data-testid": "product-item", "data-product-id": p.id, class: pinned?.id === p.id ? "selected" : "" },
      el("span", {}, el("b", {}, p.title), ` ${money(p.price_cents)} · stock ${p.stock}`),
      el("button", { type: "button", "data-testid": "product-pin", onclick: () => pin(p.id) },
        pinned?.id === p.id ? "Pinned" : "Pin")));
  $("products").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "No products yet.")]));
  for (const select of document.querySelectorAll(".product-select")) {
    const current = select.value;
    select.replaceChildren(...products.map((p) =>
      el("option", { value: p.id }, `${p.title} (${money(p.price_cents)})`)));
    if (products.some((p) => p.id === current)) select.value = current;
  }
}

async function pin(productId) {
  const ack = await call("products-status", "product:pin", { room_id: roomId, product_id: productId });
  if (!ack) return;
  setPinned(ack.product);
  say("products-status", ack.product ? `Pinned “${ack.product.title}”.` : "Unpinned.");
}

$("unpin").addEventListener("click", () => pin(null));

$("product-add").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = formData(ev.target);
  const body = { title: f.title.trim(), price_cents: cents(f.price), stock: num(f.stock) };
  if (f.image_url.trim()) body.image_url = f.image_url.trim();
  say("products-status", "Adding…", "pending");
  const product = await http("products-status", "POST", `/api/rooms/${encodeURIComponent(roomId)}/products`, body);
  if (!product) return;
  mergeProducts([product]);
  renderProducts();
  say("products-status", `Added “${product.title}” at ${money(product.price_cents)}.`);
  ev.target.reset();
});

// -- flash sales -----------------------------------------------------------------------

$("sale-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = formData(ev.target);
  const data = {
    room_id: roomId,
    product_id: f.product_id || null,
    price_cents: cents(f.price),
    quantity: num(f.quantity),
    per_user_limit: num(f.per_user_limit) ?? 1,
    duration_s: num(f.duration_s),
    request_id: newRequestId(),
  };
  const hold = num(f.hold_s);
  if (hold !== null) data.hold_s = hold;
  const delay = num(f.delay_s) || 0;
  if (delay > 0) data.starts_at = Math.round(serverNow() + delay * 1000);
  const ack = await call("flashsale-status", "flashsale:create", data);
  if (!ack) return;
  sales.set(ack.sale.id, ack.sale);
  renderSales();
  say("flashsale-status", `Flash sale of “${productTitle(ack.sale.product_id)}” ${ack.sale.status}: ${ack.sale.quantity} at ${money(ack.sale.price_cents)}.`);
});

function saleTiming(s) {
  if (s.status === "scheduled") return `starts in ${timeLeft(s.starts_at)}`;
  if (s.status === "ended") return "ended";
  return `ends in ${timeLeft(s.ends_at)}`;
}

function renderSales() {
  const list = [...sales.values()].sort((a, b) => b.starts_at - a.starts_at);
  const items = list.map((s) =>
    el("li", { "data-testid": "flashsale-item", "data-sale-id": s.id, "data-status": s.status },
      el("div", {}, el("b", {}, productTitle(s.product_id)), ` ${money(s.price_cents)} `,
        el("span", { class: `pill ${s.status}`, "data-testid": "flashsale-state" }, s.status)),
      el("div", {},
        el("span", { "data-testid": "flashsale-left" }, `${s.left} / ${s.quantity} left`),
        ` · limit ${s.per_user_limit}/person · `,
        el("span", { "data-timer": "" }, saleTiming(s))),
      el("progress", { max: s.quantity, value: s.quantity - s.left })));
  $("sales").replaceChildren(...items);
}

// -- group buys ------------------------------------------------------------------------

function parseTiers(text) {
  const tiers = [];
  for (const part of String(text || "").split(/[,，]/)) {
    if (!part.trim()) continue;
    const [size, price] = part.split(/[:：]/);
    tiers.push({ size: num(size), price_cents: cents(price) });
  }
  return tiers;
}

$("gb-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = formData(ev.target);
  const data = {
    room_id: roomId,
    product_id: f.product_id || null,
    group_size: num(f.group_size),
    price_cents: cents(f.price),
    group_ttl_s: num(f.group_ttl_s),
    duration_s: num(f.duration_s),
    request_id: newRequestId(),
  };
  const quantity = num(f.quantity);
  if (quantity !== null) data.quantity = quantity;
  const tiers = parseTiers(f.tiers);
  if (tiers.length) data.tiers = tiers;
  const ack = await call("groupbuy-status", "groupbuy:create", data);
  if (!ack) return;
  applyGroupbuy(ack.campaign);
  renderGroupbuys();
  say("groupbuy-status", `Group buy of “${productTitle(ack.campaign.product_id)}” started: groups of ${ack.campaign.group_size} at ${money(ack.campaign.price_cents)}.`);
});

function applyGroupbuy(campaign, group) {
  const prev = campaigns.get(campaign.id);
  const merged = { ...prev, ...campaign };
  let groups = campaign.groups || prev?.groups || [];
  if (group) {
    groups = groups.filter((g) => g.id !== group.id);
    if (group.status === "open") groups.push(group);
    groups.sort((a, b) => a.expires_at - b.expires_at);
  }
  merged.groups = groups;
  campaigns.set(campaign.id, merged);
}

function renderGroupbuys() {
  const items = [...campaigns.values()].map((c) =>
    el("li", { "data-testid": "groupbuy-item", "data-campaign-id": c.id, "data-status": c.status },
      el("div", {}, el("b", {}, productTitle(c.product_id)),
        ` ${money(c.price_cents)} for groups of ${c.group_size}`,
        c.max_size && c.max_size !== c.group_size ? ` (up to ${c.max_size})` : "", " ",
        el("span", { class: `pill ${c.status}`, "data-testid": "groupbuy-state" }, c.status)),
      (c.tiers || []).length
        ? el("div", { class: "muted" }, "Tiers: ", c.tiers.map((t) => `${t.size}+ → ${money(t.price_cents)}`).join(", "))
        : null,
      el("div", { "data-testid": "groupbuy-counts" },
        `open ${c.groups_open ?? 0} · succeeded ${c.groups_succeeded ?? 0} · failed ${c.groups_failed ?? 0}`,
        c.left === null || c.left === undefined ? "" : ` · ${c.left} / ${c.quantity} units left`,
        c.status === "ended" ? "" : ` · ends in ${timeLeft(c.ends_at)}`),
      el("ul", { class: "sub" }, (c.groups || []).map((g) =>
        el("li", { "data-testid": "group-item" },
          `${g.leader?.name || "?"}'s group: ${(g.members || []).length}/${g.size}`,
          g.needed ? ` (${g.needed} more to go)` : "",
          ` · ${money(g.price_cents)} · expires in ${timeLeft(g.expires_at)}`)))));
  $("groupbuys").replaceChildren(...items);
}

// -- draws -----------------------------------------------------------------------------

$("draw-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = formData(ev.target);
  const entry = f.entry === "anyone" ? { type: "anyone" } : { type: "comment", keyword: f.keyword.trim() };
  const ack = await call("draw-status", "draw:create", {
    room_id: roomId,
    prize: f.prize.trim(),
    winners: num(f.winners),
    duration_s: num(f.duration_s),
    entry,
    request_id: newRequestId(),
  });
  if (!ack) return;
  draw = ack.draw;
  drawResult = null;
  renderDraw();
  say("draw-status", `Draw for “${ack.draw.prize}” is open.`);
});

function renderDraw() {
  const box = $("draw");
  if (!draw && !drawResult) {
    box.replaceChildren(el("p", { class: "muted" }, "No draw running."));
    return;
  }
  const parts = [];
  if (draw) {
    const how = draw.entry?.type === "comment" ? `comment “${draw.entry.keyword}”` : "anyone can enter";
    parts.push(el("p", {}, el("b", {}, draw.prize), ` · ${draw.winners} winner(s) · ${how} · `,
      el("span", { class: `pill ${draw.status}`, "data-testid": "draw-state" }, draw.status)));
    parts.push(el("p", {}, el("span", { "data-testid": "draw-entrants" }, `${draw.entrants ?? 0} ${draw.entrants === 1 ? "entrant" : "entrants"}`),
      draw.status === "open" ? ` · closes in ${timeLeft(draw.ends_at)}` : ""));
    parts.push(el("p", { class: "muted small" }, "Commitment ", el("code", {}, draw.commitment || "")));
  }
  if (drawResult) {
    const names = (drawResult.winners || []).map((w) => w.name).join(", ") || "nobody (no eligible entrants)";
    parts.push(el("p", { "data-testid": "draw-result", class: "result" },
      `Winners (${drawResult.entrants_count} entrants): ${names}`));
    parts.push(el("p", {}, el("a", { href: `/api/draws/${encodeURIComponent(drawResult.draw_id)}/proof`, target: "_blank", rel: "noopener" }, "fairness proof")));
  }
  box.replaceChildren(...parts);
}

// -- PK --------------------------------------------------------------------------------

function applyPk(next, fromSnapshot = false) {
  if (!next) return;
  if (pk && pk.id === next.id && !fromSnapshot && PK_ORDER[next.phase] < PK_ORDER[pk.phase]) return;
  pk = next;
  if (pk.phase !== "invited") invites.delete(pk.id);
}

$("pk-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = formData(ev.target);
  const ack = await call("pk-status", "pk:invite", {
    room_id: roomId,
    target_room_id: f.target_room_id.trim(),
    duration_s: num(f.duration_s),
    punish_s: num(f.punish_s),
    mode: f.mode,
    request_id: newRequestId(),
  });
  if (!ack) return;
  applyPk(ack.pk);
  renderPk();
  say("pk-status", "Invitation sent; waiting for the other host.");
});

async function respond(pkId, accept) {
  const ack = await call("pk-status", "pk:respond", { pk_id: pkId, accept });
  invites.delete(pkId);
  if (ack) {
    applyPk(ack.pk);
    say("pk-status", accept ? "PK accepted: fight!" : "Invitation declined.");
  }
  renderPk();
}

async function endPk() {
  if (!pk) return;
  const ack = await call("pk-status", "pk:end", { pk_id: pk.id });
  if (!ack) return;
  if (ack.pk) applyPk(ack.pk);
  renderPk();
  say("pk-status", "PK ended early.");
}

function renderPk() {
  const inviteItems = [...invites.values()]
    .filter((p) => !pk || p.id !== pk.id || pk.phase === "invited")
    .map((p) => el("li", { "data-testid": "pk-invitation", "data-pk-id": p.id },
      `${p.rooms?.[0]?.host?.name || "A host"} invites you to a ${p.mode} PK`,
      p.rooms?.[1]?.room_id && p.rooms[1].room_id !== roomId
        ? ` (for your room “${rooms.find((r) => r.id === p.rooms[1].room_id)?.title || p.rooms[1].room_id}”)`
        : "",
      " ",
      el("button", { type: "button", "data-testid": "pk-accept", onclick: () => respond(p.id, true) }, "Accept"),
      el("button", { type: "button", "data-testid": "pk-decline", class: "danger", onclick: () => respond(p.id, false) }, "Decline")));
  $("pk-invites").replaceChildren(...inviteItems);
  const box = $("pk");
  if (!pk) {
    box.replaceChildren(el("p", { class: "muted" }, "No PK."));
    return;
  }
  const sides = (pk.rooms || []).map((side) => {
    const mine = side.room_id === roomId;
    const score = pk.mode === "sales" ? money(side.score || 0) : `${side.score || 0} likes`;
    return el("div", { class: `pk-side${mine ? " mine" : ""}`, "data-testid": "pk-side", "data-room-id": side.room_id },
      el("div", {}, el("b", {}, mine ? "Us" : side.host?.name || side.room_id),
        pk.winner_room_id === side.room_id ? " 🏆" : ""),
      el("div", { class: "score", "data-testid": "pk-score" }, score),
      el("ol", { class: "small" }, (side.top || []).map((t) => el("li", {}, `${t.name} ${pk.mode === "sales" ? money(t.score) : t.score}`))));
  });
  let timing = "";
  if (pk.phase === "fighting" && pk.ends_at) timing = ` · ${timeLeft(pk.ends_at)} left`;
  if (pk.phase === "punishing" && pk.punish_until) timing = ` · punishment ${timeLeft(pk.punish_until)}`;
  if (pk.phase === "invited" && pk.lapse_at) timing = ` · answer within ${timeLeft(pk.lapse_at)}`;
  const iAmInvited = pk.phase === "invited" && pk.rooms?.[1]?.room_id === roomId;
  box.replaceChildren(...[
    el("p", {}, "Phase ", el("span", { class: `pill ${pk.phase}`, "data-testid": "pk-phase" }, pk.phase), ` · mode ${pk.mode}${timing}`,
      pk.phase === "ended" || pk.phase === "punishing"
        ? el("span", { "data-testid": "pk-winner" }, pk.winner_room_id ? (pk.winner_room_id === roomId ? " · We won!" : " · We lost") : " · A tie")
        : null),
    el("div", { class: "pk-board" }, sides),
    iAmInvited && !invites.has(pk.id)
      ? el("p", {},
        el("button", { type: "button", "data-testid": "pk-accept", onclick: () => respond(pk.id, true) }, "Accept"),
        el("button", { type: "button", "data-testid": "pk-decline", class: "danger", onclick: () => respond(pk.id, false) }, "Decline"))
      : null,
    pk.phase === "fighting"
      ? el("button", { type: "button", "data-testid": "pk-end", class: "danger", onclick: endPk }, "End PK now")
      : null,
  ].filter(Boolean));
}

// -- comments and moderation -----------------------------------------------------------

function addComments(items) {
  const seen = new Set(feed.map((c) => c.id));
  for (const c of items) if (!seen.has(c.id)) feed.push(c);
  if (feed.length > FEED_MAX) feed = feed.slice(-FEED_MAX);
}

function renderFeed() {
  const list = $("feed");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
  list.replaceChildren(...feed.map((c) => {
    const staffish = c.user?.role === "host" || c.user?.role === "staff" || c.user?.role === "admin";
    return el("li", { "data-testid": "comment", "data-comment-id": c.id, "data-user-id": c.user?.id, class: staffish ? "staff" : "" },
      el("span", { class: "who", "data-testid": "comment-user" }, c.user?.name || "?"),
      c.user?.role && c.user.role !== "viewer" ? el("span", { class: "pill" }, c.user.role) : null,
      el("span", { class: "text", "data-testid": "comment-text" }, c.text),
      c.count > 1 ? el("span", { class: "muted" }, ` ×${c.count}`) : null,
      el("span", { class: "actions" },
        staffish ? null : el("button", { type: "button", "data-testid": "comment-mute", onclick: () => mute(c) }, "Mute"),
        el("button", { type: "button", "data-testid": "comment-delete", class: "danger", onclick: () => deleteComment(c) }, "Delete")));
  }));
  if (atBottom) list.scrollTop = list.scrollHeight;
}

async function mute(comment) {
  const select = $("mute-duration");
  const duration = num(select.value);
  const ack = await call("mod-status", "mod:mute", { room_id: roomId, user_id: comment.user.id, duration_s: duration });
  if (!ack) return;
  const label = select.options[select.selectedIndex].textContent;
  say("mod-status", `Muted ${comment.user.name} for ${label} (until ${new Date(ack.until).toLocaleTimeString()}).`);
}

async function deleteComment(comment) {
  const ack = await call("mod-status", "mod:delete_comment", { room_id: roomId, comment_id: comment.id });
  if (!ack) return;
  const gone = new Set(ack.ids || [comment.id]);
  feed = feed.filter((c) => !gone.has(c.id));
  renderFeed();
  say("mod-status", `Deleted a comment by ${comment.user?.name || "?"}.`);
}

function splitWords(text) {
  return String(text || "").split(/[,，、\n]/).map((w) => w.trim()).filter(Boolean);
}

async function loadBannedWords() {
  const id = roomId;
  if (!socket) return;
  const ack = await socket.callAck("mod:banned_words", { room_id: id });
  if (id !== roomId) return;
  if (ack?.ok) {
    bannedWords = ack.words || [];
    renderWords();
  }
}

async function changeWords(op) {
  const input = document.querySelector('[data-testid="banned-words-input"]');
  const words = splitWords(input.value);
  if (!words.length) {
    say("mod-status", "Type one or more words first (comma separated).", "error");
    return;
  }
  const ack = await call("mod-status", "mod:banned_words", { room_id: roomId, [op]: words });
  if (!ack) return;
  bannedWords = ack.words || [];
  renderWords();
  input.value = "";
  say("mod-status", `${op === "add" ? "Banned" : "Unbanned"}: ${words.join(", ")}.`);
}

function renderWords() {
  const box = $("words");
  box.replaceChildren(...(bannedWords.length
    ? bannedWords.map((w) => el("span", { class: "chip", "data-testid": "banned-word" }, w))
    : [el("span", { class: "muted" }, "none")]));
}

$("words-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  changeWords("add");
});
$("words-remove").addEventListener("click", () => changeWords("remove"));

function setSlowMode(interval) {
  $("slow-current").textContent = interval ? `${interval} s` : "off";
}

$("slow-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const interval = num(formData(ev.target).interval_s);
  const ack = await call("mod-status", "mod:slow_mode", { room_id: roomId, interval_s: interval });
  if (!ack) return;
  setSlowMode(ack.interval_s);
  say("mod-status", ack.interval_s ? `Slow mode on: one comment per ${ack.interval_s} s per viewer.` : "Slow mode off.");
});

// -- countdowns ------------------------------------------------------------------------

setInterval(() => {
  if (!roomId) return;
  renderSales();
  renderGroupbuys();
  if (draw?.status === "open") renderDraw();
  if (pk && pk.phase !== "ended") renderPk();
}, 1000);

// -- start -----------------------------------------------------------------------------

session = savedSession();
showLoggedIn();
renderAll();
if (session) loadRooms({ resume: true });

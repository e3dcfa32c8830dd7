// The 场控 dashboard: sign in (staff/admin or a host), pick a room, then watch it through
// metrics:tick (once a second) on top of the persisted per-minute history, follow the
// room's comments to moderate them, and keep an eye on alerts and the cluster.
import {
  api, login, savedSession, clearSession, connect, followRoom, el, describeError, money,
} from "./lc.js";

const $ = (id) => document.getElementById(id);
const ALLOWED = new Set(["staff", "admin", "host"]);
const KEEP_MS = 60 * 60 * 1000; // points kept on the charts
const STALE_MS = 3500;
const MAX_COMMENTS = 150;

const ui = {
  session: null,
  socket: null,
  roomId: null,
  products: new Map(), // product id -> title
  lastTick: null,
  lastTickAt: 0,
  staleShown: false,
  series: { online: [], comments: [], likes: [], orders: [], gmv: [] },
  history: [],
  saleStatus: new Map(),
  commentRates: [],
  lastSpikeAt: 0,
  words: "",
  charts: {},
};
window.lcStaff = ui; // for the browser tests and the curious

// -- errors and alerts ---------------------------------------------------------------

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function alertLine(text, bad = false) {
  const li = el("li", { class: bad ? "bad" : "" }, `${new Date().toLocaleTimeString()} · ${text}`);
  $("alerts").prepend(li);
  while ($("alerts").children.length > 50) $("alerts").lastChild.remove();
}

function setConn(text, cls) {
  $("conn").textContent = text;
  $("conn").className = `pill ${cls}`;
}

// -- sign in ---------------------------------------------------------------------------

function showLogin(message = "") {
  $("login").hidden = false;
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("room-select").disabled = true;
  $("who").textContent = "";
  $("login-error").textContent = message;
  $("login-error").hidden = !message;
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    const data = await login(form.get("username"), form.get("password"));
    if (!ALLOWED.has(data.user.role)) {
      clearSession();
      showLogin("This dashboard is for staff and hosts; that account is a viewer.");
      return;
    }
    start(savedSession());
  } catch (e) {
    showLogin(e.status === 401 ? "Wrong username or password." : describeError(e));
  }
});

$("logout").addEventListener("click", () => {
  leaveRoom();
  clearSession();
  showLogin();
});

// -- rooms -----------------------------------------------------------------------------

async function loadRooms() {
  const { token, user } = ui.session;
  try {
    const live = (await api("GET", "/api/rooms", { token })).rooms;
    let rooms = live;
    if (user.role === "host") {
      const mine = (await api("GET", "/api/rooms?host=me", { token })).rooms;
      const ids = new Set(mine.map((r) => r.id));
      rooms = mine.filter((r) => r.status !== "ended").concat(live.filter((r) => !ids.has(r.id)));
    }
    const select = $("room-select");
    const keep = ui.roomId || new URLSearchParams(location.search).get("room");
    select.replaceChildren(el("option", { value: "" }, rooms.length ? "Pick a room…" : "No live room"),
      ...rooms.map((r) => el("option", { value: r.id },
        `${r.title} · ${r.host.name} · ${r.status}${r.online !== undefined ? ` · ${r.online} online` : ""}`)));
    select.disabled = false;
    $("rooms-refresh").hidden = false;
    if (keep && rooms.some((r) => r.id === keep)) {
      select.value = keep;
      if (keep !== ui.roomId) openRoom(keep);
    }
  } catch (e) {
    if (e.code === "unauthorized") { clearSession(); showLogin("Your session expired; sign in again."); return; }
    showError(`Could not load rooms: ${describeError(e)}`);
  }
}

$("room-select").addEventListener("change", (e) => { if (e.target.value) openRoom(e.target.value); });
$("rooms-refresh").addEventListener("click", loadRooms);

function leaveRoom() {
  if (ui.socket) {
    ui.socket.removeAllListeners();
    ui.socket.offAny();
    ui.socket.disconnect();
  }
  ui.socket = null;
  ui.roomId = null;
}

async function openRoom(roomId) {
  leaveRoom();
  ui.roomId = roomId;
  history.replaceState(null, "", `/staff?room=${encodeURIComponent(roomId)}`);
  resetRoomState();
  showError("");
  const { token } = ui.session;
  try {
    const products = (await api("GET", `/api/rooms/${encodeURIComponent(roomId)}/products`, { token })).products;
    ui.products = new Map(products.map((p) => [p.id, p.title]));
  } catch (e) {
    showError(`Could not load the room's products: ${describeError(e)}`);
  }
  await loadHistory(roomId);
  if (ui.roomId !== roomId) return;
  connectRoom(roomId);
}

function resetRoomState() {
  ui.series = { online: [], comments: [], likes: [], orders: [], gmv: [] };
  ui.history = [];
  ui.lastTick = null;
  ui.lastTickAt = 0;
  ui.staleShown = false;
  ui.saleStatus = new Map();
  ui.commentRates = [];
  ui.words = "";
  $("comments").replaceChildren();
  $("sales").replaceChildren();
  $("groups").replaceChildren();
  $("pk").replaceChildren();
  for (const id of ["kpi-online", "kpi-comments", "kpi-likes", "kpi-orders", "kpi-gmv", "kpi-conversion"]) $(id).textContent = "–";
  drawCharts();
  drawWords([]);
}

async function loadHistory(roomId) {
  const { token } = ui.session;
  try {
    const data = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}/metrics/history?minutes=240`, { token });
    ui.history = data.rows;
    let gmv = 0;
    for (const row of data.rows) {
      const t = row.at + row.period_s * 1000;
      const per = row.period_s || 60;
      gmv += row.gmv_cents;
      ui.series.online.push([t, row.online]);
      ui.series.comments.push([t, +(row.comments / per).toFixed(2)]);
      ui.series.likes.push([t, +(row.likes / per).toFixed(2)]);
      ui.series.orders.push([t, +(row.orders / per).toFixed(2)]);
      ui.series.gmv.push([t, gmv / 100]);
    }
    $("history-note").textContent = data.rows.length
      ? `history: ${data.rows.length} × ${data.period_s} s averages, then live per second`
      : "no history yet: live per second";
    drawCharts();
    drawHeat();
  } catch (e) {
    $("history-note").textContent = "";
    showError(`Could not load the history (the charts start now): ${describeError(e)}`);
  }
}

// -- the live connection -------------------------------------------------------------

function connectRoom(roomId) {
  const socket = connect(ui.session.token);
  ui.socket = socket;
  setConn("connecting…", "warn");
  socket.on("connect", async () => {
    const ack = await socket.callAck("metrics:subscribe", { room_id: roomId });
    if (!ack.ok) {
      showError(`Cannot watch this room's metrics: ${describeError(ack.error)}`);
      setConn("refused", "off");
      return;
    }
    setConn("live", "");
  });
  socket.on("disconnect", (reason) => {
    setConn("offline", "off");
    alertLine(`Disconnected from the server (${reason}); reconnecting…`, true);
  });
  socket.on("connect_error", (err) => {
    setConn("offline", "off");
    const data = err?.data;
    if (data?.code === "unauthorized") { leaveRoom(); clearSession(); showLogin("Your session expired; sign in again."); }
    else showError(`Cannot reach the server: ${err?.message || "connection failed"}`);
  });
  followRoom(socket, roomId, {
    onState(state, _recovered, error) {
      if (!state) { $("mod-status").textContent = `Comments unavailable: ${describeError(error)}`; return; }
      $("mod-status").textContent = "";
      $("comments").replaceChildren();
      for (const c of state.recent_comments || []) addComment(c);
    },
    onEvent(event, payload) {
      if (event === "metrics:tick" && payload.room_id === ui.roomId) onTick(payload);
      else if (event === "comment:batch") for (const c of payload.items) addComment(c);
      else if (event === "comment:deleted") markDeleted(payload.ids);
      else if (event === "room:status" && payload.status === "ended") alertLine("The room has ended.", true);
      else if (event === "sales:notice") for (const i of payload.items) alertLine(`${i.count} just bought ${i.title || i.product_id}`);
    },
  });
}

function onTick(t) {
  ui.lastTick = t;
  ui.lastTickAt = Date.now();
  if (ui.staleShown) { ui.staleShown = false; setConn("live", ""); alertLine("Metrics are flowing again."); }
  const s = ui.series;
  s.online.push([t.at, t.online]);
  s.comments.push([t.at, t.comments_per_s]);
  s.likes.push([t.at, t.likes_per_s]);
  s.orders.push([t.at, t.orders_per_s]);
  s.gmv.push([t.at, t.gmv_cents / 100]);
  for (const list of Object.values(s)) while (list.length && list[0][0] < t.at - KEEP_MS) list.shift();
  $("kpi-online").textContent = t.online;
  $("kpi-peak").textContent = `peak ${t.peak_online}`;
  $("kpi-comments").textContent = t.comments_per_s;
  $("kpi-likes").textContent = t.likes_per_s;
  $("kpi-orders").textContent = t.totals ? t.totals.orders : t.orders_per_s;
  $("kpi-orders-rate").textContent = `${t.orders_per_s}/s`;
  $("kpi-gmv").textContent = money(t.gmv_cents);
  $("kpi-conversion").textContent = `${(t.conversion * 100).toFixed(1)}%`;
  $("kpi-buyers").textContent = t.buyers !== undefined ? `${t.buyers} buyers` : "";
  watchSpike(t.comments_per_s);
  drawCharts();
  drawWords(t.keywords);
  drawSales(t.flashsales);
  drawGroups(t.groupbuys, t.pk);
  if (t.at % 5000 < 1100) drawHeat();
}

function watchSpike(rate) {
  const rates = ui.commentRates;
  const avg = rates.length ? rates.reduce((a, b) => a + b, 0) / rates.length : 0;
  if (rates.length >= 5 && rate >= Math.max(5, avg * 3) && Date.now() - ui.lastSpikeAt > 10000) {
    ui.lastSpikeAt = Date.now();
    alertLine(`Comment spike: ${rate}/s (usual ${avg.toFixed(1)}/s)`, true);
  }
  rates.push(rate);
  if (rates.length > 30) rates.shift();
}

setInterval(() => {
  if (!ui.lastTickAt || !ui.socket) { $("tick-age").textContent = ""; return; }
  const age = Date.now() - ui.lastTickAt;
  $("tick-age").textContent = `updated ${Math.round(age / 1000)} s ago`;
  if (age > STALE_MS && !ui.staleShown) {
    ui.staleShown = true;
    setConn("stale", "warn");
    alertLine("No metrics for a few seconds: the server may be overloaded or unreachable.", true);
  }
}, 1000);

// -- charts ------------------------------------------------------------------------------

function chart(id) {
  if (!ui.charts[id]) ui.charts[id] = window.echarts.init($(id));
  return ui.charts[id];
}

function drawCharts() {
  const s = ui.series;
  const axis = { type: "time", splitLine: { show: false } };
  chart("chart-activity").setOption({
    animation: false,
    grid: { left: 40, right: 40, top: 28, bottom: 24 },
    tooltip: { trigger: "axis" },
    legend: { top: 0 },
    xAxis: axis,
    yAxis: [{ type: "value", name: "online", minInterval: 1 }, { type: "value", name: "/s", minInterval: 1 }],
    series: [
      { name: "online", type: "line", showSymbol: false, data: s.online, areaStyle: { opacity: 0.15 } },
      { name: "comments/s", type: "line", yAxisIndex: 1, showSymbol: false, data: s.comments },
      { name: "likes/s", type: "line", yAxisIndex: 1, showSymbol: false, data: s.likes },
      { name: "orders/s", type: "bar", yAxisIndex: 1, data: s.orders },
    ],
  });
  chart("chart-gmv").setOption({
    animation: false,
    grid: { left: 56, right: 12, top: 12, bottom: 24 },
    tooltip: { trigger: "axis", valueFormatter: (v) => `¥${Number(v).toFixed(2)}` },
    xAxis: axis,
    yAxis: { type: "value" },
    series: [{ name: "GMV", type: "line", step: "end", showSymbol: false, data: s.gmv, areaStyle: { opacity: 0.2 } }],
  });
}

function drawWords(keywords) {
  const key = JSON.stringify(keywords || []);
  if (key === ui.words) return;
  ui.words = key;
  const data = (keywords || []).map(([name, value]) => ({ name, value }));
  chart("chart-words").setOption({
    series: [{ type: "wordCloud", shape: "circle", gridSize: 4, sizeRange: [12, 42], rotationRange: [0, 0],
      width: "100%", height: "100%", layoutAnimation: false, data }],
  }, true);
  $("words-list").replaceChildren(...data.slice(0, 12).map((w) => el("li", {}, `${w.name} ×${w.value}`)));
}

function drawHeat() {
  const rows = ui.history.slice(-30);
  const products = new Set();
  for (const r of rows) for (const p of Object.keys(r.products)) products.add(p);
  const now = ui.lastTick?.products || [];
  const soFar = {};
  for (const r of ui.history) for (const [p, n] of Object.entries(r.products)) soFar[p] = (soFar[p] || 0) + n;
  const live = {};
  for (const { product_id: p, units } of now) { live[p] = Math.max(0, units - (soFar[p] || 0)); products.add(p); }
  const ys = [...products];
  const xs = rows.map((r) => new Date(r.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })).concat(["now"]);
  const data = [];
  rows.forEach((r, x) => ys.forEach((p, y) => data.push([x, y, r.products[p] || 0])));
  ys.forEach((p, y) => data.push([xs.length - 1, y, live[p] || 0]));
  const max = Math.max(1, ...data.map((d) => d[2]));
  chart("chart-heat").setOption({
    animation: false,
    grid: { left: 90, right: 12, top: 8, bottom: 40 },
    tooltip: {},
    xAxis: { type: "category", data: xs },
    yAxis: { type: "category", data: ys.map((p) => (ui.products.get(p) || p).slice(0, 12)) },
    visualMap: { min: 0, max, calculable: false, orient: "horizontal", left: "center", bottom: 0, itemHeight: 80, show: false },
    series: [{ type: "heatmap", data, label: { show: true, fontSize: 10 } }],
  }, true);
}

// -- sales, groups, PK --------------------------------------------------------------------

function drawSales(sales) {
  $("sales-empty").hidden = sales.length > 0;
  $("sales").replaceChildren(...sales.map((sale) => {
    const title = ui.products.get(sale.product_id) || sale.product_id;
    const before = ui.saleStatus.get(sale.id);
    if (sale.status === "sold_out" && before && before !== "sold_out") alertLine(`Sold out: ${title}`, true);
    ui.saleStatus.set(sale.id, sale.status);
    return el("div", { class: `sale ${sale.status}`, "data-sale-id": sale.id },
      el("span", {}, `${title} · ${money(sale.price_cents)}`),
      el("span", { class: "status" }, el("b", { class: "left" }, sale.left), ` / ${sale.quantity} left · ${sale.status}`),
      el("meter", { min: 0, max: sale.quantity, low: sale.quantity * 0.2, high: sale.quantity * 0.5,
        optimum: sale.quantity, value: sale.left }));
  }));
}

function drawGroups(campaigns, pk) {
  $("groups").replaceChildren(...(campaigns.length ? campaigns.map((c) => el("div", {},
    `拼团 ${ui.products.get(c.product_id) || c.product_id}: ${c.status} · open ${c.groups_open} · `
    + `succeeded ${c.groups_succeeded} · failed ${c.groups_failed}`
    + (c.left !== null && c.left !== undefined ? ` · ${c.left} left` : ""))) : [el("p", { class: "muted" }, "No group buy.")]));
  if (!pk) { $("pk").replaceChildren(el("p", { class: "muted" }, "No PK.")); return; }
  const [a, b] = pk.rooms;
  const ends = pk.ends_at ? ` · ends ${new Date(pk.ends_at).toLocaleTimeString()}` : "";
  $("pk").replaceChildren(el("div", {},
    `PK (${pk.mode}) ${pk.phase}: ${a.host.name} ${a.score} : ${b.score} ${b.host.name}${ends}`),
  pk.winner_room_id ? el("div", {}, `winner: ${pk.winner_room_id === a.room_id ? a.host.name : b.host.name}`) : null);
}

// -- comments and moderation --------------------------------------------------------------

function addComment(c) {
  const li = el("li", { "data-comment-id": c.id },
    el("span", { class: "who" }, c.user.name),
    el("span", { class: "text" }, c.count > 1 ? `${c.text} ×${c.count}` : c.text),
    c.user.role === "viewer" ? el("button", { type: "button", onclick: () => moderate("mod:mute",
      { room_id: ui.roomId, user_id: c.user.id, duration_s: 600 }, `muted ${c.user.name} for 10 min`) }, "mute 10 min") : null,
    el("button", { type: "button", onclick: () => moderate("mod:delete_comment",
      { room_id: ui.roomId, comment_id: c.id }, "comment deleted") }, "delete"));
  $("comments").prepend(li);
  while ($("comments").children.length > MAX_COMMENTS) $("comments").lastChild.remove();
}

function markDeleted(ids) {
  for (const id of ids) $("comments").querySelector(`[data-comment-id="${CSS.escape(id)}"]`)?.classList.add("deleted");
}

async function moderate(event, payload, done) {
  if (!ui.socket) return;
  const ack = await ui.socket.callAck(event, payload);
  $("mod-status").textContent = ack.ok ? done : `Failed: ${describeError(ack.error)}`;
  if (!ack.ok) alertLine(`Moderation failed: ${describeError(ack.error)}`, true);
}

$("alerts-clear").addEventListener("click", () => $("alerts").replaceChildren());

// -- cluster ------------------------------------------------------------------------------

async function pollCluster() {
  if (!ui.session) return;
  if (!["staff", "admin"].includes(ui.session.user.role)) {
    $("cluster-note").textContent = "The cluster view is for staff.";
    return;
  }
  try {
    const { nodes } = await api("GET", "/api/cluster", { token: ui.session.token });
    $("cluster-rows").replaceChildren(...nodes.map((n) => el("tr", {},
      el("td", {}, n.node_id), el("td", {}, n.connections), el("td", {}, n.rooms),
      el("td", {}, `${Math.max(0, Math.round((Date.now() - n.at) / 1000))} s ago`))));
    $("cluster-note").textContent = `${nodes.length} node(s), ${nodes.reduce((a, n) => a + n.connections, 0)} connections`;
  } catch (e) {
    $("cluster-note").textContent = `Cluster view unavailable: ${describeError(e)}`;
  }
}

// -- start --------------------------------------------------------------------------------

function start(session) {
  ui.session = session;
  $("login").hidden = true;
  $("dash").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = `${session.user.name} (${session.user.role})`;
  drawCharts();
  drawWords([]);
  loadRooms();
  pollCluster();
}

setInterval(pollCluster, 3000);
window.addEventListener("resize", () => { for (const c of Object.values(ui.charts)) c.resize(); });

const saved = savedSession();
if (saved && ALLOWED.has(saved.user.role)) start(saved);
else showLogin();

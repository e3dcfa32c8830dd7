// The viewer's live room: video, bullet comments, likes, products, flash sales, group
// buys, lucky draws and PK battles. Everything a user typed is rendered as text (el()).
import {
  api, guest, savedSession, clearSession, connect, followRoom, el, describeError, money,
  newRequestId,
} from "/static/js/lc.js";

const roomId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const invitedGroupId = new URLSearchParams(location.search).get("group");
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------- state
let socket = null;
let me = null; // {id, name, role}
let token = null;
let clockOffset = 0; // server_time - Date.now()
const serverNow = () => Date.now() + clockOffset;
let room = null;
let snapshotSeq = -1; // broadcasts at or below it are already in the snapshot
let products = [];
let pinned = null;
const sales = new Map();
const orders = new Map();
const campaigns = new Map();
const myGroups = new Map();
let draw = null;
let drawEntered = false;
let drawResult = null;
let drawWon = null;
let pk = null;
let likesTotal = 0;
let likesPending = 0;
let likesInFlight = 0;
let likesAwaiting = 0; // sent and acked, not yet in a like:total
let everJoined = false;

const PK_ORDER = { invited: 0, fighting: 1, punishing: 2, ended: 3, declined: 3, lapsed: 3 };

// ---------------------------------------------------------------------------- helpers
function toast(text, kind = "error") {
  const box = $("toast");
  box.textContent = text;
  box.className = `toast ${kind}`;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

function errorText(error) {
  if (!error) return "";
  let text = describeError(error);
  if (error.reason === "slow_mode") text = `Slow mode is on: ${text}`;
  return text;
}

function fmtLeft(ms) {
  if (ms <= 0) return "0:00";
  const s = Math.ceil(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** A countdown span updated by the ticker: `label` + time left until `deadline` (server ms). */
function countdown(deadline, label = "", testid = undefined) {
  const span = el("span", { class: "countdown", "data-deadline": String(deadline), "data-label": label, "data-testid": testid });
  tickOne(span);
  return span;
}
function tickOne(span) {
  const left = Number(span.dataset.deadline) - serverNow();
  span.textContent = `${span.dataset.label}${fmtLeft(left)}`;
}
setInterval(() => document.querySelectorAll("[data-deadline]").forEach(tickOne), 250);

function productOf(id) {
  return products.find((p) => p.id === id) || (pinned && pinned.id === id ? pinned : null);
}

function busy(button, promise) {
  button.disabled = true;
  return promise.finally(() => { button.disabled = false; });
}

async function call(event, data) {
  if (!socket) return { ok: false, error: { code: "unavailable", message: "not connected" } };
  return socket.callAck(event, data);
}

// ---------------------------------------------------------------------------- video
let hls = null;
function setupVideo() {
  const video = $("video");
  const url = room?.stream_url;
  $("poster-title").textContent = room?.title || "";
  if (!url) {
    video.hidden = true;
    $("poster").hidden = false;
    $("poster-sub").textContent = room?.status === "live" ? "LIVE · 直播中" : statusWords(room?.status);
    return;
  }
  if (video.dataset.src === url) return;
  video.dataset.src = url;
  if (hls) { hls.destroy(); hls = null; }
  if (/\.m3u8(\?|$)/i.test(url) && window.Hls && window.Hls.isSupported()) {
    hls = new window.Hls({ liveDurationInfinity: true });
    hls.loadSource(url);
    hls.attachMedia(video);
    hls.on(window.Hls.Events.ERROR, (_, data) => {
      if (data.fatal) $("poster-sub").textContent = "The stream is not available right now";
    });
  } else {
    video.src = url;
  }
  video.hidden = false;
  video.addEventListener("playing", () => { $("poster").hidden = true; }, { once: true });
  video.play().catch(() => {});
  $("unmute").hidden = false;
}
$("unmute").addEventListener("click", () => {
  const video = $("video");
  video.muted = !video.muted;
  video.play().catch(() => {});
  $("unmute").textContent = video.muted ? "🔇 tap to unmute" : "🔊";
});

// ---------------------------------------------------------------------------- top bar
function statusWords(status) {
  return { live: "LIVE", scheduled: "Not started yet 未开播", ended: "Ended 已结束" }[status] || status || "";
}
function renderRoom() {
  if (!room) return;
  document.title = `${room.title} · livecommerce`;
  $("title").textContent = room.title;
  $("host-name").textContent = room.host?.name ? `主播 ${room.host.name}` : "";
  $("avatar").textContent = (room.host?.name || room.title || "播").slice(0, 1);
  const status = $("status");
  status.textContent = statusWords(room.status);
  status.className = `badge ${room.status}`;
  setupVideo();
}

// ---------------------------------------------------------------------------- danmaku + comments
let danmaku = null;
function setupDanmaku() {
  if (danmaku || !window.Danmaku) return;
  danmaku = new window.Danmaku({ container: $("danmaku"), comments: [], engine: "dom", speed: 120 });
  window.addEventListener("resize", () => danmaku.resize());
}

const commentNodes = new Map();
const roleTag = { host: "主播", staff: "场控", admin: "管理" };

function addComment(item, { fly = true } = {}) {
  if (commentNodes.has(item.id)) return;
  const role = item.user?.role || "viewer";
  const mine = me && item.user?.id === me.id;
  const count = item.count && item.count > 1 ? item.count : 0;
  const li = el("li", { class: `comment role-${role}${mine ? " mine" : ""}`, "data-testid": "comment", "data-id": item.id },
    roleTag[role] ? el("span", { class: "tag" }, roleTag[role]) : null,
    el("span", { class: "name" }, `${item.user?.name || "?"}：`),
    el("span", { class: "text" }, item.text),
    count ? el("span", { class: "times", "data-testid": "comment-count" }, ` ×${count}`) : null);
  commentNodes.set(item.id, li);
  const list = $("comment-list");
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  while (list.children.length > 200) {
    const first = list.firstElementChild;
    commentNodes.delete(first.dataset.id);
    first.remove();
  }
  if (stick) list.scrollTop = list.scrollHeight;
  if (fly && danmaku) {
    const special = role !== "viewer";
    danmaku.emit({
      text: count ? `${item.text} ×${count}` : item.text,
      style: {
        fontSize: "18px",
        fontWeight: special || mine ? "700" : "500",
        color: special ? "#ffd54a" : "#ffffff",
        textShadow: "0 0 2px #000, 0 0 4px #000",
        border: mine ? "1px solid #fe2c55" : "none",
        borderRadius: "12px",
        padding: mine ? "0 6px" : "0",
        whiteSpace: "pre",
      },
    });
  }
}

function deleteComments(ids) {
  for (const id of ids || []) {
    commentNodes.get(id)?.remove();
    commentNodes.delete(id);
  }
}

let droppedTotal = 0;
function noteDropped(n) {
  if (!n) return;
  droppedTotal += n;
  const box = $("dropped");
  box.textContent = `busy room: ${droppedTotal} comments skipped`;
  box.hidden = false;
}

function showCommentError(text) {
  const box = $("comment-error");
  box.textContent = text;
  box.hidden = !text;
  clearTimeout(showCommentError.timer);
  if (text) showCommentError.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

async function sendComment(text) {
  text = text.trim();
  if (!text) return false;
  if (!token) { showCommentError(describeError({ code: "unauthorized" })); return false; }
  const ack = await call("comment:send", { room_id: roomId, text, request_id: newRequestId() });
  if (!ack.ok) { showCommentError(errorText(ack.error)); return false; }
  showCommentError("");
  if (draw && draw.entry?.type === "comment" && text.toLowerCase().includes(String(draw.entry.keyword).toLowerCase())) {
    drawEntered = true;
    renderDraw();
  }
  return true;
}

$("comment-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("comment-input");
  const button = $("comment-send");
  button.disabled = true;
  try {
    if (await sendComment(input.value)) input.value = "";
  } finally {
    button.disabled = false;
  }
});

// ---------------------------------------------------------------------------- likes
function renderLikes() {
  const shown = likesTotal + likesAwaiting + likesPending + likesInFlight;
  $("likes").textContent = shown >= 10000 ? `${(shown / 10000).toFixed(1)}万` : String(shown);
}
function heart() {
  const colours = ["#fe2c55", "#ff8a00", "#ffd54a", "#25f4ee", "#ff5ccd"];
  const h = el("span", { class: "heart" }, "❤");
  h.style.color = colours[Math.floor(Math.random() * colours.length)];
  h.style.setProperty("--dx", `${Math.round(Math.random() * 80 - 40)}px`);
  h.style.setProperty("--rot", `${Math.round(Math.random() * 50 - 25)}deg`);
  h.addEventListener("animationend", () => h.remove());
  $("hearts").append(h);
}
$("like-button").addEventListener("click", () => {
  likesPending += 1;
  heart();
  renderLikes();
});
setInterval(async () => {
  if (!likesPending || likesInFlight || !token || !socket?.connected) return;
  const count = Math.min(likesPending, 100);
  likesPending -= count;
  likesInFlight = count;
  const ack = await call("like:send", { room_id: roomId, count });
  likesInFlight = 0;
  if (!ack.ok) {
    if (ack.error?.code === "rate_limited" || ack.error?.code === "unavailable") likesPending += count;
    else toast(errorText(ack.error));
  } else {
    likesAwaiting += count; // until like:total catches up
  }
  renderLikes();
}, 500);

// ---------------------------------------------------------------------------- products
function renderProducts() {
  $("bag-count").textContent = products.length ? String(products.length) : "";
  $("products").replaceChildren(...products.map((p) => {
    const isPinned = pinned && pinned.id === p.id;
    return el("li", { class: `product${isPinned ? " pinned" : ""}`, "data-testid": "product", "data-id": p.id },
      p.image_url ? el("img", { class: "thumb", src: p.image_url, alt: "" }) : el("div", { class: "thumb ph" }, "商品"),
      el("div", { class: "p-body" },
        el("div", { class: "p-title" }, isPinned ? el("span", { class: "explaining", "data-testid": "explaining" }, "讲解中") : null, p.title),
        el("div", { class: "p-meta" }, el("b", { class: "price" }, money(p.price_cents)), ` · stock ${p.stock}`)));
  }));
  const box = $("pinned");
  if (!pinned) { box.replaceChildren(); return; }
  box.replaceChildren(el("div", { class: "card pinned-card", "data-testid": "pinned-card" },
    el("div", { class: "p-title" }, el("span", { class: "explaining" }, "讲解中"), pinned.title),
    el("b", { class: "price" }, money(pinned.price_cents))));
}
$("bag-button").addEventListener("click", () => { $("bag").hidden = !$("bag").hidden; });
$("bag-close").addEventListener("click", () => { $("bag").hidden = true; });

// ---------------------------------------------------------------------------- orders
const ORDER_WORDS = {
  reserved: "Reserved 待支付", paying: "Paying… 支付中", paid: "Paid ✓ 已支付", expired: "Expired 已过期",
  cancelled: "Cancelled 已取消", confirmed: "Confirmed ✓ 拼团成功", refunding: "Refunding 退款中",
  refunded: "Refunded 已退款", declined: "Payment declined 支付失败",
};
function setOrder(order) {
  if (!order?.id) return;
  const old = orders.get(order.id);
  if (old && (old.updated_at || 0) > (order.updated_at || 0)) return;
  orders.set(order.id, order);
}

function orderLine(order, errBox) {
  const line = el("div", { class: `order status-${order.status}`, "data-testid": "order", "data-order-id": order.id },
    el("span", { "data-testid": "order-status" }, ORDER_WORDS[order.status] || order.status),
    ` · ${money(order.amount_cents)}`);
  if (order.status === "reserved") {
    if (order.expires_at) line.append(" · ", countdown(order.expires_at, "pay within "));
    const pay = el("button", { class: "btn small", type: "button", "data-testid": "order-pay" }, "Pay 支付");
    pay.addEventListener("click", () => busy(pay, (async () => {
      const ack = await call("order:pay", { order_id: order.id });
      if (ack.ok) { setOrder(ack.order); errBox.textContent = ""; } else {
        if (ack.error?.order) setOrder(ack.error.order);
        errBox.textContent = errorText(ack.error);
      }
      renderSales();
    })()));
    const cancel = el("button", { class: "btn small ghost", type: "button", "data-testid": "order-cancel" }, "Cancel");
    cancel.addEventListener("click", () => busy(cancel, (async () => {
      const ack = await call("order:cancel", { order_id: order.id });
      if (ack.ok) setOrder(ack.order); else errBox.textContent = errorText(ack.error);
      renderSales();
    })()));
    line.append(" ", pay, " ", cancel);
  }
  return line;
}

// ---------------------------------------------------------------------------- flash sales
const SALE_WORDS = { scheduled: "Soon 即将开抢", live: "Live 抢购中", sold_out: "Sold out 已抢光", ended: "Ended 已结束" };
const saleErrors = new Map();

function renderSales() {
  const cards = [];
  const list = [...sales.values()].sort((a, b) => a.starts_at - b.starts_at);
  for (const sale of list) {
    const mine = [...orders.values()].filter((o) => o.ref_id === sale.id);
    if (sale.status === "ended" && !mine.length) continue;
    const product = productOf(sale.product_id);
    const errBox = el("div", { class: "card-error", "data-testid": "flashsale-error", role: "alert" }, saleErrors.get(sale.id) || "");
    const pct = sale.quantity ? Math.max(0, Math.min(100, (100 * sale.left) / sale.quantity)) : 0;
    let timer;
    if (sale.status === "scheduled") timer = countdown(sale.starts_at, "starts in ", "flashsale-countdown");
    else if (sale.status === "ended") timer = el("span", { "data-testid": "flashsale-countdown" }, "ended");
    else timer = countdown(sale.ends_at, "ends in ", "flashsale-countdown");
    const buy = el("button", { class: "btn buy", type: "button", "data-testid": "flashsale-buy" },
      sale.status === "scheduled" ? "Soon" : sale.status === "live" ? "Buy 马上抢" : SALE_WORDS[sale.status]);
    buy.disabled = sale.status !== "live" || sale.left <= 0;
    buy.addEventListener("click", () => busy(buy, (async () => {
      const ack = await call("flashsale:buy", { sale_id: sale.id, qty: 1, request_id: newRequestId() });
      if (ack.ok) { setOrder(ack.order); saleErrors.delete(sale.id); } else saleErrors.set(sale.id, errorText(ack.error));
      renderSales();
    })()));
    cards.push(el("div", { class: `card sale ${sale.status}`, "data-testid": "flashsale", "data-sale-id": sale.id },
      el("div", { class: "card-head" }, el("span", { class: "tag-hot" }, "秒杀"), " ",
        el("span", { "data-testid": "flashsale-status" }, SALE_WORDS[sale.status] || sale.status)),
      el("div", { class: "p-title" }, product?.title || "Flash sale"),
      el("div", { class: "prices" }, el("b", { class: "price" }, money(sale.price_cents)),
        product && product.price_cents > sale.price_cents ? el("s", { class: "was" }, money(product.price_cents)) : null),
      el("div", { class: "meta" }, timer),
      el("div", { class: "stock" }, el("div", { class: "bar" }, el("i", { style: `width:${pct}%` })),
        el("span", { "data-testid": "flashsale-left" }, `${sale.left} / ${sale.quantity} left`)),
      buy, ...mine.map((o) => orderLine(o, errBox)), errBox));
  }
  $("sales").replaceChildren(...cards);
}

// ---------------------------------------------------------------------------- group buys
const gbErrors = new Map();
const GROUP_WORDS = { open: "Open 拼团中", succeeded: "Group complete ✓ 拼团成功", failed: "Group failed — refunded 拼团失败" };

function iAmIn(group) {
  return !!me && (group.members || []).some((m) => m.id === me.id);
}

function takeGroup(group) {
  if (!group) return;
  const camp = campaigns.get(group.campaign_id);
  if (camp) {
    const groups = (camp.groups || []).filter((g) => g.id !== group.id);
    if (group.status === "open") groups.push(group);
    groups.sort((a, b) => a.expires_at - b.expires_at);
    camp.groups = groups;
  }
  if (iAmIn(group) || myGroups.has(group.id)) myGroups.set(group.id, group);
}

function takeCampaign(campaign) {
  const old = campaigns.get(campaign.id);
  campaigns.set(campaign.id, { ...old, ...campaign, groups: campaign.groups ?? old?.groups ?? [] });
  for (const g of campaign.groups || []) if (iAmIn(g)) myGroups.set(g.id, g);
}

function shareUrl(group) {
  return new URL(group.share_url || `/rooms/${roomId}?group=${group.id}`, location.origin).toString();
}

function gbAction(button, campaignId, payload) {
  return busy(button, (async () => {
    const ack = await call(payload.auto || payload.group_id ? "groupbuy:join" : "groupbuy:open", { ...payload, request_id: newRequestId() });
    if (ack.ok) {
      gbErrors.delete(campaignId);
      setOrder(ack.order);
      myGroups.set(ack.group.id, ack.group);
      takeGroup(ack.group);
      toast(ack.group.needed ? `Joined! ${ack.group.needed} more to go` : "Joined!", "ok");
    } else {
      if (ack.error?.order) setOrder(ack.error.order);
      gbErrors.set(campaignId, errorText(ack.error));
    }
    renderGroupbuys();
  })());
}

function groupRow(camp, group) {
  const mine = iAmIn(group);
  const invited = group.id === invitedGroupId;
  const row = el("li", { class: `group${invited ? " invited" : ""}${mine ? " mine" : ""}`, "data-testid": "group", "data-group-id": group.id },
    el("span", { class: "leader" }, `${group.leader?.name || "?"}的团`),
    el("span", { class: "need", "data-testid": "group-needed" },
      group.needed ? `还差${group.needed}人 · ${group.needed} more to go` : `${(group.members || []).length} joined`),
    countdown(group.expires_at, "剩 "));
  if (mine) row.append(el("span", { class: "joined" }, "✓ joined"));
  else {
    const join = el("button", { class: "btn small", type: "button", "data-testid": "group-join" }, "Join 去拼");
    join.addEventListener("click", () => gbAction(join, camp.id, { group_id: group.id }));
    row.append(join);
  }
  return row;
}

function myGroupBox(group) {
  const order = [...orders.values()].find((o) => o.ref_id === group.id);
  const box = el("div", { class: `my-group ${group.status}`, "data-testid": "my-group", "data-group-id": group.id },
    el("div", {}, el("b", { "data-testid": "my-group-status" }, GROUP_WORDS[group.status] || group.status),
      group.status === "open" ? ` · ${(group.members || []).length}/${group.size} · ` : "",
      group.status === "open" ? el("span", { "data-testid": "my-group-needed" }, `${group.needed} more to go 还差${group.needed}人`) : null),
    order ? el("div", { class: "muted-line" }, `My order: ${ORDER_WORDS[order.status] || order.status}`) : null);
  if (group.status === "open") {
    const url = shareUrl(group);
    const copy = el("button", { class: "btn small ghost", type: "button" }, "Copy link");
    copy.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(url); toast("Link copied", "ok"); } catch { toast(url, "ok"); }
    });
    box.append(el("div", { class: "share" }, "Invite friends: ",
      el("a", { href: url, "data-testid": "share-link" }, "share link"), " ", copy));
  }
  return box;
}

function renderGroupbuys() {
  const cards = [];
  for (const camp of campaigns.values()) {
    const mineHere = [...myGroups.values()].filter((g) => g.campaign_id === camp.id);
    const groups = camp.groups || [];
    if (camp.status === "ended" && !groups.length && !mineHere.length) continue;
    const product = productOf(camp.product_id);
    const errBox = el("div", { class: "card-error", "data-testid": "groupbuy-error", role: "alert" }, gbErrors.get(camp.id) || "");
    const auto = el("button", { class: "btn buy", type: "button", "data-testid": "groupbuy-auto" }, "一键拼团 Quick join");
    auto.addEventListener("click", () => gbAction(auto, camp.id, { campaign_id: camp.id, auto: true }));
    const open = el("button", { class: "btn small ghost", type: "button", "data-testid": "groupbuy-open" }, "我来开团 Start my own group");
    open.addEventListener("click", () => gbAction(open, camp.id, { campaign_id: camp.id }));
    auto.disabled = open.disabled = camp.status !== "live";
    const tiers = (camp.tiers || []).map((t) => `${t.size}人 ${money(t.price_cents)}`).join(" · ");
    const card = el("div", { class: `card groupbuy ${camp.status}`, "data-testid": "groupbuy", "data-campaign-id": camp.id },
      el("div", { class: "card-head" }, el("span", { class: "tag-group" }, `${camp.group_size}人团`), " ",
        camp.status === "live" ? countdown(camp.ends_at, "ends in ") : camp.status === "sold_out" ? "Sold out" : "Ended"),
      el("div", { class: "p-title" }, product?.title || "Group buy"),
      el("div", { class: "prices" }, el("b", { class: "price" }, money(camp.price_cents)),
        el("s", { class: "was" }, money(camp.product_price_cents || product?.price_cents || 0))),
      tiers ? el("div", { class: "muted-line" }, `More people, lower price: ${tiers}`) : null,
      camp.left !== null && camp.left !== undefined ? el("div", { class: "muted-line" }, `${camp.left} left`) : null);
    const invitedHere = invitedGroupId && groups.find((g) => g.id === invitedGroupId && !iAmIn(g));
    if (invitedHere) {
      const join = el("button", { class: "btn buy", type: "button", "data-testid": "groupbuy-join-invited" }, "Join your friend's group 参团");
      join.addEventListener("click", () => gbAction(join, camp.id, { group_id: invitedGroupId }));
      card.append(el("div", { class: "invite" }, `${invitedHere.leader?.name || "A friend"} invited you — ${invitedHere.needed} more to go`), join);
    }
    card.append(auto, open);
    if (groups.length) card.append(el("ul", { class: "groups" }, ...groups.slice(0, 3).map((g) => groupRow(camp, g))));
    for (const g of mineHere) card.append(myGroupBox(g));
    card.append(errBox);
    cards.push(card);
  }
  $("groupbuys").replaceChildren(...cards);
}

// ---------------------------------------------------------------------------- lucky draw
let drawError = "";
function renderDraw() {
  const box = $("draw");
  if (!draw && !drawResult) { box.replaceChildren(); return; }
  const d = draw || {};
  const card = el("div", { class: "card draw", "data-testid": "draw", "data-draw-id": d.id || drawResult?.draw_id },
    el("div", { class: "card-head" }, el("span", { class: "tag-draw" }, "福袋"), " Lucky draw"),
    el("div", { class: "p-title", "data-testid": "draw-prize" }, d.prize || drawResult?.prize || ""));
  const result = drawResult && (!draw || drawResult.draw_id === draw.id) ? drawResult : null;
  if (!result && draw) {
    card.append(el("div", { class: "meta" }, countdown(draw.ends_at, "draws in ", "draw-countdown"),
      ` · ${draw.winners} winner${draw.winners > 1 ? "s" : ""} · ${draw.entrants ?? 0} entered`));
    if (draw.entry?.type === "comment") {
      const kw = draw.entry.keyword;
      card.append(el("div", { class: "hint", "data-testid": "draw-hint" }, `Comment 「${kw}」 to enter · 评论「${kw}」参与`));
      if (drawEntered) card.append(el("div", { class: "ok-line", "data-testid": "draw-entered" }, "You're in ✓ 已参与"));
      else {
        const send = el("button", { class: "btn small", type: "button", "data-testid": "draw-send-keyword" }, `Send 「${kw}」`);
        send.addEventListener("click", () => busy(send, sendComment(kw)));
        card.append(send);
      }
    } else if (drawEntered) {
      card.append(el("div", { class: "ok-line", "data-testid": "draw-entered" }, "You're in ✓ 已参与"));
    } else {
      const enter = el("button", { class: "btn buy", type: "button", "data-testid": "draw-enter" }, "Enter 参与抽奖");
      enter.addEventListener("click", () => busy(enter, (async () => {
        const ack = await call("draw:enter", { draw_id: draw.id });
        if (ack.ok || ack.error?.code === "already_entered") { drawEntered = true; drawError = ""; if (ack.entrants) draw.entrants = ack.entrants; }
        else drawError = errorText(ack.error);
        renderDraw();
      })()));
      card.append(enter);
    }
  }
  if (result) {
    const names = (result.winners || []).map((w) => w.name).join("、");
    const won = me && (result.winners || []).some((w) => w.id === me.id);
    card.append(el("div", { class: "result", "data-testid": "draw-result" },
      won || drawWon ? el("div", { class: "won", "data-testid": "draw-won" }, "★ You won! 恭喜中奖") : null,
      el("div", {}, names ? `Winners 中奖: ${names}` : "No winners this time"),
      el("div", { class: "muted-line" }, `${result.entrants_count ?? 0} entered · `,
        el("a", { href: `/api/draws/${encodeURIComponent(result.draw_id)}/proof`, target: "_blank", rel: "noopener", "data-testid": "draw-verify" }, "verify 验证"))));
  }
  card.append(el("div", { class: "card-error", role: "alert" }, drawError));
  box.replaceChildren(card);
}

// ---------------------------------------------------------------------------- PK
function renderPk() {
  const box = $("pk");
  if (!pk || pk.phase === "declined" || pk.phase === "lapsed") { box.hidden = true; box.replaceChildren(); return; }
  const rooms = pk.rooms || [];
  const left = rooms.find((r) => r.room_id === roomId) || rooms[0] || {};
  const right = rooms.find((r) => r !== left) || {};
  const fmt = (v) => (pk.mode === "sales" ? money(v || 0) : String(v || 0));
  const a = left.score || 0;
  const b = right.score || 0;
  const share = a + b > 0 ? Math.max(8, Math.min(92, (100 * a) / (a + b))) : 50;
  let phase;
  if (pk.phase === "invited") phase = el("span", {}, "PK invitation…");
  else if (pk.phase === "fighting") phase = countdown(pk.ends_at, "PK ", "pk-countdown");
  else if (pk.phase === "punishing") phase = pk.punish_until ? countdown(pk.punish_until, "惩罚时间 ") : el("span", {}, "惩罚时间");
  else phase = el("span", {}, "PK over 已结束");
  const settled = pk.phase === "punishing" || pk.phase === "ended";
  let winner = null;
  if (settled) {
    const w = rooms.find((r) => r.room_id === pk.winner_room_id);
    winner = el("div", { class: "pk-winner", "data-testid": "pk-winner" },
      w ? (w.room_id === roomId ? "★ We won! 胜利" : `★ ${w.host?.name || "The other room"} won`) : "Tie 平局");
  }
  const mvp = (side) => (side.mvp ? `MVP ${side.mvp.name}` : side.top?.[0] ? `Top ${side.top[0].name}` : "");
  box.replaceChildren(
    el("div", { class: "pk-head" }, el("span", { class: "pk-name" }, left.host?.name || "Us"),
      el("span", { class: "pk-phase", "data-testid": "pk-phase" }, phase),
      el("span", { class: "pk-name right" }, right.host?.name || "Them")),
    el("div", { class: "pk-bar" },
      el("div", { class: "pk-left", style: `width:${share}%` }, el("b", { "data-testid": "pk-score-left" }, fmt(a))),
      el("div", { class: "pk-right", style: `width:${100 - share}%` }, el("b", { "data-testid": "pk-score-right" }, fmt(b)))),
    el("div", { class: "pk-foot" }, el("span", { "data-testid": "pk-mvp-left" }, mvp(left)),
      winner, el("span", { "data-testid": "pk-mvp-right" }, mvp(right))));
  box.hidden = false;
}

function takePk(next) {
  if (!next) return;
  if (pk && pk.id === next.id && PK_ORDER[next.phase] < PK_ORDER[pk.phase]) return;
  pk = next;
  renderPk();
}

// ---------------------------------------------------------------------------- snapshot + events
function applyState(state, recovered) {
  clockOffset = state.server_time - Date.now();
  snapshotSeq = state.seq;
  room = state.room;
  renderRoom();
  $("online").textContent = String(state.online ?? 0);
  likesTotal = Math.max(recovered ? likesTotal : 0, state.likes || 0);
  renderLikes();
  products = state.products || [];
  pinned = state.pinned_product || null;
  renderProducts();
  if (state.me) {
    me = { ...me, ...state.me };
    for (const o of state.me.orders || []) setOrder(o);
    if (state.me.entered_draw) drawEntered = true;
  }
  sales.clear();
  for (const s of state.flashsales || []) sales.set(s.id, s);
  renderSales();
  const keepMine = new Map(myGroups);
  campaigns.clear();
  for (const c of state.groupbuys || []) takeCampaign(c);
  for (const [id, g] of keepMine) if (!myGroups.has(id)) myGroups.set(id, g);
  renderGroupbuys();
  if (state.draw) {
    if (!draw || draw.id !== state.draw.id) { drawEntered = !!state.me?.entered_draw; drawError = ""; }
    draw = state.draw;
  } else if (draw && !drawResult) draw = null;
  renderDraw();
  if (state.pk) takePk(state.pk); else { pk = null; renderPk(); }
  for (const c of state.recent_comments || []) addComment(c, { fly: false });
}

function onEvent(event, p) {
  // after a recovered rejoin the snapshot already holds what these replays say
  const stale = typeof p?.seq === "number" && p.seq <= snapshotSeq;
  switch (event) {
    case "comment:batch":
      for (const item of p.items || []) addComment(item, { fly: !stale });
      noteDropped(p.dropped);
      break;
    case "comment:deleted": deleteComments(p.ids); break;
    case "like:total": if (!stale) { likesTotal = p.total; likesAwaiting = 0; renderLikes(); } break;
    case "online:count": if (!stale) $("online").textContent = String(p.online); break;
    case "room:status":
      if (!stale && room) { room.status = p.status; renderRoom(); toast(p.status === "ended" ? "The live has ended 直播已结束" : statusWords(p.status), "ok"); }
      break;
    case "product:pinned":
      if (!stale) { pinned = p.product || null; renderProducts(); renderSales(); }
      break;
    case "flashsale:update":
      if (!stale && p.sale) { sales.set(p.sale.id, p.sale); renderSales(); }
      break;
    case "order:update":
      setOrder(p.order); renderSales(); renderGroupbuys();
      break;
    case "groupbuy:update":
      if (!stale) {
        if (p.campaign) takeCampaign(p.campaign);
        takeGroup(p.group);
        renderGroupbuys();
      }
      break;
    case "groupbuy:coupon":
      toast(`You got a ${money(p.coupon?.amount_cents || 0)} coupon for the failed group`, "ok");
      break;
    case "draw:update":
      if (!stale && p.draw) {
        if (!draw || draw.id !== p.draw.id) { drawEntered = false; drawResult = null; drawWon = null; drawError = ""; }
        draw = p.draw;
        renderDraw();
      }
      break;
    case "draw:result":
      if (!stale) {
        drawResult = { ...p, prize: draw && draw.id === p.draw_id ? draw.prize : "" };
        renderDraw();
      }
      break;
    case "draw:won":
      if (p.room_id === roomId) { drawWon = p; toast(`★ You won ${p.prize}!`, "ok"); renderDraw(); }
      break;
    case "pk:update": if (!stale) takePk(p.pk); break;
    case "sales:notice": showSalesNotice(p.items || []); break;
    default: break;
  }
}

// "N people just bought X": the server batches them every few seconds.
function showSalesNotice(items) {
  const top = items.filter((i) => i.count > 0).sort((a, b) => b.count - a.count)[0];
  if (!top) return;
  const box = $("sales-notice");
  box.textContent = `🛍 ${top.count} 人刚刚购买了 ${top.title || "this item"} · ${top.count} just bought it`;
  box.hidden = false;
  clearTimeout(showSalesNotice.timer);
  showSalesNotice.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

// ---------------------------------------------------------------------------- connection
function banner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

function fatal(text) {
  $("fatal-text").textContent = text;
  $("fatal").hidden = !text;
}
$("fatal-retry").addEventListener("click", () => location.reload());

async function session() {
  const saved = savedSession();
  if (saved) return saved;
  const data = await guest(`观众${1000 + Math.floor(Math.random() * 9000)}`);
  return { token: data.token, user: data.user };
}

async function start() {
  if (!roomId) { fatal("Room not found"); return; }
  let s;
  for (let attempt = 0; ; attempt += 1) {
    try {
      s = await session();
      break;
    } catch (e) {
      if (e.status === 404 || e.code === "not_found") { s = null; break; }
      banner(`Cannot reach the server — retrying… (${e.message})`);
      if (attempt >= 2) fatal(`The server cannot be reached. ${e.message || ""}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  fatal("");
  token = s?.token || null;
  me = s?.user || null;
  socket = connect(token);
  let refreshedToken = false;
  const follower = followRoom(socket, roomId, {
    onState(state, recovered, error) {
      if (!state) {
        if (error?.code === "not_found") { fatal("Room not found 直播间不存在"); socket.disconnect(); return; }
        banner(`Could not join the room: ${errorText(error)} — retrying…`);
        setTimeout(() => socket.connected && follower.join(), 2000);
        return;
      }
      everJoined = true;
      fatal("");
      banner("");
      applyState(state, recovered);
    },
    onEvent,
    async onConnection(up, error) {
      if (up) { if (everJoined) banner("Connected, rejoining… 正在恢复"); return; }
      if (error?.code === "unauthorized" && !refreshedToken) {
        // a stale token (another server, expired): start again as a new guest
        refreshedToken = true;
        clearSession();
        try {
          const fresh = await session();
          token = fresh.token;
          me = fresh.user;
          socket.auth = { token };
          socket.connect();
          return;
        } catch { /* fall through to the banner */ }
      }
      banner(everJoined ? "Connection lost — reconnecting… 网络断开，正在重连" : `Cannot reach the server — retrying… ${error?.message ? `(${error.message})` : ""}`);
      if (error?.code === "unauthorized") {
        // refused by auth: socket.io does not retry on its own
        setTimeout(() => socket.connect(), 3000);
      }
    },
  });
  // a lookup for a friendlier not-found while the socket connects
  api("GET", `/api/rooms/${encodeURIComponent(roomId)}`).then((r) => {
    if (!room) { room = r; renderRoom(); }
  }).catch((e) => {
    if (e.status === 404) fatal("Room not found 直播间不存在");
  });
}

setupDanmaku();
renderLikes();
start();

// for tests and debugging
window.lcRoom = { get me() { return me; }, get socket() { return socket; }, roomId };

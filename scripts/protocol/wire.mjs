// Raw Engine.IO v4 clients for the checks: HTTP long-polling with fetch, WebSocket with ws.
// Nothing here interprets packets beyond what a check asks for.

import http from "node:http";

import WebSocket from "ws";

export const BASE = (process.env.PROTOCOL_URL ?? "http://127.0.0.1:3000").replace(/\/$/, "");
export const PATH = process.env.PROTOCOL_PATH ?? "/socket.io/";
export const SEP = "\x1e"; // record separator between packets of a polling payload

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function httpUrl(query) {
  return `${BASE}${PATH}?${query}`;
}

export function wsUrl(query) {
  return httpUrl(query).replace(/^http/, "ws");
}

/** A bounded wait: rejects with ``what`` after ``ms``. */
export function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// -- HTTP long-polling ---------------------------------------------------------------

/** Any single HTTP request of a check gives up after this long. */
const HTTP_TIMEOUT_MS = 8000;

export async function get(query, init = {}) {
  const res = await fetch(httpUrl(query), { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS), ...init });
  return { status: res.status, type: res.headers.get("content-type") ?? "", body: await res.text() };
}

/** A polling session: the open packet's handshake data. */
export async function openPolling() {
  const res = await get("EIO=4&transport=polling");
  if (res.status !== 200 || !res.body.startsWith("0")) {
    throw new Error(`polling handshake failed: ${res.status} ${res.body}`);
  }
  return JSON.parse(res.body.slice(1));
}

/** One GET of a session: its status and packets (a payload split on the separator). */
export async function poll(sid, init = {}) {
  const res = await get(`EIO=4&transport=polling&sid=${sid}`, init);
  return { status: res.status, packets: res.status === 200 ? res.body.split(SEP) : [], body: res.body };
}

/** One POST of a session carrying ``packets`` as one payload. */
export async function push(sid, ...packets) {
  const res = await fetch(httpUrl(`EIO=4&transport=polling&sid=${sid}`), {
    method: "POST",
    headers: { "content-type": "text/plain;charset=UTF-8" },
    body: packets.join(SEP),
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
  });
  return { status: res.status, body: await res.text() };
}

/** The status of a POST whose body the server may refuse without reading it (node:http
 * reports the answer as soon as it arrives; fetch would wait to finish sending first). */
export function pushStatus(sid, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(httpUrl(`EIO=4&transport=polling&sid=${sid}`), {
      method: "POST",
      headers: { "content-type": "text/plain;charset=UTF-8", "content-length": Buffer.byteLength(body) },
      timeout: HTTP_TIMEOUT_MS,
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode);
      req.destroy();
    });
    req.on("timeout", () => req.destroy(new Error("no answer")));
    req.on("error", (err) => (err.code === "ECONNRESET" || err.code === "EPIPE" ? null : reject(err)));
    req.end(body);
  });
}

/** Polls until ``count`` packets other than pings arrived (pings are answered). */
export async function pollPackets(sid, count, ms = 3000) {
  const got = [];
  const deadline = Date.now() + ms;
  while (got.length < count) {
    if (Date.now() > deadline) throw new Error(`only ${JSON.stringify(got)} within ${ms} ms`);
    const { status, packets } = await poll(sid);
    if (status !== 200) throw new Error(`poll answered ${status}`);
    for (const packet of packets) {
      if (packet === "2") await push(sid, "3");
      else got.push(packet);
    }
  }
  return got;
}

// -- WebSocket -------------------------------------------------------------------------

/** A WebSocket with a queue of received frames (text as strings, binary as Buffers). */
export class Wire {
  constructor(query, { answerPings = true } = {}) {
    this.ws = new WebSocket(wsUrl(query));
    this.answerPings = answerPings;
    this.frames = [];
    this.waiters = [];
    this.isClosed = false;
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("unexpected-response", (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      this.ws.once("error", reject);
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code) => {
        this.isClosed = true;
        resolve(code);
        for (const waiter of this.waiters.splice(0)) waiter();
      });
    });
    this.ws.on("error", () => {});
    this.ws.on("message", (data, isBinary) => {
      const frame = isBinary ? Buffer.from(data) : data.toString();
      if (this.answerPings && frame === "2") {
        this.ws.send("3");
        return;
      }
      this.frames.push(frame);
      for (const waiter of this.waiters.splice(0)) waiter();
    });
  }

  /** Opens a fresh session (no sid) and reads its open packet. */
  static async open(options) {
    const wire = new Wire("EIO=4&transport=websocket", options);
    await within(3000, wire.opened, "websocket open");
    const open = await wire.next();
    if (typeof open !== "string" || !open.startsWith("0")) throw new Error(`open packet: ${open}`);
    wire.handshake = JSON.parse(open.slice(1));
    return wire;
  }

  send(frame) {
    this.ws.send(frame);
  }

  /** The next frame, waiting up to ``ms``. */
  async next(ms = 3000) {
    const deadline = Date.now() + ms;
    while (this.frames.length === 0) {
      if (this.isClosed) throw new Error("closed while waiting for a frame");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${ms} ms`);
      await within(left, new Promise((resolve) => this.waiters.push(resolve)), "a frame").catch(
        () => {},
      );
    }
    return this.frames.shift();
  }

  /** Resolves true if the server closes the connection within ``ms``. */
  async closesWithin(ms) {
    return within(ms, this.closed.then(() => true), "close").catch(() => false);
  }

  close() {
    if (!this.isClosed) this.ws.terminate();
  }
}

/** A WebSocket session connected to ``nsp`` with ``auth``: [wire, CONNECT data, auth echo]. */
export async function connectSocketIO(nsp = "/", auth = undefined) {
  const wire = await Wire.open();
  const prefix = nsp === "/" ? "" : `${nsp},`;
  wire.send(`40${prefix}${auth === undefined ? "" : JSON.stringify(auth)}`);
  const connect = await wire.next();
  const echo = await wire.next();
  return [wire, connect, echo];
}

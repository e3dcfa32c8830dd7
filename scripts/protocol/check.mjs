// Socket.IO v5 / Engine.IO v4 protocol checks against a running server.
//
// What the two protocol specifications define (socket.io-protocol and engine.io-protocol,
// v5 and v4), checked on the wire with raw HTTP long-polling and WebSocket clients, then
// with npm's official socket.io-client and engine.io-client. The server is expected to be
// set up as the Socket.IO protocol test suite asks: "auth" echoed on connection to "/" and
// "/custom", an "echo" event answered with "echo-back" and "echo-with-ack" acknowledged
// with the same arguments (scripts/protocol_server.py; the suite itself names the echo
// "message", which livecommerce reserves).
//
//   PROTOCOL_URL               the server (default http://127.0.0.1:3000)
//   PROTOCOL_PING_INTERVAL_MS  what it was configured with (default 300, the suite's)
//   PROTOCOL_PING_TIMEOUT_MS   (default 200)
//   PROTOCOL_MAX_PAYLOAD       (default 1000000)
//   PROTOCOL_TARGET            "spec" (default), or "livecommerce": where livecommerce
//                              (or python-socketio / python-engineio under it) differs from
//                              the specification, assert what it does instead and report
//                              the difference; see DEVIATIONS.
//
// node --test --test-reporter=spec check.mjs   (scripts/protocol-check does all of it)

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";

import { Socket as EngineSocket } from "engine.io-client";
import { io } from "socket.io-client";

import {
  BASE,
  PATH,
  Wire,
  connectSocketIO,
  get,
  openPolling,
  poll,
  pollPackets,
  push,
  pushStatus,
  sleep,
  within,
} from "./wire.mjs";

const PING_INTERVAL = Number(process.env.PROTOCOL_PING_INTERVAL_MS ?? 300);
const PING_TIMEOUT = Number(process.env.PROTOCOL_PING_TIMEOUT_MS ?? 200);
const MAX_PAYLOAD = Number(process.env.PROTOCOL_MAX_PAYLOAD ?? 1_000_000);
const TARGET = process.env.PROTOCOL_TARGET ?? "spec";
/** Slack for timing checks on a busy machine. */
const SLACK = 1500;

// Where a target knowingly differs from the specification: what it does instead, and why.
// A check with an entry here asserts the target's behaviour (so a change either way is
// noticed) and prints the difference.
const DEVIATIONS = {
  livecommerce: {
    "malformed-close":
      "a malformed Socket.IO packet does not close the connection: PROTOCOL.md says a " +
      "server never answers bad input with a disconnect, so it is ignored, or answered " +
      "with an `invalid` ack when it carries an ack id (livecommerce/transport/socket.py)",
    "connect-first":
      "an EVENT before any CONNECT is ignored instead of closing the connection " +
      "(python-socketio drops packets for namespaces the client has not joined)",
    "connect-error-payload":
      'CONNECT_ERROR for an unknown namespace carries the string "Unable to connect", ' +
      'not a {"message"} object (python-socketio; socket.io-client accepts both)',
    "missing-transport":
      "a request without `transport` is taken as polling instead of refused " +
      "(python-engineio's default)",
    "bad-method":
      "PUT is refused with 405 Method Not Allowed by aiohttp's router, not 400",
    "polling-close":
      "after a polling client's close packet, the GET still pending is answered only " +
      "at pingInterval + pingTimeout (python-engineio), not at once with a noop",
    "websocket-close":
      "after the client's close packet the session ends at once, but the WebSocket itself " +
      "is closed only when the server's read times out, pingInterval + pingTimeout later " +
      "(python-engineio)",
    "max-payload":
      "a polling POST longer than maxPayload is answered 400 (the session closed), not " +
      "413; with no GET pending, python-engineio never answers it at all (it waits for " +
      "the closed session's queue to drain)",
    "malformed-eio":
      "an Engine.IO packet of unknown type over WebSocket is logged and skipped, the " +
      "connection stays open (python-engineio)",
    "namespace-disconnect":
      "DISCONNECT from the last namespace leaves the Engine.IO connection open " +
      "(python-socketio); the namespace itself is left",
  },
};

const reported = [];

/** A check: bounded, so a server that never answers fails it instead of hanging. */
const check = (name, fn) => it(name, { timeout: 20_000 }, fn);

/** "spec", or "target" when TARGET documents a difference for ``id``. */
function expectation(t, id) {
  const why = DEVIATIONS[TARGET]?.[id];
  if (!why) return "spec";
  t.diagnostic(`deviation (${TARGET}): ${why}`);
  if (!reported.includes(`${id}: ${why}`)) reported.push(`${id}: ${why}`);
  return "target";
}

after(() => {
  console.log(`# target: ${TARGET} at ${BASE}${PATH}`);
  console.log(`# deviations asserted: ${reported.length}`);
  for (const line of reported) console.log(`#   ${line}`);
});

const handshakeKeys = ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"];

function checkHandshake(data, upgrades) {
  assert.deepEqual(Object.keys(data).sort(), handshakeKeys);
  assert.equal(typeof data.sid, "string");
  assert.ok(data.sid.length > 0);
  assert.deepEqual(data.upgrades, upgrades);
  assert.equal(data.pingInterval, PING_INTERVAL);
  assert.equal(data.pingTimeout, PING_TIMEOUT);
  assert.equal(data.maxPayload, MAX_PAYLOAD);
}

/** A WebSocket connection that the server refuses (HTTP error or an immediate close). */
async function refused(query) {
  const wire = new Wire(query);
  try {
    await within(3000, wire.opened, "websocket open");
  } catch {
    return true; // refused before the upgrade
  }
  const closed = await wire.closesWithin(2000);
  wire.close();
  return closed;
}

/** True if the connection still answers an echo (it was not closed or broken). */
async function stillEchoes(wire) {
  wire.send('42["echo","still here"]');
  for (;;) {
    const frame = await wire.next();
    if (frame === '42["echo-back","still here"]') return true;
  }
}

// ===================================================================== Engine.IO v4

describe("Engine.IO: handshake", () => {
  check("opens a session over HTTP long-polling with the open packet's fields", async () => {
    const res = await get("EIO=4&transport=polling");
    assert.equal(res.status, 200);
    assert.match(res.type, /^text\/plain/);
    assert.ok(res.body.startsWith("0"), res.body);
    checkHandshake(JSON.parse(res.body.slice(1)), ["websocket"]);
  });

  check("opens a session over WebSocket, with no further upgrade offered", async () => {
    const wire = await Wire.open();
    checkHandshake(wire.handshake, []);
    wire.close();
  });

  check("refuses a missing, malformed or unsupported EIO version with 400", async () => {
    for (const query of ["transport=polling", "EIO=abc&transport=polling", "EIO=3&transport=polling"]) {
      assert.equal((await get(query)).status, 400, query);
    }
    assert.ok(await refused("EIO=abc&transport=websocket"));
  });

  check("refuses an unknown transport with 400", async () => {
    assert.equal((await get("EIO=4&transport=abc")).status, 400);
    assert.ok(await refused("EIO=4&transport=abc"));
  });

  check("refuses a request without a transport", async (t) => {
    const res = await get("EIO=4");
    if (expectation(t, "missing-transport") === "spec") {
      assert.equal(res.status, 400);
    } else {
      assert.equal(res.status, 200);
      assert.ok(res.body.startsWith("0"), res.body);
    }
  });

  check("refuses a handshake by POST or PUT", async (t) => {
    const post = await fetch(`${BASE}${PATH}?EIO=4&transport=polling`, { method: "POST", body: "" });
    assert.equal(post.status, 400);
    const put = await fetch(`${BASE}${PATH}?EIO=4&transport=polling`, { method: "PUT", body: "" });
    assert.equal(put.status, expectation(t, "bad-method") === "spec" ? 400 : 405);
  });

  check("refuses an unknown session id with 400", async () => {
    const unknown = "no-such-session-000000";
    assert.equal((await get(`EIO=4&transport=polling&sid=${unknown}`)).status, 400);
    assert.equal((await push(unknown, "40")).status, 400);
    assert.ok(await refused(`EIO=4&transport=websocket&sid=${unknown}`));
  });
});

describe("Engine.IO: heartbeat", () => {
  check("pings a polling client every pingInterval and keeps the session while it pongs", async () => {
    const { sid } = await openPolling();
    for (let i = 0; i < 3; i++) {
      const started = Date.now();
      const { status, packets } = await within(PING_INTERVAL + SLACK, poll(sid), "a ping");
      assert.equal(status, 200);
      assert.deepEqual(packets, ["2"]);
      assert.ok(Date.now() - started >= PING_INTERVAL - 100, "pinged before pingInterval");
      assert.equal((await push(sid, "3")).status, 200);
    }
    assert.equal((await push(sid, "1")).status, 200);
  });

  check("pings a WebSocket client every pingInterval and keeps the connection while it pongs", async () => {
    const wire = await Wire.open({ answerPings: false });
    for (let i = 0; i < 3; i++) {
      assert.equal(await wire.next(PING_INTERVAL + SLACK), "2");
      wire.send("3");
    }
    assert.equal(wire.isClosed, false);
    wire.close();
  });

  check("closes a polling session whose client does not pong within pingTimeout", async () => {
    const { sid } = await openPolling();
    const { packets } = await poll(sid);
    assert.deepEqual(packets, ["2"]);
    await sleep(PING_TIMEOUT + 300); // no pong
    const deadline = Date.now() + SLACK;
    for (;;) {
      const res = await poll(sid);
      if (res.status === 400) break; // the session is gone
      assert.equal(res.status, 200);
      assert.ok(Date.now() < deadline, "session still open after the ping timeout");
      if (res.packets.includes("1")) continue; // a close packet first: the next GET fails
    }
  });

  check("closes a WebSocket connection whose client does not pong within pingTimeout", async () => {
    const wire = await Wire.open({ answerPings: false });
    assert.equal(await wire.next(PING_INTERVAL + SLACK), "2");
    assert.ok(await wire.closesWithin(PING_TIMEOUT + SLACK), "still open after the ping timeout");
  });
});

describe("Engine.IO: upgrade, messages, close", () => {
  check("upgrades a polling session to WebSocket (2probe, 3probe, 5)", async () => {
    const { sid } = await openPolling();
    const pending = poll(sid); // the GET held open while the upgrade happens
    const wire = new Wire(`EIO=4&transport=websocket&sid=${sid}`);
    await within(3000, wire.opened, "websocket open");
    wire.send("2probe");
    assert.equal(await wire.next(), "3probe");
    // The pending GET is released (with a noop) so the client can pause polling.
    const released = await within(SLACK, pending, "the pending GET released");
    assert.equal(released.status, 200);
    assert.deepEqual(released.packets, ["6"]);
    wire.send("5");
    wire.send("40");
    assert.match(await wire.next(), /^40\{"sid":"[^"]+"\}$/);
    // The session now lives on the WebSocket only.
    assert.equal((await poll(sid)).status, 400);
    assert.ok(await refused(`EIO=4&transport=websocket&sid=${sid}`), "a second socket got in");
    wire.close();
  });

  check("carries several packets in one polling payload, binary ones base64 ('b')", async () => {
    const { sid } = await openPolling();
    assert.equal((await push(sid, "40", '42["echo","a"]', '451-["echo",{"_placeholder":true,"num":0}]', "bAQID")).status, 200);
    const packets = await pollPackets(sid, 5);
    assert.match(packets[0], /^40\{"sid":"[^"]+"\}$/);
    assert.deepEqual(packets.slice(1), [
      '42["auth",{}]',
      '42["echo-back","a"]',
      '451-["echo-back",{"_placeholder":true,"num":0}]',
      "bAQID",
    ]);
    await push(sid, "1");
  });

  check("refuses a polling payload larger than maxPayload and ends the session", async (t) => {
    const { sid } = await openPolling();
    const pending = poll(sid); // as a real client would have
    await sleep(50);
    const status = await pushStatus(sid, `4${"x".repeat(MAX_PAYLOAD + 1)}`);
    assert.equal(status, expectation(t, "max-payload") === "spec" ? 413 : 400);
    const released = await within(SLACK, pending, "the pending GET");
    assert.ok(released.status === 400 || released.packets.includes("1"), released.body);
    assert.equal((await poll(sid)).status, 400);
  });

  check("closes a WebSocket session on the client's close packet", async (t) => {
    const wire = await Wire.open();
    const started = Date.now();
    wire.send("1");
    if (expectation(t, "websocket-close") === "spec") {
      assert.ok(await wire.closesWithin(SLACK));
    } else {
      assert.ok(await wire.closesWithin(PING_INTERVAL + PING_TIMEOUT + SLACK));
      assert.ok(Date.now() - started >= PING_INTERVAL, "closed early: update DEVIATIONS");
    }
  });

  check("ends a polling session on the client's close packet, releasing the pending GET", async (t) => {
    const { sid } = await openPolling();
    const pending = poll(sid);
    await sleep(50);
    const started = Date.now();
    assert.equal((await push(sid, "1")).status, 200);
    if (expectation(t, "polling-close") === "spec") {
      const released = await within(SLACK, pending, "the pending GET released");
      assert.equal(released.status, 200);
      assert.deepEqual(released.packets, ["6"]);
    } else {
      const released = await within(PING_INTERVAL + PING_TIMEOUT + SLACK, pending, "the pending GET");
      assert.ok(Date.now() - started >= PING_INTERVAL, "released early: update DEVIATIONS");
      assert.ok([200, 400].includes(released.status));
    }
    assert.equal((await poll(sid)).status, 400);
  });

  check("closes a WebSocket that sends a malformed Engine.IO packet", async (t) => {
    const wire = await Wire.open();
    wire.send("9unknown");
    if (expectation(t, "malformed-eio") === "spec") {
      assert.ok(await wire.closesWithin(SLACK), "still open after an unknown packet type");
    } else {
      wire.send("40");
      assert.match(await wire.next(), /^40\{"sid":"[^"]+"\}$/);
      assert.equal(wire.isClosed, false);
    }
    wire.close();
  });
});

// ===================================================================== Socket.IO v5

describe("Socket.IO: connecting to namespaces", () => {
  check('connects to "/" and answers CONNECT with a Socket.IO sid', async () => {
    const [wire, connect, auth] = await connectSocketIO("/");
    const { sid } = JSON.parse(connect.slice(2));
    assert.ok(connect.startsWith("40{"), connect);
    assert.equal(typeof sid, "string");
    assert.notEqual(sid, wire.handshake.sid); // v5: not the Engine.IO session id
    assert.equal(auth, '42["auth",{}]');
    wire.close();
  });

  check('connects to "/" with an auth payload', async () => {
    const [wire, connect, auth] = await connectSocketIO("/", { token: "123" });
    assert.match(connect, /^40\{"sid":"[^"]+"\}$/);
    assert.equal(auth, '42["auth",{"token":"123"}]');
    wire.close();
  });

  check("connects to a custom namespace, with and without an auth payload", async () => {
    for (const [auth, echoed] of [[undefined, "{}"], [{ token: "abc" }, '{"token":"abc"}']]) {
      const [wire, connect, greeting] = await connectSocketIO("/custom", auth);
      assert.match(connect, /^40\/custom,\{"sid":"[^"]+"\}$/);
      assert.equal(greeting, `42/custom,["auth",${echoed}]`);
      wire.close();
    }
  });

  check("refuses an unknown namespace with CONNECT_ERROR", async (t) => {
    const wire = await Wire.open();
    wire.send("40/random,");
    const frame = await wire.next();
    assert.ok(frame.startsWith("44/random,"), frame);
    const data = JSON.parse(frame.slice("44/random,".length));
    if (expectation(t, "connect-error-payload") === "spec") {
      assert.equal(typeof data.message, "string");
    } else {
      assert.equal(data, "Unable to connect");
    }
    assert.ok(await stillEchoesAfterConnect(wire));
    wire.close();
  });

  check("multiplexes namespaces over one connection", async () => {
    const [wire] = await connectSocketIO("/");
    wire.send("40/custom,");
    assert.match(await wire.next(), /^40\/custom,\{"sid":"[^"]+"\}$/);
    assert.equal(await wire.next(), '42/custom,["auth",{}]');
    wire.send('42["echo","main"]');
    assert.equal(await wire.next(), '42["echo-back","main"]');
    wire.close();
  });

  check("closes the connection on an EVENT sent before any CONNECT", async (t) => {
    const wire = await Wire.open();
    wire.send('42["echo","too early"]');
    if (expectation(t, "connect-first") === "spec") {
      assert.ok(await wire.closesWithin(SLACK));
    } else {
      await sleep(300);
      assert.equal(wire.frames.length, 0, `answered: ${wire.frames}`);
      assert.equal(wire.isClosed, false);
    }
    wire.close();
  });
});

/** After a refused namespace: the connection still works for "/". */
async function stillEchoesAfterConnect(wire) {
  wire.send("40");
  assert.match(await wire.next(), /^40\{"sid":"[^"]+"\}$/);
  assert.equal(await wire.next(), '42["auth",{}]');
  return stillEchoes(wire);
}

describe("Socket.IO: events and acknowledgements", () => {
  check("EVENT: a plain-text packet reaches its handler with every argument", async () => {
    const [wire] = await connectSocketIO("/");
    wire.send('42["echo",1,"2",{"3":[true]}]');
    assert.equal(await wire.next(), '42["echo-back",1,"2",{"3":[true]}]');
    wire.close();
  });

  check("EVENT with an id: answered by an ACK with the same id", async () => {
    const [wire] = await connectSocketIO("/");
    wire.send('42456["echo-with-ack",1,"2",{"3":[false]}]');
    assert.equal(await wire.next(), '43456[1,"2",{"3":[false]}]');
    wire.send('42457["echo-with-ack"]');
    assert.equal(await wire.next(), "43457[]");
    wire.close();
  });

  check("BINARY_EVENT: attachments follow as binary frames, in order", async () => {
    const [wire] = await connectSocketIO("/");
    wire.send('452-["echo",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    wire.send(Uint8Array.from([1, 2, 3]));
    wire.send(Uint8Array.from([4, 5, 6]));
    assert.equal(await wire.next(), '452-["echo-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    assert.deepEqual(await wire.next(), Buffer.from([1, 2, 3]));
    assert.deepEqual(await wire.next(), Buffer.from([4, 5, 6]));
    wire.close();
  });

  check("BINARY_EVENT with an id: answered by a BINARY_ACK with the attachments", async () => {
    const [wire] = await connectSocketIO("/");
    wire.send('452-789["echo-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    wire.send(Uint8Array.from([1, 2, 3]));
    wire.send(Uint8Array.from([4, 5, 6]));
    assert.equal(await wire.next(), '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]');
    assert.deepEqual(await wire.next(), Buffer.from([1, 2, 3]));
    assert.deepEqual(await wire.next(), Buffer.from([4, 5, 6]));
    wire.close();
  });
});

describe("Socket.IO: disconnecting and malformed packets", () => {
  check("DISCONNECT from a custom namespace leaves the others connected", async () => {
    const [wire] = await connectSocketIO("/");
    wire.send("40/custom,");
    await wire.next();
    await wire.next();
    wire.send("41/custom,");
    wire.send('42/custom,["echo","gone"]'); // no longer connected there: no answer
    wire.send('42["echo","to the main namespace"]');
    assert.equal(await wire.next(), '42["echo-back","to the main namespace"]');
    wire.close();
  });

  check('DISCONNECT from "/" leaves the namespace', async (t) => {
    const [wire] = await connectSocketIO("/");
    wire.send("41");
    if (expectation(t, "namespace-disconnect") === "spec") {
      assert.ok(await wire.closesWithin(SLACK));
    } else {
      wire.send('42["echo","after leaving"]');
      await sleep(300);
      assert.equal(wire.frames.length, 0, `answered: ${wire.frames}`);
      wire.send("40"); // and may come back on the same connection
      assert.match(await wire.next(), /^40\{"sid":"[^"]+"\}$/);
    }
    wire.close();
  });

  for (const [name, packet, ackId] of [
    ["an unknown packet type", "4abc", null],
    ["a payload that is not an array", "42{}", null],
    ["an invalid ack id", '42abc["echo-with-ack",1]', null],
    ["a payload that is not JSON", '42["echo"', null],
    ["a non-array payload with an ack id", '4212{"a":1}', 12],
  ]) {
    check(`a malformed packet (${name}) closes the connection`, async (t) => {
      const [wire] = await connectSocketIO("/");
      wire.send(packet);
      if (expectation(t, "malformed-close") === "spec") {
        assert.ok(await wire.closesWithin(SLACK), `still open after ${packet}`);
      } else {
        if (ackId !== null) {
          const ack = JSON.parse((await wire.next()).slice(`43${ackId}`.length));
          assert.equal(ack[0].ok, false);
          assert.equal(ack[0].error.code, "invalid");
        }
        assert.ok(await stillEchoes(wire));
        assert.equal(wire.isClosed, false);
      }
      wire.close();
    });
  }
});

// ================================================== the official clients, end to end

describe("official clients (npm socket.io-client, engine.io-client)", () => {
  check("socket.io-client over WebSocket: auth, events, acks with binary, a second namespace", async () => {
    const socket = io(BASE, { path: PATH, transports: ["websocket"], auth: { token: "t1" }, forceNew: true, reconnection: false });
    try {
      const auth = await within(3000, new Promise((resolve) => socket.once("auth", resolve)), "auth");
      assert.deepEqual(auth, { token: "t1" });
      const back = new Promise((resolve) => socket.once("echo-back", (...args) => resolve(args)));
      socket.emit("echo", 1, "two", { three: [3] });
      assert.deepEqual(await within(3000, back, "echo-back"), [1, "two", { three: [3] }]);
      const acked = await socket.timeout(3000).emitWithAck("echo-with-ack", Buffer.from([7, 8]));
      assert.deepEqual(Buffer.from(acked), Buffer.from([7, 8]));
      const custom = socket.io.socket("/custom", { auth: { token: "t2" } });
      custom.connect();
      const customAuth = await within(3000, new Promise((resolve) => custom.once("auth", resolve)), "custom auth");
      assert.deepEqual(customAuth, { token: "t2" });
      assert.equal(socket.io.engine.transport.name, "websocket");
      custom.disconnect();
    } finally {
      socket.disconnect();
    }
  });

  check("socket.io-client starting on polling upgrades to WebSocket", async () => {
    const socket = io(BASE, { path: PATH, forceNew: true, reconnection: false });
    try {
      await within(3000, new Promise((resolve) => socket.once("auth", resolve)), "auth");
      const upgraded = socket.io.engine.transport.name === "websocket"
        ? Promise.resolve()
        : new Promise((resolve) => socket.io.engine.once("upgrade", resolve));
      await within(3000, upgraded, "upgrade");
      assert.equal(socket.io.engine.transport.name, "websocket");
      const acked = await socket.timeout(3000).emitWithAck("echo-with-ack", "after the upgrade");
      assert.equal(acked, "after the upgrade");
    } finally {
      socket.disconnect();
    }
  });

  check("engine.io-client: handshake, upgrade, messages, close", async () => {
    const engine = new EngineSocket(BASE, { path: PATH });
    try {
      await within(3000, new Promise((resolve, reject) => {
        engine.once("open", resolve);
        engine.once("error", reject);
      }), "engine open");
      assert.equal(engine.pingInterval ?? engine._pingInterval, PING_INTERVAL);
      await within(3000, engine.transport.name === "websocket"
        ? Promise.resolve()
        : new Promise((resolve) => engine.once("upgrade", resolve)), "engine upgrade");
      const received = new Promise((resolve) => {
        engine.on("message", (data) => {
          if (typeof data === "string" && data.startsWith("0")) resolve(data);
        });
      });
      engine.send("0"); // a Socket.IO CONNECT, as an Engine.IO message
      assert.match(await within(3000, received, "CONNECT answer"), /^0\{"sid":"[^"]+"\}$/);
    } finally {
      engine.close();
    }
  });
});


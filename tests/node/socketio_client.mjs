#!/usr/bin/env node
// socket.io client for the h2ws-proxy tests: long-polling first, then the upgrade.
//
// Usage:
//   node socketio_client.mjs --url http://127.0.0.1:PORT [--messages 10] [--size 10000]
//                            [--timeout-ms 15000] [--with-credentials]
//
// Connects with socket.io-client's defaults (transports polling then websocket, upgrade
// on), so the session starts as HTTP long-polling (ordinary GET and POST requests) and
// then upgrades to a WebSocket. It sends --messages "echo" events with an ack, each
// carrying a text and a Buffer of --size bytes (a binary attachment): the first half as
// soon as the namespace is connected, the second half once the upgrade happened. Every
// ack must return the same payload; the server says which transport carried it.
//
// Prints exactly one JSON line on stdout at the end:
//   {"ok", "initial_transport", "upgraded", "upgrade_transport", "final_transport",
//    "sent", "acked", "mismatches", "by_transport": {"polling": n, "websocket": n},
//    "error", "elapsed_ms"}
// Exit status: 0 ok, 1 not ok (including --timeout-ms elapsed), 2 bad arguments.

import { io } from 'socket.io-client';

function parseArgs(argv) {
  const opts = { url: null, messages: 10, size: 10000, timeoutMs: 15000, withCredentials: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case '--url': opts.url = next(); break;
      case '--messages': opts.messages = Number.parseInt(next(), 10); break;
      case '--size': opts.size = Number.parseInt(next(), 10); break;
      case '--timeout-ms': opts.timeoutMs = Number.parseInt(next(), 10); break;
      // Keep cookies across the session's requests and its upgrade (engine.io-client's
      // cookie jar in Node), as a browser does: a sticky-cookie balancer needs it.
      case '--with-credentials': opts.withCredentials = true; break;
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!opts.url) throw new Error('--url is required');
  for (const key of ['messages', 'size', 'timeoutMs']) {
    if (!Number.isInteger(opts[key]) || opts[key] < 0) throw new Error(`bad --${key}`);
  }
  return opts;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: err.message })}\n`);
  process.exit(2);
}

const started = performance.now();
const result = {
  ok: false,
  initial_transport: null,
  upgraded: false,
  upgrade_transport: null,
  final_transport: null,
  sent: 0,
  acked: 0,
  mismatches: 0,
  by_transport: { polling: 0, websocket: 0 },
  error: null,
  elapsed_ms: null,
};

function finish(socket) {
  result.elapsed_ms = Math.round((performance.now() - started) * 10) / 10;
  if (socket.io.engine) result.final_transport = socket.io.engine.transport.name;
  socket.disconnect();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(result.ok ? 0 : 1);
}

const socket = io(opts.url, {
  reconnection: false,
  timeout: opts.timeoutMs,
  withCredentials: opts.withCredentials,
});

let upgradedResolve;
const upgradedPromise = new Promise((resolve) => { upgradedResolve = resolve; });
socket.io.on('open', () => {
  const engine = socket.io.engine;
  result.initial_transport = engine.transport.name;
  engine.on('upgrade', (transport) => {
    result.upgraded = true;
    result.upgrade_transport = transport.name;
    upgradedResolve();
  });
});

function payloadFor(index) {
  const bytes = Buffer.alloc(opts.size);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + index) & 255;
  return { index, text: `message ${index} \u2713`, bytes };
}

async function echo(index) {
  const payload = payloadFor(index);
  result.sent += 1;
  const reply = await socket.timeout(opts.timeoutMs).emitWithAck('echo', payload);
  const back = reply.payload;
  const same = back.index === payload.index && back.text === payload.text
    && Buffer.isBuffer(back.bytes) && back.bytes.equals(payload.bytes);
  if (!same) result.mismatches += 1;
  result.acked += 1;
  result.by_transport[reply.transport] = (result.by_transport[reply.transport] || 0) + 1;
}

async function run() {
  const half = Math.floor(opts.messages / 2);
  for (let i = 0; i < half; i++) await echo(i);
  await upgradedPromise;
  for (let i = half; i < opts.messages; i++) await echo(i);
  result.ok = result.upgraded && result.acked === opts.messages && result.mismatches === 0;
}

const timer = setTimeout(() => {
  result.error = `timeout after ${opts.timeoutMs} ms`;
  finish(socket);
}, opts.timeoutMs);

socket.on('connect_error', (err) => {
  result.error = `connect_error: ${err.message}`;
  clearTimeout(timer);
  finish(socket);
});

socket.on('connect', () => {
  run().then(
    () => { clearTimeout(timer); finish(socket); },
    (err) => { result.error = String(err && err.message || err); clearTimeout(timer); finish(socket); },
  );
});

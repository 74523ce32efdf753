#!/usr/bin/env node
// Web backend for the real-browser tests of h2ws-proxy: over HTTP/1.1, or over HTTP/2
// (h2c, prior knowledge) with --h2c.
//
// Usage:
//   node web_backend.mjs [--port 0] [--host 127.0.0.1] [--h2c] [--ignore-stdin]
//
// It serves (the proxy in front terminates TLS and the browser's HTTP/2):
//   GET  /            an HTML page whose script opens wss://<location.host>/ws, runs the
//                     echo checks below and reports how it went (twice, see "Reports");
//   GET  /hosts?origin=https://a:port&origin=https://b:port
//                     a page that, for each origin in turn, opens an HTTP/2 connection to it
//                     (a no-cors fetch of /favicon.ico: browsers put a WebSocket on an open
//                     HTTP/2 connection only), opens wss://<that host>/ws, checks one echo
//                     and closes it, then POSTs its report (details.hosts, one per origin);
//   GET  /favicon.ico 204, so the browser's automatic request does not fail;
//   POST /report      the page's final report (JSON body), answered 204;
//   WS   /ws          echoes every message with its type; the text "__report__:<json>"
//                     is the page's report over the WebSocket itself (answered
//                     "__report_ack__", not echoed);
//   anything else     404 (a WebSocket to another path is refused with 404 too).
//
// Over HTTP/1.1 the WebSocket is a classic upgrade (ws's WebSocketServer). With --h2c,
// Node's http2 server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL and the WebSocket is an
// RFC 8441 extended CONNECT stream (`:method CONNECT`, `:protocol websocket`, answered
// `:status 200`), its frames read by ws's Receiver and written by ws's Sender; ordinary
// requests are ordinary streams. Both modes pick the first subprotocol the client offers
// (ws's default), negotiate no extension, and behave and report alike, message for
// message and byte for byte. Streams are taken with the 'stream' event: a 'request'
// listener would make Node's compatibility layer answer the CONNECT streams itself.
//
// stdout carries JSON lines only (logs go to stderr):
//   {"port": N}                                      once, when listening (first line);
//   {"event": "request", "method", "url", "httpVersion"}  per ordinary request
//       (httpVersion "2.0" with --h2c);
//   {"event": "report", "via": "ws", "ok", "ua", "details", "backend": {...}}
//       the page's report as it came over the WebSocket, plus what this backend saw on
//       that WebSocket connection ("backend": messages and bytes it echoed, the path and
//       the opening request's x-forwarded-proto). It can only exist if the WebSocket
//       worked end to end;
//   {"event": "report", "via": "http", "ok", "ua", "details"}
//       the page's final report, POSTed after it closed the WebSocket (also when the
//       WebSocket failed: then ok is false and details say what happened).
//
// The page's checks: a short text, a non-ASCII text, a 16-byte binary message and a
// 100 KiB binary message, each sent and its echo awaited and compared (type and
// content), then the report over the WebSocket, a Close(1000), then POST /report.
// Every wait in the page is bounded (PAGE_STEP_TIMEOUT_MS), so a failure is reported
// rather than hanging.
//
// Exits on SIGTERM/SIGINT and when stdin reaches EOF (spawn it with stdin=PIPE);
// --ignore-stdin keeps it running with stdin at /dev/null (by hand).

import http from 'node:http';
import http2 from 'node:http2';
import { Receiver, Sender, WebSocketServer } from 'ws';

const {
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_PATH,
  HTTP2_HEADER_PROTOCOL,
  HTTP2_HEADER_STATUS,
} = http2.constants;

function parseArgs(argv) {
  const opts = { port: 0, host: '127.0.0.1', h2c: false, ignoreStdin: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case '--port': opts.port = Number.parseInt(next(), 10); break;
      case '--host': opts.host = next(); break;
      case '--h2c': opts.h2c = true; break;
      case '--ignore-stdin': opts.ignoreStdin = true; break;
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error('bad --port');
  }
  return opts;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`web_backend: ${err.message}\n`);
  process.exit(64);
}

const log = (...parts) => process.stderr.write(`web_backend: ${parts.join(' ')}\n`);
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const MAX_REPORT_BYTES = 1024 * 1024;

// The page. Kept free of anything the browser would fetch besides itself (no external
// scripts, styles or images), so the only requests are the page, the favicon, the
// WebSocket and the report.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>h2ws-proxy browser test: running</title></head>
<body><pre id="log"></pre>
<script>
"use strict";
const PAGE_STEP_TIMEOUT_MS = 8000;
const steps = [];
const note = (text) => {
  steps.push(text);
  document.getElementById("log").textContent += text + "\\n";
};
const pattern = (n, seed) => {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 31 + seed) & 255;
  return bytes;
};
const sameBytes = (a, b) => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
};
const withTimeout = (promise, what) => Promise.race([
  promise,
  new Promise((_, reject) => setTimeout(
    () => reject(new Error("timeout: " + what)), PAGE_STEP_TIMEOUT_MS)),
]);

// Messages, and the next one, as promises; errors and closes reject the waiter.
function open(url) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const queue = [];
  let waiter = null;
  let ended = null;
  const settle = () => {
    if (!waiter) return;
    if (queue.length) { const w = waiter; waiter = null; w.resolve(queue.shift()); }
    else if (ended) { const w = waiter; waiter = null; w.reject(ended); }
  };
  ws.onmessage = (event) => { queue.push(event.data); settle(); };
  const closed = new Promise((resolve) => {
    ws.onclose = (event) => {
      ended = ended || new Error("closed: code " + event.code + " " + event.reason);
      settle();
      resolve({ code: event.code, reason: event.reason, wasClean: event.wasClean });
    };
  });
  ws.onerror = () => { ended = ended || new Error("websocket error event"); settle(); };
  const opened = new Promise((resolve, reject) => {
    ws.onopen = () => resolve();
    closed.then((c) => reject(new Error("closed before open: code " + c.code)));
  });
  const next = () => new Promise((resolve, reject) => {
    waiter = { resolve, reject };
    settle();
  });
  return { ws, opened, closed, next };
}

async function echoChecks(conn, details) {
  const messages = [
    ["text", "hello through the proxy"],
    ["text", "h\\u00e9llo \\u2713 \\ud83d\\ude80"],
    ["binary", pattern(16, 1)],
    ["binary", pattern(100 * 1024, 7)],
  ];
  for (const [kind, payload] of messages) {
    const label = kind + "/" + payload.length;
    conn.ws.send(payload);
    const reply = await withTimeout(conn.next(), "echo of " + label);
    const ok = kind === "text"
      ? typeof reply === "string" && reply === payload
      : reply instanceof ArrayBuffer && sameBytes(new Uint8Array(reply), payload);
    if (!ok) throw new Error("echo mismatch for " + label);
    details.echoed.push(label);
    note("echoed " + label);
  }
}

async function main() {
  const details = {
    url: location.href, ws_url: "wss://" + location.host + "/ws", echoed: [],
    ws_report_acked: false, close: null, error: null, steps,
  };
  let ok = false;
  try {
    const conn = open(details.ws_url);
    await withTimeout(conn.opened, "websocket open");
    note("open, protocol=" + JSON.stringify(conn.ws.protocol)
         + " extensions=" + JSON.stringify(conn.ws.extensions));
    await echoChecks(conn, details);
    const summary = { ok: true, ua: navigator.userAgent, details: { echoed: details.echoed } };
    conn.ws.send("__report__:" + JSON.stringify(summary));
    const ack = await withTimeout(conn.next(), "report ack");
    if (ack !== "__report_ack__") throw new Error("unexpected report ack " + String(ack));
    details.ws_report_acked = true;
    conn.ws.close(1000, "done");
    details.close = await withTimeout(conn.closed, "close");
    note("closed " + JSON.stringify(details.close));
    ok = details.close.code === 1000;
  } catch (error) {
    details.error = String(error && error.message || error);
    note("error: " + details.error);
  }
  const report = { ok, ua: navigator.userAgent, details };
  try {
    const answer = await withTimeout(fetch("/report", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(report),
    }), "POST /report");
    note("report posted: " + answer.status);
  } catch (error) {
    note("report not posted: " + error);
  }
  document.title = "h2ws-proxy browser test: " + (ok ? "ok" : "FAILED");
}
main();
</script></body></html>
`;

// The several-host page (SNI tests): one short echo per origin, then the report.
const HOSTS_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>h2ws-proxy hosts test: running</title></head>
<body><script>
"use strict";
const STEP_TIMEOUT_MS = 8000;
const withTimeout = (promise, what) => Promise.race([
  promise,
  new Promise((_, reject) => setTimeout(
    () => reject(new Error("timeout: " + what)), STEP_TIMEOUT_MS)),
]);
function echoOnce(url, text) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => ws.send(text);
    ws.onmessage = (event) => {
      if (event.data !== text) reject(new Error("echo mismatch: " + event.data));
      ws.close(1000, "done");
    };
    ws.onerror = () => reject(new Error("websocket error event"));
    ws.onclose = (event) => event.code === 1000
      ? resolve(event.code) : reject(new Error("closed: code " + event.code));
  });
}
async function main() {
  const origins = new URLSearchParams(location.search).getAll("origin");
  const hosts = [];
  let ok = origins.length > 0;
  for (const origin of origins) {
    const host = new URL(origin).host;
    const result = { origin, ok: false, error: null };
    try {
      await withTimeout(fetch(origin + "/favicon.ico",
        { mode: "no-cors", credentials: "include", cache: "no-store" }), "fetch " + origin);
      await withTimeout(echoOnce("wss://" + host + "/ws", "hello " + host), "echo " + host);
      result.ok = true;
    } catch (error) {
      result.error = String(error && error.message || error);
      ok = false;
    }
    hosts.push(result);
  }
  const report = { ok, ua: navigator.userAgent, details: { hosts } };
  await fetch("/report", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify(report),
  });
  document.title = "h2ws-proxy hosts test: " + (ok ? "ok" : "FAILED");
}
main();
</script></body></html>
`;

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseReport(text) {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === 'object' ? value : { ok: false, details: value };
  } catch (err) {
    return { ok: false, details: { unparsable: text.slice(0, 200), error: err.message } };
  }
}

const HTML_HEADERS = { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' };

// One ordinary request, whatever carries it. `request`: {method, url, httpVersion, body}
// (body a Readable); `respond(status, headers, body)` sends the whole answer.
async function handle(request, respond) {
  const { method, url, httpVersion } = request;
  emit({ event: 'request', method, url, httpVersion });
  const path = (url || '/').split('?', 1)[0];
  if (method === 'GET' && (path === '/' || path === '/index.html' || path === '/hosts')) {
    const body = Buffer.from(path === '/hosts' ? HOSTS_PAGE : PAGE, 'utf8');
    respond(200, { ...HTML_HEADERS, 'content-length': body.length }, body);
  } else if (method === 'GET' && path === '/favicon.ico') {
    respond(204, { 'cache-control': 'max-age=3600' });
  } else if (method === 'POST' && path === '/report') {
    const body = await readBody(request.body, MAX_REPORT_BYTES);
    const report = parseReport(body.toString('utf8'));
    emit({ ...report, event: 'report', via: 'http' });
    respond(204, {});
  } else {
    respond(404, { 'content-type': 'text/plain' }, 'not found\n');
  }
}

// The echo WebSocket's behaviour, whatever carries it: returns the handler of each message
// ((data: Buffer, isBinary) => void); `send(data, isBinary)` sends one message back.
// `headers` are the opening request's (lowercase names).
function echoSession(path, headers, send) {
  const seen = {
    path,
    x_forwarded_proto: headers['x-forwarded-proto'] || null,
    messages: 0,
    bytes: 0,
  };
  return (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString('utf8');
      if (text.startsWith('__report__:')) {
        const report = parseReport(text.slice('__report__:'.length));
        emit({ ...report, event: 'report', via: 'ws', backend: { ...seen } });
        send('__report_ack__', false);
        return;
      }
    }
    seen.messages += 1;
    seen.bytes += data.length;
    send(data, isBinary);
  };
}

const isWebSocketPath = (url) => (url || '').split('?', 1)[0] === '/ws';

// ---- HTTP/1.1: node:http, WebSocket upgrades by ws's WebSocketServer ---------------------

function startHttp1() {
  const server = http.createServer((req, res) => {
    const respond = (status, headers, body) => {
      res.writeHead(status, headers);
      res.end(body);
    };
    const request = { method: req.method, url: req.url, httpVersion: req.httpVersion, body: req };
    handle(request, respond).catch((err) => {
      log('request failed:', err.message);
      if (!res.headersSent) res.writeHead(400);
      res.end();
    });
  });
  const wss = new WebSocketServer({
    server,
    perMessageDeflate: false,
    maxPayload: 16 * 1024 * 1024,
    verifyClient: ({ req }, done) => {
      if (isWebSocketPath(req.url)) done(true);
      else done(false, 404, 'no websocket here');
    },
  });
  wss.on('connection', (ws, req) => {
    const onMessage = echoSession(req.url, req.headers, (data, isBinary) => {
      ws.send(data, { binary: isBinary });
    });
    ws.on('message', onMessage);
    ws.on('error', (err) => log('websocket error:', err.message));
  });
  wss.on('error', (err) => log('server error:', err.message));
  const closeAll = () => {
    for (const ws of wss.clients) ws.terminate();
    wss.close();
    server.closeAllConnections();
  };
  return { server, closeAll };
}

// ---- HTTP/2 (h2c): node:http2 streams, WebSockets as RFC 8441 extended CONNECT ------------

// One WebSocket over one HTTP/2 stream, as ws's WebSocket behaves over a socket: messages
// to the session, pings answered, a Close answered with the same code and reason and then
// END_STREAM. Server frames are never masked (RFC 6455 5.1).
function runH2WebSocket(stream, headers) {
  const receiver = new Receiver({ isServer: true, maxPayload: 16 * 1024 * 1024 });
  const sender = new Sender(stream);
  let closeSent = false;
  const sendClose = (code, reason) => {
    if (closeSent) return;
    closeSent = true;
    sender.close(code, reason, false, () => stream.end());
  };
  receiver.on('message', echoSession(headers[HTTP2_HEADER_PATH], headers, (data, isBinary) => {
    if (!closeSent) sender.send(data, { binary: isBinary, fin: true, mask: false });
  }));
  receiver.on('ping', (data) => { if (!closeSent) sender.pong(data, false); });
  receiver.on('conclude', (code, reason) => {
    sendClose(code === 1005 ? undefined : code, reason);  // 1005: no status, empty Close
  });
  receiver.on('error', (err) => {
    log('websocket frame error:', err.message);
    sendClose(err[Symbol.for('status-code')] || 1002, '');
  });
  stream.on('data', (chunk) => receiver.write(chunk));
  stream.on('end', () => { if (!closeSent) stream.end(); });
}

function onH2Stream(stream, headers) {
  stream.on('error', (err) => log('stream error:', err.message));
  const method = headers[HTTP2_HEADER_METHOD];
  const url = headers[HTTP2_HEADER_PATH];
  const respond = (status, fields, body) => {
    stream.respond({ [HTTP2_HEADER_STATUS]: status, ...fields });
    stream.end(body);
  };
  if (method === 'CONNECT') {
    // What ws's handshake checks over HTTP/1.1 (path, version), then its subprotocol
    // choice: the first offered.
    if (headers[HTTP2_HEADER_PROTOCOL] !== 'websocket' || !isWebSocketPath(url)) {
      respond(404, { 'content-type': 'text/plain' }, 'no websocket here');
      return;
    }
    if (headers['sec-websocket-version'] !== '13') {
      respond(400, { 'content-type': 'text/plain' }, 'missing or bad sec-websocket-version');
      return;
    }
    const response = { [HTTP2_HEADER_STATUS]: 200 };
    const offered = String(headers['sec-websocket-protocol'] || '').split(',')
      .map((p) => p.trim()).filter(Boolean);
    if (offered.length) response['sec-websocket-protocol'] = offered[0];
    stream.respond(response, { endStream: false });
    runH2WebSocket(stream, headers);
    return;
  }
  handle({ method, url, httpVersion: '2.0', body: stream }, respond).catch((err) => {
    log('request failed:', err.message);
    if (!stream.headersSent) stream.respond({ [HTTP2_HEADER_STATUS]: 400 });
    stream.end();
  });
}

function startH2c() {
  const server = http2.createServer({ settings: { enableConnectProtocol: true } });
  const sessions = new Set();
  server.on('session', (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    session.on('error', (err) => log('session error:', err.message));
  });
  server.on('stream', onH2Stream);
  const closeAll = () => {
    for (const session of sessions) session.destroy();
  };
  return { server, closeAll };
}

// ---- either ---------------------------------------------------------------------------

const { server, closeAll } = opts.h2c ? startH2c() : startHttp1();

let shuttingDown = false;
function shutdown(why) {
  if (shuttingDown) return;
  shuttingDown = true;
  log('shutting down:', why);
  closeAll();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (!opts.ignoreStdin) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

server.on('error', (err) => {
  log('listen error:', err.message);
  process.exit(1);
});

server.listen(opts.port, opts.host, () => emit({ port: server.address().port }));

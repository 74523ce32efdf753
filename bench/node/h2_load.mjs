#!/usr/bin/env node
// Load client for bench/compare.py: WebSocket over HTTP/2 (RFC 8441 extended CONNECT) with
// Node's built-in http2 (nghttp2 underneath); no packages.
//
//   node h2_load.mjs --url http://127.0.0.1:PORT --mode echo|open|idle|probe [options]
//
// Modes (every loop is bounded by --messages/--tunnels and by --seconds):
//   echo   --connections C --tunnels T --size S --depth D: T tunnels spread over C
//          connections; each keeps D messages of S bytes in flight (D=1: ping-pong) until
//          --messages echoes in total or --seconds pass. Bulk is echo with one tunnel, large
//          S and D > 1.
//   open   --connections C --concurrency K --tunnels N: K loops per connection, each one
//          opening a tunnel, waiting for :status 200, echoing one --size message, sending
//          a Close frame with END_STREAM and waiting for the stream to end; N tunnels total.
//   idle   --connections C --tunnels N: open N tunnels (one echo each), print
//          {"event":"opened"}, hold them until a line (or EOF) on stdin, then close them.
//   probe  one GET / on one connection; reports the status and whether the server
//          advertised SETTINGS_ENABLE_CONNECT_PROTOCOL.
// Output: JSON lines on stdout. {"event":"start"} and {"event":"stop"} bracket the measured
// interval (the harness samples the proxy's CPU there); the last line is
// {"event":"result","ok":...}, with the client's own CPU time (process.cpuUsage) over the
// measured interval.
//
// Frames are masked as RFC 6455 requires, with one random key per run: each message's frame
// is built and masked once and then resent, so the client spends no CPU per byte. Echoes are
// counted by bytes (the backend echoes one unmasked frame per frame; the first frame of each
// tunnel is checked).

import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import { performance } from 'node:perf_hooks';

function parseArgs(argv) {
  const o = {
    url: null, ca: null, mode: 'echo', path: '/', connections: 1, tunnels: 1, concurrency: 1,
    size: 64, depth: 1, messages: 1e6, seconds: 10, window: 1 << 20, timeoutMs: 30000,
  };
  const num = (a, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`bad value for ${a}: ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case '--url': o.url = next(); break;
      case '--ca': o.ca = fs.readFileSync(next()); break;
      case '--mode': o.mode = next(); break;
      case '--path': o.path = next(); break;
      case '--connections': o.connections = num(a, next()); break;
      case '--tunnels': o.tunnels = num(a, next()); break;
      case '--concurrency': o.concurrency = num(a, next()); break;
      case '--size': o.size = num(a, next()); break;
      case '--depth': o.depth = num(a, next()); break;
      case '--messages': o.messages = num(a, next()); break;
      case '--seconds': o.seconds = num(a, next()); break;
      case '--timeout-ms': o.timeoutMs = num(a, next()); break;
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!o.url) throw new Error('--url is required');
  return o;
}

const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
let done = false;
function finish(obj, code) {
  if (done) return;
  done = true;
  process.stdout.write(`${JSON.stringify({ event: 'result', ...obj })}\n`, () => process.exit(code));
  setTimeout(() => process.exit(code), 2000).unref();
}
const fail = (err) => finish({ ok: false, error: String(err && err.stack ? err.message : err) }, 2);
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

const o = parseArgs(process.argv.slice(2));
const url = new URL(o.url);
const MASK = crypto.randomBytes(4);

function clientFrame(opcode, payload) {
  const len = payload.length;
  const hlen = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const f = Buffer.alloc(hlen + 4 + len);
  f[0] = 0x80 | opcode;
  if (len < 126) f[1] = 0x80 | len;
  else if (len < 65536) { f[1] = 0x80 | 126; f.writeUInt16BE(len, 2); }
  else { f[1] = 0x80 | 127; f.writeBigUInt64BE(BigInt(len), 2); }
  MASK.copy(f, hlen);
  for (let i = 0; i < len; i++) f[hlen + 4 + i] = payload[i] ^ MASK[i & 3];
  return f;
}
const echoLength = (len) => (len < 126 ? 2 : len < 65536 ? 4 : 10) + len;

const DATA_FRAME = clientFrame(0x2, crypto.randomBytes(o.size));
const ECHO_LEN = echoLength(o.size);
const CLOSE_FRAME = clientFrame(0x8, Buffer.from([0x03, 0xe8]));

async function connect() {
  const session = http2.connect(o.url, {
    ca: o.ca || undefined,
    settings: { initialWindowSize: o.window, enablePush: false },
    maxSessionMemory: 1024,
  });
  session.on('error', () => {});
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no SETTINGS from the server')), o.timeoutMs);
    session.once('remoteSettings', () => { clearTimeout(timer); resolve(); });
    session.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
  session.setLocalWindowSize(64 << 20);
  return session;
}

// Opens one tunnel; resolves with the stream once the server answered 200.
function openTunnel(session) {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': url.protocol === 'https:' ? 'https' : 'http',
      ':path': o.path,
      ':authority': url.host,
      'sec-websocket-version': '13',
    }, { endStream: false });
    const onClose = () => reject(new Error(`stream closed before a response (rst ${stream.rstCode})`));
    stream.once('error', reject);
    stream.once('close', onClose);
    stream.once('response', (h) => {
      stream.off('close', onClose);
      if (h[':status'] === 200) resolve(stream);
      else reject(new Error(`status ${h[':status']}`));
    });
  });
}

// Counts echoed bytes on a tunnel; onEcho(n) gets the number of whole messages echoed.
function countEchoes(stream, onEcho) {
  let bytes = 0;
  let acked = 0;
  let checked = false;
  stream.on('data', (chunk) => {
    if (!checked && chunk.length >= 2) {
      checked = true;
      if (chunk[0] !== DATA_FRAME[0] || (chunk[1] & 0x80)) fail(new Error('unexpected echo frame'));
    }
    bytes += chunk.length;
    const now = Math.floor(bytes / ECHO_LEN);
    if (now > acked) {
      const n = now - acked;
      acked = now;
      onEcho(n);
    }
  });
}

function closeTunnel(stream) {
  return new Promise((resolve) => {
    if (stream.closed || stream.destroyed) { resolve(); return; }
    stream.once('close', resolve);
    stream.on('error', () => {});
    stream.end(CLOSE_FRAME);
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timeout`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

function cpuSeconds(since) {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1e6;
}

async function connectAll() {
  const sessions = [];
  for (let i = 0; i < o.connections; i++) sessions.push(await connect());
  return sessions;
}

async function runEcho() {
  const sessions = await connectAll();
  const streams = await withTimeout(Promise.all(
    Array.from({ length: o.tunnels }, (_, i) => openTunnel(sessions[i % sessions.length])),
  ), o.timeoutMs, 'opening tunnels');
  let sent = 0;
  let echoed = 0;
  let stopping = false;
  let lastEcho = 0;
  let resolveDone;
  const allDone = new Promise((r) => { resolveDone = r; });
  const send = (stream, n) => {
    for (let i = 0; i < n && !stopping && sent < o.messages; i++) {
      sent += 1;
      stream.write(DATA_FRAME);
    }
  };
  for (const stream of streams) {
    countEchoes(stream, (n) => {
      echoed += n;
      lastEcho = performance.now();
      send(stream, n);
      if (echoed >= sent && (stopping || sent >= o.messages)) resolveDone();
    });
  }
  out({ event: 'start' });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const timer = setTimeout(() => {
    stopping = true;
    if (echoed >= sent) resolveDone();
  }, o.seconds * 1000);
  for (const stream of streams) send(stream, o.depth);
  await withTimeout(allDone, o.seconds * 1000 + o.timeoutMs, 'echoes');
  clearTimeout(timer);
  const elapsed = (lastEcho - t0) / 1000;
  const cpu = cpuSeconds(cpu0);
  out({ event: 'stop' });
  await withTimeout(Promise.all(streams.map(closeTunnel)), o.timeoutMs, 'closing').catch(() => {});
  for (const s of sessions) s.close();
  return {
    ok: true, messages: echoed, seconds: elapsed, messages_per_s: echoed / elapsed,
    mb_per_s: (echoed * o.size) / elapsed / 1e6, client_cpu_s: cpu,
    connect_protocol: sessions[0].remoteSettings.enableConnectProtocol === true,
  };
}

async function runOpen() {
  const sessions = await connectAll();
  let started = 0;
  let completed = 0;
  const deadline = performance.now() + o.seconds * 1000;
  const oneTunnel = async (session) => {
    const stream = await openTunnel(session);
    await new Promise((resolve) => {
      countEchoes(stream, resolve);
      stream.write(DATA_FRAME);
    });
    await closeTunnel(stream);
  };
  const loop = async (session) => {
    while (started < o.tunnels && performance.now() < deadline) {
      started += 1;
      await withTimeout(oneTunnel(session), o.timeoutMs, 'tunnel');
      completed += 1;
    }
  };
  out({ event: 'start' });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const loops = [];
  for (const session of sessions) {
    for (let k = 0; k < o.concurrency; k++) loops.push(loop(session));
  }
  await Promise.all(loops);
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(cpu0);
  out({ event: 'stop' });
  for (const s of sessions) s.close();
  return {
    ok: true, tunnels: completed, seconds: elapsed, tunnels_per_s: completed / elapsed,
    client_cpu_s: cpu, connect_protocol: sessions[0].remoteSettings.enableConnectProtocol === true,
  };
}

async function runIdle() {
  const sessions = await connectAll();
  const streams = [];
  let next = 0;
  // At most 256 tunnels opening at once, so the backend's accept queue never overflows.
  const opener = async () => {
    while (next < o.tunnels) {
      const session = sessions[next % sessions.length];
      next += 1;
      const stream = await openTunnel(session);
      await new Promise((resolve) => {
        countEchoes(stream, resolve);
        stream.write(DATA_FRAME);
      });
      streams.push(stream);
    }
  };
  const t0 = performance.now();
  await withTimeout(Promise.all(Array.from({ length: Math.min(256, o.tunnels) }, opener)),
    o.seconds * 1000, 'opening idle tunnels');
  const openSeconds = (performance.now() - t0) / 1000;
  out({ event: 'opened', tunnels: streams.length, seconds: openSeconds });
  await new Promise((resolve) => {
    process.stdin.once('data', resolve);
    process.stdin.once('end', resolve);
    process.stdin.resume();
  });
  process.stdin.pause();
  await withTimeout(Promise.all(streams.map(closeTunnel)), o.timeoutMs, 'closing').catch(() => {});
  for (const s of sessions) s.close();
  return { ok: true, tunnels: streams.length, open_seconds: openSeconds };
}

async function runProbe() {
  const session = await connect();
  const status = await withTimeout(new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'GET', ':path': o.path, ':authority': url.host });
    req.once('response', (h) => resolve(h[':status']));
    req.once('error', reject);
    req.resume();
    req.end();
  }), o.timeoutMs, 'GET');
  const connectProtocol = session.remoteSettings.enableConnectProtocol === true;
  session.close();
  return { ok: true, status, connect_protocol: connectProtocol };
}

const modes = { echo: runEcho, open: runOpen, idle: runIdle, probe: runProbe };
if (!modes[o.mode]) fail(new Error(`unknown mode ${o.mode}`));
else modes[o.mode]().then((r) => finish(r, 0), fail);

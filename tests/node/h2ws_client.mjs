#!/usr/bin/env node
// WebSocket-over-HTTP/2 (RFC 8441 extended CONNECT) test client for h2ws-proxy.
//
// Built only on Node's built-in `http2` module; the RFC 6455 framing is done
// here by hand (client frames masked, server frames expected unmasked).
// See README.md next to this file for the flags and the output line.
//
// Notes on Node's (v20) http2 extended CONNECT support, found by experiment:
//  * `session.remoteSettings.enableConnectProtocol` reflects
//    SETTINGS_ENABLE_CONNECT_PROTOCOL from the peer; it is only meaningful once
//    the peer's first SETTINGS frame arrived ('remoteSettings' event).
//  * Node does NOT refuse to send `:protocol` when the peer did not advertise
//    SETTINGS_ENABLE_CONNECT_PROTOCOL: neither the JS layer nor nghttp2 checks
//    it on the client side, the HEADERS frame goes out and it is up to the
//    server (an nghttp2 server answers RST_STREAM PROTOCOL_ERROR = 1). So with
//    --force-protocol the "client-refused" error only appears if request()
//    throws synchronously, which Node 20 does not do for this case.
//  * With `:method CONNECT` plus `:protocol`, Node fills in `:scheme` and
//    `:path` defaults like a normal request (plain CONNECT forbids them).
//    `endStream` must be passed as false explicitly.
//  * Node rejects connection-specific request headers (connection, upgrade,
//    keep-alive, proxy-connection, transfer-encoding, te other than
//    "trailers") in request() itself, so this client cannot put them on the
//    wire; such a --header makes the tunnel fail with the Node error code.
//  * How a stream ended: `stream.rstCode` (valid after 'close') is the
//    RST_STREAM code, but it is 0 (NGHTTP2_NO_ERROR) BOTH for a clean close
//    (END_STREAM in both directions, no RST_STREAM at all) AND for a received
//    RST_STREAM(NO_ERROR); before 'close' the getter already reads 0. Worse,
//    an RST_STREAM that arrives after the stream is already closed in
//    nghttp2's eyes (server sent END_STREAM, we sent END_STREAM, then the
//    server adds RST_STREAM(CANCEL)) is dropped silently: no event, rstCode
//    stays 0. A Node http2 *server* doing stream.close(code) does exactly that
//    (END_STREAM then RST_STREAM). So the Node API alone cannot prove "no
//    RST_STREAM". This client therefore taps the raw HTTP/2 byte stream in
//    both directions (the socket is wrapped in a pass-through Duplex that
//    parses frame headers) and reports per stream the RST_STREAM codes
//    received/sent and whether the server set END_STREAM ("wire" facts).
//    --no-tap turns the tap off (native socket path, a bit faster); then
//    "ended_by_server"/"rst" fall back to a heuristic: Node calls
//    stream.push(null) synchronously from the END_STREAM handler while
//    `stream.closed` is still false, whereas for a stream closed by
//    RST_STREAM it first marks it closed (closeStream) and only then pushes
//    null; so EOF seen while not yet closed = END_STREAM from the server.
//  * A received RST_STREAM with a code other than NO_ERROR/CANCEL also emits
//    'error' (ERR_HTTP2_STREAM_ERROR) on the stream; CANCEL (8) does not, it
//    only emits 'aborted' if our writable side was still open.

import http2 from 'node:http2';
import fs from 'node:fs';
import net from 'node:net';
import tlsMod from 'node:tls';
import crypto from 'node:crypto';
import { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';

const { NGHTTP2_CANCEL } = http2.constants;

const OP_CONT = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;
const MAX_MESSAGE = 512 * 1024 * 1024;

// --------------------------------------------------------------------------
// output helpers

let finished = false;
function emit(obj, code) {
  if (finished) return;
  finished = true;
  const line = `${JSON.stringify(obj)}\n`;
  process.stdout.write(line, () => process.exit(code));
  // Belt and braces: if the write callback never comes, still exit.
  setTimeout(() => process.exit(code), 2000).unref();
}

function fail(err, code = 2, extra = {}) {
  const msg = err instanceof Error ? `${err.code ? `${err.code}: ` : ''}${err.message}` : String(err);
  emit({ ok: false, error: msg, ...extra }, code);
}

process.on('uncaughtException', (err) => fail(err, 2));
process.on('unhandledRejection', (err) => fail(err, 2));

// --------------------------------------------------------------------------
// arguments

function parseArgs(argv) {
  const o = {
    url: null,
    ca: null,
    insecure: false,
    servername: null,
    path: '/',
    authority: null,
    tunnels: 1,
    messages: 1,
    size: 64,
    pipeline: false,
    text: null,
    noClose: false,
    halfClose: false,
    hold: false,
    subprotocols: null,
    origin: null,
    headers: [],
    expectStatus: null,
    forceProtocol: false,
    timeoutMs: 20000,
    window: null,
    tap: true,
  };
  const int = (name, v, min = 0) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`bad value for ${name}: ${v}`);
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
      case '--ca': o.ca = next(); break;
      case '--insecure': o.insecure = true; break;
      case '--servername': o.servername = next(); break;
      case '--path': o.path = next(); break;
      case '--authority': o.authority = next(); break;
      case '--tunnels': o.tunnels = int(a, next(), 1); break;
      case '--messages': o.messages = int(a, next(), 0); break;
      case '--size': o.size = int(a, next(), 0); break;
      case '--pipeline': o.pipeline = true; break;
      case '--text': o.text = next(); break;
      case '--no-close': o.noClose = true; break;
      case '--half-close': o.halfClose = true; break;
      case '--hold': o.hold = true; break;
      case '--subprotocol':
        o.subprotocols = next().split(',').map((s) => s.trim()).filter(Boolean);
        break;
      case '--origin': o.origin = next(); break;
      case '--header': {
        const v = next();
        const idx = v.indexOf(':', 1); // allow nothing before the first char
        if (idx <= 0) throw new Error(`bad --header (want name:value): ${v}`);
        o.headers.push([v.slice(0, idx).trim().toLowerCase(), v.slice(idx + 1).trim()]);
        break;
      }
      case '--expect-status': o.expectStatus = int(a, next(), 100); break;
      case '--force-protocol': o.forceProtocol = true; break;
      case '--timeout-ms': o.timeoutMs = int(a, next(), 1); break;
      case '--window': o.window = int(a, next(), 65535); break;
      case '--no-tap': o.tap = false; break;
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!o.url) throw new Error('--url is required');
  if (o.size > MAX_MESSAGE) throw new Error('--size too large');
  return o;
}

// --------------------------------------------------------------------------
// RFC 6455 framing

function maskInPlace(buf, key) {
  for (let i = 0; i < buf.length; i++) buf[i] ^= key[i & 3];
}

// Build one masked client frame.
function encodeFrame(opcode, payload, fin = true) {
  const len = payload.length;
  const extra = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const hdr = 2 + extra + 4;
  const frame = Buffer.allocUnsafe(hdr + len);
  frame[0] = (fin ? 0x80 : 0) | opcode;
  if (extra === 0) {
    frame[1] = 0x80 | len;
  } else if (extra === 2) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(len, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeBigUInt64BE(BigInt(len), 2);
  }
  const key = crypto.randomBytes(4);
  key.copy(frame, 2 + extra);
  payload.copy(frame, hdr);
  maskInPlace(frame.subarray(hdr), key);
  return frame;
}

function closePayload(code, reason = '') {
  if (code === null || code === undefined) return Buffer.alloc(0);
  const r = Buffer.from(reason, 'utf8');
  const b = Buffer.allocUnsafe(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

class ProtocolError extends Error {
  constructor(msg, closeCode = 1002) {
    super(msg);
    this.closeCode = closeCode;
  }
}

// Incremental frame parser; avoids re-concatenating large payloads.
class FrameParser {
  constructor() {
    this.chunks = [];
    this.buffered = 0;
  }

  push(chunk) {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  peek(n) {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const c of this.chunks) {
      const take = Math.min(c.length, n - off);
      c.copy(out, off, 0, take);
      off += take;
      if (off === n) break;
    }
    return out;
  }

  consume(n) {
    this.buffered -= n;
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0];
      const take = Math.min(c.length, n - off);
      c.copy(out, off, 0, take);
      off += take;
      if (take === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(take);
    }
    return out;
  }

  // Returns the next complete frame or null.
  next() {
    if (this.buffered < 2) return null;
    const h2 = this.peek(2);
    const fin = (h2[0] & 0x80) !== 0;
    const rsv = (h2[0] & 0x70) >> 4;
    const opcode = h2[0] & 0x0f;
    const masked = (h2[1] & 0x80) !== 0;
    const len7 = h2[1] & 0x7f;
    const extra = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
    const hdr = 2 + extra + (masked ? 4 : 0);
    if (this.buffered < hdr) return null;
    const h = this.peek(hdr);
    let len = len7;
    if (extra === 2) len = h.readUInt16BE(2);
    else if (extra === 8) {
      const big = h.readBigUInt64BE(2);
      if (big > BigInt(MAX_MESSAGE)) throw new ProtocolError(`frame too large: ${big}`, 1009);
      len = Number(big);
    }
    if (len > MAX_MESSAGE) throw new ProtocolError(`frame too large: ${len}`, 1009);
    if (this.buffered < hdr + len) return null;
    const header = Buffer.from(this.consume(hdr));
    let payload = this.consume(len);
    if (masked) {
      payload = Buffer.from(payload);
      maskInPlace(payload, header.subarray(2 + extra, 2 + extra + 4));
    }
    return { fin, rsv, opcode, masked, payload };
  }
}

// Async queue of protocol events for one tunnel. Once 'end' is queued, every
// later get() returns 'end' again.
class Inbox {
  constructor() {
    this.items = [];
    this.waiters = [];
    this.ended = null;
  }

  put(ev) {
    if (this.ended) return;
    if (ev.type === 'end') this.ended = ev;
    const w = this.waiters.shift();
    if (w) w(ev);
    else this.items.push(ev);
  }

  get() {
    if (this.items.length) return Promise.resolve(this.items.shift());
    if (this.ended) return Promise.resolve(this.ended);
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

// --------------------------------------------------------------------------
// HTTP/2 frame tap (passive: only reads frame headers, RST_STREAM and GOAWAY)

const FRAME_TYPES = ['DATA', 'HEADERS', 'PRIORITY', 'RST_STREAM', 'SETTINGS',
  'PUSH_PROMISE', 'PING', 'GOAWAY', 'WINDOW_UPDATE', 'CONTINUATION'];

class FrameTap {
  constructor(skip) {
    this.skip = skip; // the 24-byte client preface on the outbound side
    this.hdr = Buffer.alloc(9);
    this.hdrFill = 0;
    this.cur = null;
    this.counts = {};
    this.streams = new Map(); // id -> {end_stream, rst: [codes], data_bytes}
    this.goaway = [];
  }

  stream(id) {
    let s = this.streams.get(id);
    if (!s) {
      s = { end_stream: false, rst: [], data_bytes: 0 };
      this.streams.set(id, s);
    }
    return s;
  }

  frameDone(f) {
    const name = FRAME_TYPES[f.type] || `type_${f.type}`;
    this.counts[name] = (this.counts[name] || 0) + 1;
    if (f.type === 0 || f.type === 1) { // DATA, HEADERS
      const s = this.stream(f.sid);
      if (f.type === 0) s.data_bytes += f.length;
      if (f.flags & 0x1) s.end_stream = true;
    } else if (f.type === 3 && f.gotLen >= 4) {
      this.stream(f.sid).rst.push(Buffer.concat(f.got).readUInt32BE(0));
    } else if (f.type === 7) {
      const b = Buffer.concat(f.got);
      if (b.length >= 8) {
        this.goaway.push({ last_stream_id: b.readUInt32BE(0) & 0x7fffffff, error_code: b.readUInt32BE(4) });
      }
    }
  }

  feed(chunk) {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.skip > 0) {
        const k = Math.min(this.skip, n - i);
        this.skip -= k;
        i += k;
        continue;
      }
      if (this.cur === null) {
        const k = Math.min(9 - this.hdrFill, n - i);
        chunk.copy(this.hdr, this.hdrFill, i, i + k);
        this.hdrFill += k;
        i += k;
        if (this.hdrFill < 9) break;
        this.hdrFill = 0;
        const h = this.hdr;
        const length = h.readUIntBE(0, 3);
        const type = h[3];
        this.cur = {
          length,
          type,
          flags: h[4],
          sid: h.readUInt32BE(5) & 0x7fffffff,
          left: length,
          want: type === 3 ? 4 : type === 7 ? 8 : 0,
          got: [],
          gotLen: 0,
        };
      }
      const c = this.cur;
      const k = Math.min(c.left, n - i);
      if (c.gotLen < c.want && k > 0) {
        const take = Math.min(k, c.want - c.gotLen);
        c.got.push(Buffer.from(chunk.subarray(i, i + take)));
        c.gotLen += take;
      }
      c.left -= k;
      i += k;
      if (c.left === 0) {
        this.cur = null;
        this.frameDone(c);
      }
    }
  }
}

// Pass-through Duplex around the real socket that feeds both directions to
// FrameTaps. Node's http2 wraps it in a JSStreamSocket internally.
class TapSocket extends Duplex {
  constructor(sock, inTap, outTap) {
    super({ allowHalfOpen: true });
    this.sock = sock;
    this.inTap = inTap;
    this.outTap = outTap;
    sock.on('data', (d) => {
      inTap.feed(d);
      if (!this.push(d)) sock.pause();
    });
    sock.on('end', () => this.push(null));
    sock.on('error', (err) => this.destroy(err));
    sock.on('close', () => { if (!this.destroyed) this.destroy(); });
  }

  _read() { this.sock.resume(); }

  _write(chunk, enc, cb) {
    if (this.sock.destroyed) { cb(); return; } // never reaches the wire
    this.outTap.feed(chunk);
    this.sock.write(chunk, cb);
  }

  _writev(chunks, cb) {
    if (this.sock.destroyed) { cb(); return; }
    for (const { chunk } of chunks) {
      this.outTap.feed(chunk);
      this.sock.write(chunk);
    }
    this.sock.write(Buffer.alloc(0), cb);
  }

  _final(cb) {
    this.sock.end();
    cb();
  }

  _destroy(err, cb) {
    this.sock.destroy();
    cb(err);
  }

  setNoDelay() { this.sock.setNoDelay?.(true); return this; }
}

// --------------------------------------------------------------------------
// main

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  fail(err, 2);
}

const tunnels = [];
const result = {
  ok: false,
  url: opts?.url,
  alpn: null,
  remote_settings: null,
  goaway: null,
  tunnels,
  elapsed_ms: null,
  messages_per_s: null,
  mb_per_s: null,
};
let session = null;
let tapIn = null;
let tapOut = null;
const tStart = performance.now();
let tRun = null;

// Overwrite the per-stream END_STREAM/RST facts with what the tap saw.
function fillWire() {
  if (!tapIn) return;
  for (const t of tunnels) {
    if (t.stream_id === null || t.stream_id === undefined) continue;
    const i = tapIn.streams.get(t.stream_id);
    const o = tapOut.streams.get(t.stream_id);
    t.rst_received = i ? [...i.rst] : [];
    t.rst_sent = o ? [...o.rst] : [];
    t.ended_by_server = i ? i.end_stream : false;
    t.end_stream_sent = o ? o.end_stream : false;
    t.rst = t.rst_received.length > 0;
  }
  result.frames = { received: { ...tapIn.counts }, sent: { ...tapOut.counts } };
  result.goaway_frames = { received: [...tapIn.goaway], sent: [...tapOut.goaway] };
}

function summarize(endTime) {
  fillWire();
  const end = endTime ?? performance.now();
  const elapsed = tRun === null ? end - tStart : end - tRun;
  result.elapsed_ms = Math.round(elapsed * 1000) / 1000;
  let msgs = 0;
  let bytes = 0;
  for (const t of tunnels) {
    msgs += t.echoed;
    bytes += t.bytes_echoed;
  }
  const secs = elapsed / 1000;
  result.messages_per_s = secs > 0 ? Math.round((msgs / secs) * 100) / 100 : null;
  result.mb_per_s = secs > 0 ? Math.round((bytes / 1e6 / secs) * 1000) / 1000 : null;
}

if (opts) {
  setTimeout(() => {
    summarize();
    result.ok = false;
    result.error = `timeout after ${opts.timeoutMs} ms`;
    for (const t of tunnels) if (!t.done && !t.error) t.error = 'timeout';
    emit(result, 1); // serializes synchronously, before the teardown below
    if (session) session.destroy();
  }, opts.timeoutMs).unref();
  main().catch((err) => fail(err, 2, { tunnels }));
}

function plainHeaders(h) {
  const out = {};
  if (!h) return out;
  for (const k of Object.keys(h)) out[k] = h[k];
  return out;
}

function settingsSubset(s) {
  if (!s) return null;
  return {
    enableConnectProtocol: s.enableConnectProtocol,
    maxConcurrentStreams: s.maxConcurrentStreams,
    initialWindowSize: s.initialWindowSize,
    maxFrameSize: s.maxFrameSize,
    headerTableSize: s.headerTableSize,
    maxHeaderListSize: s.maxHeaderListSize,
    enablePush: s.enablePush,
  };
}

async function main() {
  const url = new URL(opts.url);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`unsupported URL scheme: ${url.protocol}`);
  }
  const tls = url.protocol === 'https:';
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const portNum = Number(url.port || (tls ? 443 : 80));

  // Open the transport ourselves so connect/TLS errors are clean and the
  // negotiated ALPN can be checked before HTTP/2 starts.
  let sock;
  if (tls) {
    const tlsOpts = { host, port: portNum, ALPNProtocols: ['h2'] };
    if (opts.ca) tlsOpts.ca = fs.readFileSync(opts.ca);
    if (opts.insecure) tlsOpts.rejectUnauthorized = false;
    const sni = opts.servername ?? (net.isIP(host) ? undefined : host);
    if (sni) tlsOpts.servername = sni;
    sock = tlsMod.connect(tlsOpts);
    await new Promise((resolve, reject) => {
      sock.once('secureConnect', resolve);
      sock.once('error', reject);
    });
    result.alpn = sock.alpnProtocol || null;
    if (sock.alpnProtocol !== 'h2') {
      sock.destroy();
      throw new Error(`ALPN did not select h2 (got ${JSON.stringify(sock.alpnProtocol)})`);
    }
  } else {
    sock = net.connect({ host, port: portNum });
    await new Promise((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
  }
  sock.setNoDelay(true);
  result.connect_ms = Math.round((performance.now() - tStart) * 1000) / 1000;

  let transport = sock;
  if (opts.tap) {
    tapIn = new FrameTap(0);
    tapOut = new FrameTap(24);
    transport = new TapSocket(sock, tapIn, tapOut);
  }
  const connectOpts = {
    settings: { enablePush: false },
    maxSessionMemory: 4096, // MB; the default 10 is too tight for 100 x 1 MiB
    createConnection: () => transport,
  };
  if (opts.window) connectOpts.settings.initialWindowSize = opts.window;

  session = http2.connect(url.origin, connectOpts);
  let sessionError = null;
  session.on('error', (err) => {
    sessionError = err;
  });
  session.on('goaway', (errorCode, lastStreamID, opaqueData) => {
    result.goaway = {
      error_code: errorCode,
      last_stream_id: lastStreamID,
      debug: opaqueData && opaqueData.length ? opaqueData.toString('utf8') : '',
    };
  });
  // We don't care about frame errors beyond recording them in the tunnel.
  session.on('frameError', () => {});

  // Wait for the server's first SETTINGS frame.
  await new Promise((resolve, reject) => {
    const onErr = (err) => reject(err);
    session.once('error', onErr);
    session.once('close', () => reject(sessionError || new Error('session closed before SETTINGS')));
    session.once('remoteSettings', () => {
      session.removeListener('error', onErr);
      resolve();
    });
  });
  result.remote_settings = settingsSubset(session.remoteSettings);
  if (opts.window) {
    try {
      session.setLocalWindowSize(Math.min(2 ** 31 - 1, Math.max(65535, opts.window * opts.tunnels)));
    } catch { /* older Node: ignore */ }
  }

  if (!session.remoteSettings.enableConnectProtocol && !opts.forceProtocol) {
    result.error = 'no-connect-protocol';
    session.destroy();
    emit(result, 3);
    return;
  }

  const port = url.port || (tls ? '443' : '80');
  const authority = opts.authority || `${url.hostname}:${port}`;
  const baseHeaders = {
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':scheme': tls ? 'https' : 'http',
    ':path': opts.path,
    ':authority': authority,
    'sec-websocket-version': '13',
  };
  if (opts.subprotocols && opts.subprotocols.length) {
    baseHeaders['sec-websocket-protocol'] = opts.subprotocols.join(', ');
  }
  if (opts.origin) baseHeaders.origin = opts.origin;
  for (const [k, v] of opts.headers) {
    if (k in baseHeaders && !k.startsWith(':') && k !== 'sec-websocket-version') {
      const prev = baseHeaders[k];
      baseHeaders[k] = Array.isArray(prev) ? [...prev, v] : [prev, v];
    } else {
      baseHeaders[k] = v;
    }
  }

  tRun = performance.now();
  for (let i = 0; i < opts.tunnels; i++) tunnels.push(newTunnelRecord(i));
  await Promise.all(tunnels.map((t) => runTunnel(t, baseHeaders)));
  const tDone = performance.now();

  // PING round trip as a barrier: every frame the server sent before it saw
  // our last END_STREAM/PING (e.g. a trailing RST_STREAM) is in the tap then.
  if (!opts.noClose && !session.destroyed && !session.closed) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 1000);
      try {
        session.ping(() => { clearTimeout(timer); resolve(); });
      } catch {
        clearTimeout(timer);
        resolve();
      }
    });
  }
  summarize(tDone);

  if (opts.forceProtocol && tunnels.some((t) => t.error && t.error.startsWith('client-refused'))) {
    result.error = 'client-refused';
  }

  // Tear down the connection.
  if (opts.noClose) {
    // Drop the connection abruptly (TCP close, no GOAWAY/RST_STREAM frames).
    sock.destroy();
    session.destroy();
  } else if (!session.destroyed) {
    await new Promise((resolve) => {
      const timer = setTimeout(() => {
        session.destroy();
        resolve();
      }, 2000);
      session.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  fillWire(); // again: frames that arrived during the teardown
  const allOk = tunnels.every((t) => t.ok);
  result.ok = allOk && !result.error;
  if (sessionError && !result.session_error) result.session_error = `${sessionError.code || ''} ${sessionError.message}`.trim();
  emit(result, result.ok ? 0 : 1);
}

function newTunnelRecord(index) {
  return {
    index,
    ok: false,
    stream_id: null,
    status: null,
    headers: {},
    body: '',
    echoed: 0,
    mismatches: 0,
    bytes_sent: 0,
    bytes_echoed: 0,
    text_reply: null,
    close_code: null,
    close_reason: null,
    close_initiator: null,
    rst_code: null,
    rst: null,
    rst_received: null,
    rst_sent: null,
    ended_by_server: false,
    end_stream_sent: null,
    local_reset: false,
    aborted: false,
    stream_error: null,
    bytes_after_end: null,
    messages_after_end: null,
    pings: 0,
    error: null,
    elapsed_ms: null,
    done: false,
  };
}

async function runTunnel(t, headers) {
  const t0 = performance.now();
  try {
    await tunnelBody(t, headers);
  } catch (err) {
    if (!t.error) t.error = err instanceof Error ? `${err.code ? `${err.code}: ` : ''}${err.message}` : String(err);
  }
  t.elapsed_ms = Math.round((performance.now() - t0) * 1000) / 1000;
  const expect = opts.expectStatus ?? 200;
  let messagingOk = true;
  if (expect === 200) {
    if (opts.text !== null) messagingOk = t.text_reply !== null || t.close_initiator === 'server';
    else messagingOk = t.echoed === opts.messages && t.mismatches === 0;
  }
  t.ok = t.status === expect && messagingOk && !t.error;
  t.done = true;
}

async function tunnelBody(t, headers) {
  let stream;
  try {
    stream = session.request(headers, { endStream: false });
  } catch (err) {
    t.error = `client-refused: ${err.code || ''} ${err.message}`.trim();
    return;
  }
  if (stream.id !== undefined) t.stream_id = stream.id;

  const parser = new FrameParser();
  const inbox = new Inbox();
  const bodyChunks = [];
  let status = null;
  let weEnded = false;
  let eofSeen = false;
  let fragments = null; // {opcode, parts, size}
  let parseFailed = false;

  // Detect END_STREAM from the server vs close by RST_STREAM (see top).
  const origPush = stream.push;
  stream.push = function push(chunk, encoding) {
    if (chunk === null && !eofSeen) {
      eofSeen = true;
      t.ended_by_server = !this.closed;
    }
    return origPush.call(this, chunk, encoding);
  };

  const closed = new Promise((resolve) => {
    stream.on('close', () => {
      if (t.stream_id === null && stream.id !== undefined) t.stream_id = stream.id;
      t.rst_code = stream.rstCode ?? null;
      t.rst = !t.ended_by_server;
      resolve();
    });
  });
  stream.on('ready', () => { t.stream_id = stream.id; });
  stream.on('aborted', () => { t.aborted = true; });
  stream.on('error', (err) => {
    t.stream_error = `${err.code || ''} ${err.message}`.trim();
  });

  const response = new Promise((resolve) => {
    stream.on('response', (h) => resolve(h));
    closed.then(() => resolve(null));
  });

  const sendRaw = (buf) => {
    if (stream.closed || stream.destroyed || stream.writableEnded) return false;
    stream.write(buf);
    return true;
  };

  const onFrame = (f) => {
    if (f.masked) throw new ProtocolError('server frame is masked');
    if (f.rsv) throw new ProtocolError(`unexpected RSV bits ${f.rsv}`);
    if (f.opcode >= 0x8) {
      if (!f.fin || f.payload.length > 125) throw new ProtocolError('bad control frame');
      if (f.opcode === OP_PING) {
        t.pings += 1;
        sendRaw(encodeFrame(OP_PONG, f.payload));
      } else if (f.opcode === OP_PONG) {
        // unsolicited pong: ignore
      } else if (f.opcode === OP_CLOSE) {
        let code = 1005;
        let reason = '';
        if (f.payload.length === 1) throw new ProtocolError('1-byte close payload');
        if (f.payload.length >= 2) {
          code = f.payload.readUInt16BE(0);
          reason = f.payload.subarray(2).toString('utf8');
        }
        inbox.put({ type: 'close', code, reason });
      } else {
        throw new ProtocolError(`unknown control opcode ${f.opcode}`);
      }
      return;
    }
    if (f.opcode === OP_CONT) {
      if (!fragments) throw new ProtocolError('continuation without a message');
      fragments.parts.push(f.payload);
      fragments.size += f.payload.length;
    } else if (f.opcode === OP_TEXT || f.opcode === OP_BINARY) {
      if (fragments) throw new ProtocolError('new message inside a fragmented one');
      fragments = { opcode: f.opcode, parts: [f.payload], size: f.payload.length };
    } else {
      throw new ProtocolError(`unknown data opcode ${f.opcode}`);
    }
    if (fragments.size > MAX_MESSAGE) throw new ProtocolError('message too large', 1009);
    if (f.fin) {
      const data = fragments.parts.length === 1 ? fragments.parts[0] : Buffer.concat(fragments.parts, fragments.size);
      const opcode = fragments.opcode;
      fragments = null;
      inbox.put({ type: 'message', opcode, data });
    }
  };

  stream.on('data', (chunk) => {
    if (weEnded) t.bytes_after_end += chunk.length;
    if (status !== 200) {
      bodyChunks.push(chunk);
      return;
    }
    if (inbox.ended || parseFailed) return;
    parser.push(chunk);
    try {
      for (let f = parser.next(); f; f = parser.next()) onFrame(f);
    } catch (err) {
      parseFailed = true; // the byte stream can't be trusted any more
      inbox.put({ type: 'error', error: err });
    }
  });
  stream.on('end', () => inbox.put({ type: 'end' }));

  const writeFrame = async (buf) => {
    if (stream.closed || stream.destroyed || stream.writableEnded) {
      throw new Error('stream closed while sending');
    }
    if (!stream.write(buf)) {
      await new Promise((resolve, reject) => {
        const onDrain = () => { stream.removeListener('close', onClose); resolve(); };
        const onClose = () => { stream.removeListener('drain', onDrain); reject(new Error('stream closed while sending')); };
        stream.once('drain', onDrain);
        stream.once('close', onClose);
      });
    }
  };

  const endOurSide = () => {
    if (!stream.writableEnded && !stream.destroyed) {
      weEnded = true;
      if (t.bytes_after_end === null) t.bytes_after_end = 0;
      stream.end();
    }
  };

  // The server sent a Close frame first: answer it, end the stream.
  const serverClosed = async (ev) => {
    t.close_code = ev.code;
    t.close_reason = ev.reason;
    if (!t.close_initiator) t.close_initiator = 'server';
    try {
      await writeFrame(encodeFrame(OP_CLOSE, closePayload(ev.code === 1005 ? null : ev.code)));
    } catch { /* stream may be gone already */ }
    endOurSide();
    await closed;
  };

  // Waits for the next data message; handles close/end/error events.
  // Returns the message or null if the conversation is over.
  const nextMessage = async () => {
    const ev = await inbox.get();
    if (ev.type === 'message') return ev;
    if (ev.type === 'close') {
      await serverClosed(ev);
      return null;
    }
    if (ev.type === 'error') throw ev.error;
    return null; // 'end'
  };

  const protocolFail = async (err) => {
    if (err instanceof ProtocolError) {
      t.error = `protocol error: ${err.message}`;
      try { await writeFrame(encodeFrame(OP_CLOSE, closePayload(err.closeCode))); } catch { /* ignore */ }
      endOurSide();
      return;
    }
    throw err;
  };

  const headersIn = await response;
  if (headersIn === null) {
    t.error = 'stream closed before response';
    await closed;
    return;
  }
  status = headersIn[':status'];
  t.status = status;
  t.headers = plainHeaders(headersIn);
  t.stream_id = stream.id;

  if (status !== 200) {
    endOurSide();
    await closed;
    t.body = Buffer.concat(bodyChunks).toString('utf8');
    t.bytes_after_end = null;
    return;
  }

  let conversationOver = false;
  try {
    if (opts.text !== null) {
      await writeFrame(encodeFrame(OP_TEXT, Buffer.from(opts.text, 'utf8')));
      t.bytes_sent += Buffer.byteLength(opts.text);
      const m = await nextMessage();
      if (m === null) {
        conversationOver = true;
      } else {
        t.text_reply = m.opcode === OP_TEXT ? m.data.toString('utf8') : null;
        if (m.opcode !== OP_TEXT) t.error = 'binary reply to a text message';
        else {
          t.echoed = 1;
          t.bytes_echoed += m.data.length;
        }
      }
    } else {
      const check = (m, sent) => {
        if (m.opcode === OP_BINARY && m.data.equals(sent)) {
          t.echoed += 1;
          t.bytes_echoed += sent.length;
        } else {
          t.mismatches += 1;
        }
      };
      const make = () => crypto.randomFillSync(Buffer.allocUnsafe(opts.size));
      if (opts.pipeline) {
        const sent = [];
        for (let i = 0; i < opts.messages; i++) {
          const p = make();
          sent.push(p);
          await writeFrame(encodeFrame(OP_BINARY, p));
          t.bytes_sent += p.length;
        }
        for (let i = 0; i < opts.messages; i++) {
          const m = await nextMessage();
          if (m === null) { conversationOver = true; break; }
          check(m, sent[i]);
        }
      } else {
        for (let i = 0; i < opts.messages; i++) {
          const p = make();
          await writeFrame(encodeFrame(OP_BINARY, p));
          t.bytes_sent += p.length;
          const m = await nextMessage();
          if (m === null) { conversationOver = true; break; }
          check(m, p);
        }
      }
    }
  } catch (err) {
    await protocolFail(err);
    conversationOver = true;
  }

  if (conversationOver) {
    if (!t.error && opts.text === null && t.echoed < opts.messages && t.close_initiator !== 'server') {
      t.error = 'stream ended before all echoes arrived';
    }
    endOurSide();
    await closed;
    return;
  }

  if (opts.noClose) return; // leave the tunnel open; the session is destroyed at the end

  if (opts.hold) {
    // Keep the tunnel open until the server closes it (a proxy's drain): its Close is
    // answered with the same code and END_STREAM (serverClosed); an end without one is
    // an error (what a browser would report as 1006).
    while ((await nextMessage()) !== null) { /* late messages are ignored */ }
    if (t.close_code === null && !t.error) t.error = 'stream ended without a Close frame';
    return;
  }

  try {
    if (opts.halfClose) {
      // END_STREAM without a Close frame, then read until the server ends.
      endOurSide();
      t.messages_after_end = 0;
      for (;;) {
        const ev = await inbox.get();
        if (ev.type === 'message') t.messages_after_end += 1;
        else if (ev.type === 'close') {
          t.close_code = ev.code;
          t.close_reason = ev.reason;
          t.close_initiator = 'server';
        } else if (ev.type === 'error') {
          t.error = `protocol error: ${ev.error.message}`;
          break;
        } else break; // end
      }
      await closed;
      return;
    }

    // Normal closing handshake: Close(1000), wait for the server's Close,
    // then END_STREAM, then wait for the stream to close.
    t.close_initiator = 'client';
    await writeFrame(encodeFrame(OP_CLOSE, closePayload(1000)));
    for (;;) {
      const ev = await inbox.get();
      if (ev.type === 'close') {
        t.close_code = ev.code;
        t.close_reason = ev.reason;
        break;
      }
      if (ev.type === 'error') {
        t.error = `protocol error: ${ev.error.message}`;
        break;
      }
      if (ev.type === 'end') break;
      // late data messages are ignored
    }
    endOurSide();
    await closed;
  } catch (err) {
    if (!t.error) t.error = err.message;
    if (!stream.closed && !stream.destroyed) {
      t.local_reset = true;
      stream.close(NGHTTP2_CANCEL);
    }
    await closed;
  }
}

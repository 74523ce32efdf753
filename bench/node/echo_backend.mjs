#!/usr/bin/env node
// Fast WebSocket echo backend for bench/compare.py, on Node built-ins only.
//
//   node echo_backend.mjs [--host 127.0.0.1] [--port 0] [--h2-port 0]
//                         [--tls-port 0 --cert FILE --key FILE]
//
// Listeners (all on --host, loopback in the harness):
//   * --port: HTTP/1.1. An RFC 6455 upgrade (GET + Upgrade: websocket) gets a 101 with the
//     right Sec-WebSocket-Accept and then every frame is echoed; any other request gets
//     200 with a short text body (keep-alive), for the plain-GET scenario.
//   * --h2-port (h2c) and --tls-port (h2 over TLS, ALPN h2): an HTTP/2 server with
//     SETTINGS_ENABLE_CONNECT_PROTOCOL. An extended CONNECT with :protocol websocket gets
//     :status 200 and the same echo; any other request gets 200 with the same short body.
//     This is the harness's "direct" baseline: the load client talking RFC 8441 straight to
//     the echo endpoint, with no proxy and no HTTP/1.1 hop.
// On listening it prints one JSON line on stdout: {"port", "h2_port", "tls_port"}.
// It exits on SIGTERM/SIGINT and when its stdin reaches EOF.
//
// Echo: each frame from the client (masked, as RFC 6455 requires) is sent back unmasked
// with the same FIN bit and opcode, one frame for one frame, so a client can count echoed
// messages by bytes. Ping gets a pong; Close gets a Close with the same payload, then the
// server ends its side. Unmasking works on 32-bit words: the ws package's pure-JS masker
// made this backend the bottleneck of the bulk scenario.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';

const BODY = Buffer.from('hello from the bench backend\n');
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function parseArgs(argv) {
  const o = { host: '127.0.0.1', port: 0, h2Port: 0, tlsPort: null, cert: null, key: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case '--host': o.host = next(); break;
      case '--port': o.port = Number(next()); break;
      case '--h2-port': o.h2Port = Number(next()); break;
      case '--tls-port': o.tlsPort = Number(next()); break;
      case '--cert': o.cert = next(); break;
      case '--key': o.key = next(); break;
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
  return o;
}

function frameHeader(target, at, fin, opcode, len) {
  target[at] = (fin ? 0x80 : 0) | opcode;
  if (len < 126) {
    target[at + 1] = len;
    return 2;
  }
  if (len < 65536) {
    target[at + 1] = 126;
    target.writeUInt16BE(len, at + 2);
    return 4;
  }
  target[at + 1] = 127;
  target.writeBigUInt64BE(BigInt(len), at + 2);
  return 10;
}

function headerLength(len) {
  if (len < 126) return 2;
  return len < 65536 ? 4 : 10;
}

// Build an unmasked frame carrying the (masked) payload src[start, start+len) unmasked.
function echoFrame(src, start, len, fin, opcode, maskAt) {
  const hlen = headerLength(len);
  const pad = (4 - (hlen % 4)) % 4; // payload starts on a 4-byte boundary
  const out = Buffer.allocUnsafeSlow(pad + hlen + len);
  frameHeader(out, pad, fin, opcode, len);
  const p = pad + hlen;
  src.copy(out, p, start, start + len);
  if (maskAt >= 0) {
    const words = len >>> 2;
    if (words > 0) {
      const view = new Uint32Array(out.buffer, out.byteOffset + p, words);
      const mask32 = src.readUInt32LE(maskAt);
      for (let i = 0; i < words; i++) view[i] ^= mask32;
    }
    for (let i = words << 2; i < len; i++) out[p + i] ^= src[maskAt + (i & 3)];
  }
  return pad ? out.subarray(pad) : out;
}

// Returns onData(chunk); calls write(buf) for each reply and finish() after a Close.
function echoer(write, finish) {
  let buf = null;
  let closed = false;
  return (chunk) => {
    if (closed) return;
    buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
    let off = 0;
    while (buf.length - off >= 2) {
      const b0 = buf[off];
      const b1 = buf[off + 1];
      let len = b1 & 0x7f;
      let p = off + 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(p);
        p += 2;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(p));
        p += 8;
      }
      let maskAt = -1;
      if (b1 & 0x80) {
        maskAt = p;
        p += 4;
      }
      if (buf.length < p + len) break;
      const opcode = b0 & 0x0f;
      const fin = (b0 & 0x80) !== 0;
      if (opcode === 0x9) write(echoFrame(buf, p, len, true, 0xa, maskAt));
      else if (opcode === 0x8) {
        write(echoFrame(buf, p, len, true, 0x8, maskAt));
        closed = true;
        finish();
        return;
      } else if (opcode !== 0xa) write(echoFrame(buf, p, len, fin, opcode, maskAt));
      off = p + len;
    }
    buf = off === buf.length ? null : buf.subarray(off);
  };
}

function answerGet(res) {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length });
  res.end(BODY);
}

function startH1(o, listening) {
  const server = http.createServer((req, res) => answerGet(res));
  server.keepAliveTimeout = 60000;
  server.on('upgrade', (req, socket, head) => {
    const key = req.headers['sec-websocket-key'];
    if ((req.headers.upgrade || '').toLowerCase() !== 'websocket' || !key) {
      socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    const accept = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
    socket.setNoDelay(true);
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
      + `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    const onData = echoer((b) => socket.write(b), () => socket.end());
    socket.on('data', onData);
    socket.on('error', () => socket.destroy());
    if (head && head.length) onData(head);
  });
  server.listen({ host: o.host, port: o.port, backlog: 8192 }, () => listening(server));
}

function onH2Stream(stream, headers) {
  if (headers[':method'] === 'CONNECT' && headers[':protocol'] === 'websocket') {
    stream.respond({ ':status': 200 });
    stream.on('data', echoer((b) => stream.write(b), () => stream.end()));
    stream.on('end', () => stream.end());
    stream.on('error', () => {});
    return;
  }
  stream.respond({ ':status': 200, 'content-type': 'text/plain', 'content-length': BODY.length });
  stream.end(BODY);
}

function h2Options() {
  return {
    settings: { enableConnectProtocol: true, maxConcurrentStreams: 1000, initialWindowSize: 1 << 20 },
  };
}

function watchSession(session) {
  session.on('error', () => {});
  session.setLocalWindowSize(64 << 20);
}

const o = parseArgs(process.argv.slice(2));
const ports = {};
let waiting = o.tlsPort === null ? 2 : 3;
const announce = (name, server) => {
  ports[name] = server.address().port;
  waiting -= 1;
  if (waiting === 0) process.stdout.write(`${JSON.stringify(ports)}\n`);
};

startH1(o, (server) => announce('port', server));
const h2c = http2.createServer(h2Options());
h2c.on('stream', onH2Stream);
h2c.on('session', watchSession);
h2c.listen({ host: o.host, port: o.h2Port, backlog: 8192 }, () => announce('h2_port', h2c));
if (o.tlsPort !== null) {
  const tls = http2.createSecureServer({
    ...h2Options(),
    cert: fs.readFileSync(o.cert),
    key: fs.readFileSync(o.key),
    allowHTTP1: false,
  });
  tls.on('stream', onH2Stream);
  tls.on('session', watchSession);
  tls.listen({ host: o.host, port: o.tlsPort, backlog: 8192 }, () => announce('tls_port', tls));
}

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();

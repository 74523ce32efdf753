#!/usr/bin/env node
// Legacy HTTP/1.1 WebSocket (RFC 6455) echo backend for the h2ws-proxy tests.
//
// Usage:
//   node ws_echo_backend.mjs [--port 0] [--host 127.0.0.1] [--unix PATH]
//                            [--protocols a,b] [--per-message-deflate]
//                            [--ignore-stdin]
//
// On listening it prints exactly one JSON line on stdout, {"port": N} or
// {"unix": PATH}, and nothing else on stdout afterwards (logs go to stderr).
//
// Behaviour per connection:
//   * every message is echoed back with the same type (text/binary);
//   * text "__headers__"  -> text reply: JSON {"method", "url", "httpVersion",
//                            "headers" (req.headers), "rawHeaders",
//                            "protocol" (negotiated subprotocol), "extensions"};
//   * text "__whoami__"   -> text reply: JSON {"port", "peer"}: which server this is;
//   * text "__close__"    -> the server closes with code 1000, reason "bye";
//   * plain GET /healthz -> 200 "ok"; GET /whoami -> 200 with JSON {"port", "peer"};
//     other plain requests -> 426;
//   * an upgrade request for path /__status/NNN is refused with HTTP status NNN
//     (body "backend status NNN") instead of being upgraded;
//   * text "__after_eof__" or "__after_eof__:N" -> replies text "armed"; later,
//                            when the TCP peer half-closes (EOF) without a Close
//                            frame, the server first writes one unmasked binary
//                            message of N bytes (default 9, "after-eof" / 'x'
//                            padding) straight on the socket, then lets `ws`
//                            finish the connection. Lets a test check that data
//                            sent after the client's END_STREAM still reaches it.
//
// The process exits cleanly on SIGTERM/SIGINT and when its stdin reaches EOF
// (spawn it with stdin=PIPE; a killed pytest then leaves no orphan). Pass
// --ignore-stdin to run it by hand with stdin at /dev/null.

import http from 'node:http';
import fs from 'node:fs';
import { WebSocketServer } from 'ws';

function parseArgs(argv) {
  const opts = {
    port: 0,
    host: '127.0.0.1',
    unix: null,
    protocols: [],
    perMessageDeflate: false,
    ignoreStdin: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case '--port': opts.port = Number.parseInt(next(), 10); break;
      case '--host': opts.host = next(); break;
      case '--unix': opts.unix = next(); break;
      case '--protocols':
        opts.protocols = next().split(',').map((s) => s.trim()).filter(Boolean);
        break;
      case '--per-message-deflate': opts.perMessageDeflate = true; break;
      case '--ignore-stdin': opts.ignoreStdin = true; break;
      case '-h': case '--help':
        process.stderr.write('see the header comment of ws_echo_backend.mjs\n');
        process.exit(0);
        break;
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
  process.stderr.write(`ws_echo_backend: ${err.message}\n`);
  process.exit(64);
}

const log = (...parts) => process.stderr.write(`ws_echo_backend: ${parts.join(' ')}\n`);

const server = http.createServer((req, res) => {
  // GET /healthz: 200 (health checks); GET /whoami: 200 with {"port"} (which server of a
  // group answered). Other plain HTTP requests (no upgrade) get a small 426 so tests can
  // see them.
  if (req.url === '/healthz' || req.url === '/whoami') {
    const body = req.url === '/healthz' ? 'ok\n' : `${JSON.stringify(whoami())}\n`;
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(body);
    return;
  }
  res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' });
  res.end('upgrade required\n');
});

const whoami = () => ({ port: server.address().port, peer: 'node-ws' });

const wss = new WebSocketServer({
  server,
  perMessageDeflate: opts.perMessageDeflate,
  clientTracking: true,
  // Upgrade requests for /__status/NNN are refused with HTTP status NNN, so
  // tests can check how the proxy maps a failed backend handshake.
  verifyClient: ({ req }, done) => {
    const m = /^\/__status\/(\d{3})(?:[/?]|$)/.exec(req.url || '');
    if (m) done(false, Number(m[1]), `backend status ${m[1]}`);
    else done(true);
  },
  handleProtocols: (offered /* Set<string> */) => {
    for (const p of offered) {
      if (opts.protocols.includes(p)) return p;
    }
    return false; // no Sec-WebSocket-Protocol in the response
  },
});

function unmaskedFrame(opcode, payload) {
  const len = payload.length;
  let header;
  if (len < 126) {
    header = Buffer.from([0x80 | opcode, len]);
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode; header[1] = 126; header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode; header[1] = 127; header.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([header, payload]);
}

wss.on('connection', (ws, req) => {
  const socket = req.socket;
  let afterEofBytes = null;

  // Runs before ws's own 'end' handler (which ends the socket), so the frame
  // is queued ahead of the FIN.
  socket.prependListener('end', () => {
    if (afterEofBytes === null || socket.destroyed || !socket.writable) return;
    const base = Buffer.from('after-eof');
    const payload = Buffer.alloc(afterEofBytes, 'x');
    base.copy(payload, 0, 0, Math.min(base.length, afterEofBytes));
    socket.write(unmaskedFrame(0x2, payload));
    afterEofBytes = null;
  });

  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString('utf8');
      if (text === '__headers__') {
        ws.send(JSON.stringify({
          method: req.method,
          url: req.url,
          httpVersion: req.httpVersion,
          headers: req.headers,
          rawHeaders: req.rawHeaders,
          protocol: ws.protocol,
          extensions: ws.extensions,
        }));
        return;
      }
      if (text === '__whoami__') {
        ws.send(JSON.stringify(whoami()));
        return;
      }
      if (text === '__close__') {
        ws.close(1000, 'bye');
        return;
      }
      if (text === '__after_eof__' || text.startsWith('__after_eof__:')) {
        const n = text.includes(':') ? Number.parseInt(text.split(':')[1], 10) : 9;
        afterEofBytes = Number.isInteger(n) && n >= 0 ? n : 9;
        ws.send('armed');
        return;
      }
    }
    ws.send(data, { binary: isBinary });
  });
  ws.on('error', (err) => log('connection error:', err.message));
});

wss.on('error', (err) => log('server error:', err.message));

let shuttingDown = false;
function shutdown(why) {
  if (shuttingDown) return;
  shuttingDown = true;
  log('shutting down:', why);
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  server.close(() => process.exit(0));
  // Don't hang on lingering sockets.
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

const announce = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

if (opts.unix) {
  try {
    if (fs.statSync(opts.unix).isSocket()) fs.unlinkSync(opts.unix); // stale socket
  } catch { /* does not exist */ }
  server.listen(opts.unix, () => announce({ unix: opts.unix }));
} else {
  server.listen(opts.port, opts.host, () => announce({ port: server.address().port }));
}

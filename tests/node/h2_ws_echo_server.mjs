#!/usr/bin/env node
// RFC 8441 WebSocket echo server on Node's built-in `http2`, for h2ws-proxy tests that need
// a real server speaking WebSocket over HTTP/2 (the proxy's HTTP/2 backends, the terminal
// client).
//
// Usage:
//   node h2_ws_echo_server.mjs [--port 0] [--host 127.0.0.1] [--cert FILE --key FILE]
//                              [--allow-http1] [--no-connect-protocol]
//                              [--protocols a,b] [--ignore-stdin]
//
// * Cleartext h2c (prior knowledge) by default; TLS (ALPN h2) with --cert and --key.
//   --allow-http1 (TLS only) also serves WebSocket upgrades (through `ws`) to HTTP/1.1
//   clients that ALPN-negotiate it, so a client can fall back to HTTP/1.1 (plain HTTP/1.1
//   requests are not answered: see the comment at the 'upgrade' listener).
// * --no-connect-protocol: SETTINGS without SETTINGS_ENABLE_CONNECT_PROTOCOL; nghttp2 then
//   refuses `:protocol` requests itself (RST_STREAM PROTOCOL_ERROR).
// * Once listening it prints exactly one line on stdout, {"port":N}; logs go to stderr.
//
// Per stream:
// * `:method CONNECT` + `:protocol websocket`: `:status 200` (with sec-websocket-protocol:
//   the first subprotocol offered by the client that is in --protocols), then RFC 6455
//   frames over the stream, parsed by ws's Receiver (client frames must be masked) and
//   written by ws's Sender (server frames unmasked): text and binary messages are echoed
//   byte for byte with their type, pings answered with pongs, a Close answered with a
//   Close carrying the same code, then END_STREAM. The text `__close__` makes the server
//   close with 1000 "bye"; the path /__status/NNN is refused with status NNN and body
//   "backend status NNN".
// * GET /hello: 200 "hello"; POST (any path): 200 with the request body echoed;
//   GET /stats: 200 with JSON {"sessions","open_sessions","streams","tunnels"}, counted
//   since start (HTTP/2 sessions = connections; streams of every kind, this one included);
//   anything else: 404.
//
// Exits on SIGTERM/SIGINT and when stdin reaches EOF (spawn it with stdin=PIPE), unless
// --ignore-stdin.

import http2 from 'node:http2';
import fs from 'node:fs';
import { Receiver, Sender, WebSocketServer } from 'ws';

const {
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_PATH,
  HTTP2_HEADER_PROTOCOL,
  HTTP2_HEADER_STATUS,
  NGHTTP2_CANCEL,
} = http2.constants;

function parseArgs(argv) {
  const opts = {
    port: 0,
    host: '127.0.0.1',
    cert: null,
    key: null,
    allowHttp1: false,
    connectProtocol: true,
    protocols: [],
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
      case '--cert': opts.cert = next(); break;
      case '--key': opts.key = next(); break;
      case '--allow-http1': opts.allowHttp1 = true; break;
      case '--no-connect-protocol': opts.connectProtocol = false; break;
      case '--protocols':
        opts.protocols = next().split(',').map((s) => s.trim()).filter(Boolean);
        break;
      case '--ignore-stdin': opts.ignoreStdin = true; break;
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error('bad --port');
  }
  if ((opts.cert === null) !== (opts.key === null)) throw new Error('--cert needs --key');
  if (opts.allowHttp1 && opts.cert === null) throw new Error('--allow-http1 needs TLS');
  return opts;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`h2_ws_echo_server: ${err.message}\n`);
  process.exit(64);
}

const log = (...parts) => process.stderr.write(`h2_ws_echo_server: ${parts.join(' ')}\n`);
const stats = { sessions: 0, open_sessions: 0, streams: 0, tunnels: 0 };

const serverOptions = {
  settings: { enableConnectProtocol: opts.connectProtocol },
  // Tests open 1,000 tunnels on one connection: nghttp2's default (100) would refuse them.
  peerMaxConcurrentStreams: 10000,
};
const server = opts.cert === null
  ? http2.createServer(serverOptions)
  : http2.createSecureServer({
    ...serverOptions,
    cert: fs.readFileSync(opts.cert),
    key: fs.readFileSync(opts.key),
    allowHTTP1: opts.allowHttp1,
  });
server.maxConcurrentStreams = 10000;

server.on('session', (session) => {
  stats.sessions += 1;
  stats.open_sessions += 1;
  session.on('close', () => { stats.open_sessions -= 1; });
  session.on('error', (err) => log('session error:', err.message));
});

function pickProtocol(offered) {
  if (!offered) return null;
  for (const p of String(offered).split(',').map((s) => s.trim())) {
    if (opts.protocols.includes(p)) return p;
  }
  return null;
}

// One WebSocket over one HTTP/2 stream: Receiver parses what the client sends, Sender
// writes onto the stream (a Duplex). Server frames are never masked (RFC 6455 5.1).
function runTunnel(stream) {
  stats.tunnels += 1;
  const receiver = new Receiver({ isServer: true, maxPayload: 64 * 1024 * 1024 });
  const sender = new Sender(stream);
  let closeSent = false;

  const sendClose = (code, reason) => {
    if (closeSent) return;
    closeSent = true;
    sender.close(code, reason, false, () => stream.end());
  };
  receiver.on('message', (data, isBinary) => {
    if (!isBinary && data.toString('utf8') === '__close__') {
      sendClose(1000, 'bye');
      return;
    }
    sender.send(data, { binary: isBinary, fin: true, mask: false });
  });
  receiver.on('ping', (data) => sender.pong(data, false));
  receiver.on('conclude', (code, reason) => {
    // Close with no status (1005) is answered with an empty Close.
    sendClose(code === 1005 ? undefined : code, reason);
  });
  receiver.on('error', (err) => {
    log('frame error:', err.message);
    sendClose(err[Symbol.for('status-code')] || 1002, '');
  });
  stream.on('data', (chunk) => receiver.write(chunk));
  stream.on('end', () => { if (!closeSent) stream.end(); });
  stream.on('error', (err) => log('tunnel stream error:', err.message));
}

function answer(stream, status, body, contentType = 'text/plain') {
  stream.respond({ [HTTP2_HEADER_STATUS]: status, 'content-type': contentType });
  stream.end(body);
}

server.on('stream', (stream, headers) => {
  stats.streams += 1;
  stream.on('error', (err) => log('stream error:', err.message));
  const method = headers[HTTP2_HEADER_METHOD];
  const path = headers[HTTP2_HEADER_PATH] || '';
  if (method === 'CONNECT' && headers[HTTP2_HEADER_PROTOCOL] === 'websocket') {
    const refused = /^\/__status\/(\d{3})(?:[/?]|$)/.exec(path);
    if (refused) {
      answer(stream, Number(refused[1]), `backend status ${refused[1]}`);
      return;
    }
    const response = { [HTTP2_HEADER_STATUS]: 200 };
    const chosen = pickProtocol(headers['sec-websocket-protocol']);
    if (chosen !== null) response['sec-websocket-protocol'] = chosen;
    stream.respond(response, { endStream: false });
    runTunnel(stream);
    return;
  }
  if (method === 'CONNECT') {
    stream.close(NGHTTP2_CANCEL);
    return;
  }
  if (method === 'GET' && path === '/stats') {
    answer(stream, 200, JSON.stringify(stats), 'application/json');
    return;
  }
  if (method === 'GET' && path === '/hello') {
    answer(stream, 200, 'hello');
    return;
  }
  if (method === 'POST') {
    const chunks = [];
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.on('end', () => answer(stream, 200, Buffer.concat(chunks), 'application/octet-stream'));
    return;
  }
  answer(stream, 404, 'not found');
});

// HTTP/1.1 clients (only with --allow-http1 on TLS): WebSocket upgrades, by `ws`. There is
// deliberately no 'request' listener: adding one makes Node route every HTTP/2 stream
// through its compatibility layer too, which answers extended CONNECT streams itself and
// ends them. So plain HTTP/1.1 requests get no answer.
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  handleProtocols: (offered) => {
    for (const p of offered) if (opts.protocols.includes(p)) return p;
    return false;
  },
});
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data, isBinary) => {
      if (!isBinary && data.toString('utf8') === '__close__') ws.close(1000, 'bye');
      else ws.send(data, { binary: isBinary });
    });
    ws.on('error', (err) => log('http/1.1 websocket error:', err.message));
  });
});

server.on('error', (err) => {
  log('server error:', err.message);
  process.exit(1);
});

let shuttingDown = false;
function shutdown(why) {
  if (shuttingDown) return;
  shuttingDown = true;
  log('shutting down:', why);
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (!opts.ignoreStdin) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

server.listen(opts.port, opts.host, () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

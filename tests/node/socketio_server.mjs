#!/usr/bin/env node
// socket.io echo server (HTTP/1.1) for the h2ws-proxy tests.
//
// Usage:
//   node socketio_server.mjs [--port 0] [--host 127.0.0.1] [--ignore-stdin]
//
// socket.io on its default path /socket.io/ with its default transports (long-polling,
// then an upgrade to WebSocket); it also serves its browser client at
// /socket.io/socket.io.js. Other paths get 404.
//
// Event "echo" (payload, ack): acks {payload, transport}, where transport is the engine
// transport ("polling" or "websocket") that carried the message in, as this server saw it.
//
// stdout carries JSON lines only (logs go to stderr):
//   {"port": N}                                             once, when listening;
//   {"event": "connection", "id", "transport"}              a client connected;
//   {"event": "upgrade", "id", "transport"}                 its transport was upgraded;
//   {"event": "disconnect", "id", "reason", "transport"}    it went away.
//
// Exits on SIGTERM/SIGINT and when stdin reaches EOF (spawn it with stdin=PIPE);
// --ignore-stdin keeps it running with stdin at /dev/null (by hand).

import http from 'node:http';
import { Server } from 'socket.io';

function parseArgs(argv) {
  const opts = { port: 0, host: '127.0.0.1', ignoreStdin: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`missing value for ${a}`);
      return argv[++i];
    };
    switch (a) {
      case '--port': opts.port = Number.parseInt(next(), 10); break;
      case '--host': opts.host = next(); break;
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
  process.stderr.write(`socketio_server: ${err.message}\n`);
  process.exit(64);
}

const log = (...parts) => process.stderr.write(`socketio_server: ${parts.join(' ')}\n`);
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

const server = http.createServer((req, res) => {
  // socket.io answers its own path before this listener runs; the rest is not ours.
  if ((req.url || '').startsWith('/socket.io/')) return;
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});

const io = new Server(server, { serveClient: true, maxHttpBufferSize: 4 * 1024 * 1024 });

io.on('connection', (socket) => {
  const transport = () => socket.conn.transport.name;
  emit({ event: 'connection', id: socket.id, transport: transport() });
  socket.conn.on('upgrade', (upgraded) => {
    emit({ event: 'upgrade', id: socket.id, transport: upgraded.name });
  });
  socket.on('echo', (payload, ack) => {
    if (typeof ack === 'function') ack({ payload, transport: transport() });
  });
  socket.on('disconnect', (reason) => {
    emit({ event: 'disconnect', id: socket.id, reason, transport: transport() });
  });
});

let shuttingDown = false;
function shutdown(why) {
  if (shuttingDown) return;
  shuttingDown = true;
  log('shutting down:', why);
  io.close();
  server.closeAllConnections();
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

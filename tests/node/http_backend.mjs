#!/usr/bin/env node
// Ordinary HTTP/1.1 backend for the h2ws-proxy tests: Node's own `http` server (keep-alive,
// chunked, trailers, 100-continue, all as Node does them), plus a `ws` echo on upgrades.
//
// Usage: node http_backend.mjs [--port 0] [--host 127.0.0.1] [--ignore-stdin]
// On listening it prints one JSON line {"port": N} on stdout; it exits when stdin closes.
//
// Routes (any method unless said):
//   /hello                 200 "hello\n" with content-length
//   /headers               200 JSON {method, url, httpVersion, headers, rawHeaders, socket}
//                          (`socket` numbers the TCP connection: keep-alive reuse is visible)
//   /echo                  streams the request body back (chunked), content-type kept
//   /digest                reads the body; 200 JSON {bytes, sha256}
//   /bytes/N               GET: N bytes of a fixed pattern, streamed in 64 KiB chunks
//                          (?length=1 adds content-length, else chunked)
//   /trailers              200 chunked "body", trailer x-checksum: abc123; with a request
//                          body: echoes the request's trailers as JSON instead
//   /continue              with Expect: 100-continue, Node answers 100 then we echo
//   /status/N              status N, body "status N" (no body for 204/304 and HEAD)
//   /early                 answers 413 at once without reading the body, then closes
//   /slow?ms=M             waits M ms then "slow\n"
//   /stats                 JSON {connections}: TCP connections accepted so far
//   any upgrade: websocket echo (text and binary)

import crypto from 'node:crypto';
import http from 'node:http';
import { WebSocketServer } from 'ws';

const opts = { port: 0, host: '127.0.0.1', ignoreStdin: false };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--port') opts.port = Number.parseInt(argv[++i], 10);
  else if (argv[i] === '--host') opts.host = argv[++i];
  else if (argv[i] === '--ignore-stdin') opts.ignoreStdin = true;
  else { process.stderr.write(`http_backend: unknown argument ${argv[i]}\n`); process.exit(64); }
}

let connections = 0;
const PATTERN = Buffer.alloc(65536);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = i % 251;

function json(res, status, value) {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
}

function readAll(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function streamBytes(res, total) {
  let sent = 0;
  const writeMore = () => {
    while (sent < total) {
      const size = Math.min(PATTERN.length, total - sent);
      sent += size;
      if (!res.write(size === PATTERN.length ? PATTERN : PATTERN.subarray(0, size))) {
        res.once('drain', writeMore);
        return;
      }
    }
    res.end();
  };
  writeMore();
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://backend.invalid');
  const path = url.pathname;
  if (path === '/hello') {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 6 });
    res.end(req.method === 'HEAD' ? undefined : 'hello\n');
  } else if (path === '/headers') {
    await readAll(req);
    json(res, 200, {
      method: req.method, url: req.url, httpVersion: req.httpVersion,
      headers: req.headers, rawHeaders: req.rawHeaders, socket: req.socket.h2wsId,
    });
  } else if (path === '/echo' || path === '/continue') {
    res.writeHead(200, { 'content-type': req.headers['content-type'] || 'application/octet-stream' });
    req.pipe(res);
  } else if (path === '/digest') {
    const hash = crypto.createHash('sha256');
    let bytes = 0;
    req.on('data', (c) => { bytes += c.length; hash.update(c); });
    req.on('end', () => json(res, 200, { bytes, sha256: hash.digest('hex') }));
  } else if (path.startsWith('/bytes/')) {
    const total = Number.parseInt(path.slice('/bytes/'.length), 10);
    const headers = { 'content-type': 'application/octet-stream' };
    if (url.searchParams.get('length') === '1') headers['content-length'] = total;
    res.writeHead(200, headers);
    if (req.method === 'HEAD') res.end(); else streamBytes(res, total);
  } else if (path === '/trailers') {
    const body = await readAll(req);
    if (body.length) {
      json(res, 200, { trailers: req.trailers, bytes: body.length });
    } else {
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
      res.write('body');
      res.addTrailers({ 'x-checksum': 'abc123' });
      res.end();
    }
  } else if (path.startsWith('/status/')) {
    const status = Number.parseInt(path.slice('/status/'.length), 10);
    await readAll(req);
    if (status === 204 || status === 304) { res.writeHead(status); res.end(); }
    else {
      const body = `status ${status}\n`;
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
    }
  } else if (path === '/early') {
    res.writeHead(413, { 'content-type': 'text/plain', 'content-length': 9, connection: 'close' });
    res.end('too big!\n');
  } else if (path === '/slow') {
    await readAll(req);
    setTimeout(() => { res.writeHead(200, { 'content-length': 5 }); res.end('slow\n'); },
      Number.parseInt(url.searchParams.get('ms') || '100', 10));
  } else if (path === '/stats') {
    json(res, 200, { connections });
  } else {
    res.writeHead(404, { 'content-type': 'text/plain', 'content-length': 10 });
    res.end('not found\n');
  }
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => { process.stderr.write(`${err.stack}\n`); res.destroy(); });
});
server.on('checkContinue', (req, res) => { res.writeContinue(); server.emit('request', req, res); });
server.on('connection', (socket) => { connections += 1; socket.h2wsId = connections; });
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

server.listen(opts.port, opts.host, () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
const stop = () => { server.closeAllConnections(); server.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (!opts.ignoreStdin) {
  process.stdin.on('end', stop);
  process.stdin.resume();
}

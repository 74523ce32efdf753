"""Toward backends: the WebSocket upgrade, the HTTP/1.1 wire of ordinary requests, the pool."""

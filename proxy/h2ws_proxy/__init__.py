"""h2ws-proxy: WebSocket over HTTP/2 (RFC 8441) in front of HTTP/1.1 WebSocket servers."""

__version__ = "0.1.0"

"""The HTTP/1.1 front end: classic WebSocket upgrades and ordinary requests over h11."""

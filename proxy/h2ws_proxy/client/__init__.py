"""``h2ws-proxy connect URL``: a terminal WebSocket client, over HTTP/2 extended CONNECT
(RFC 8441) first, HTTP/1.1 otherwise. Entry point: :func:`.connect.connect_main`."""

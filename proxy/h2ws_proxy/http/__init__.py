"""Pure HTTP: request validation, the WebSocket handshake, message translation. No I/O."""

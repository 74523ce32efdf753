"""Pure WebSocket framing (RFC 6455 §5): frame boundaries from headers, our Close. No I/O."""

"""Pure WebSocket framing (RFC 6455 §5): frame boundaries from headers, the Close we send. No I/O."""

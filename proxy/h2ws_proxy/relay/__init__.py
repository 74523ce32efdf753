"""Where a client stream meets a backend: routing, the tunnel, the request exchange, records."""

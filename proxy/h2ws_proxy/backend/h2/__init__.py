"""HTTP/2 toward backend servers: shared connections, their streams, the pool."""

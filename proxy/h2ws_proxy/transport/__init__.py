"""Byte streams the rest of the proxy codes against: TCP and TLS, polling, wake-ups, closing."""

"""Listeners, connection sniffing, admin, the supervisor and its workers, the demo backend."""

"""A loopback listener whose accept queue is full, for connects that have to wait."""

from __future__ import annotations

import socket


def full_accept_queue() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback listener whose accept queue is full: a new connect to it is left pending
    (the kernel drops its SYN), found without waiting since loopback connects otherwise
    complete inside ``connect``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers: list[socket.socket] = []
    for _ in range(16):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
        try:
            filler.getpeername()
        except OSError:
            return listener, fillers  # this one is pending: the queue is full
    raise AssertionError("the accept queue never filled")

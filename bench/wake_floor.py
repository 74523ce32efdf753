"""What a wake-up costs a Python forwarder, with no proxy logic: the floor under a tunnel's hop.

    PYTHONPATH=proxy .venv/bin/python bench/wake_floor.py [--round-trips 20000] [--runs 3]

Three processes, as in a one-tunnel ping-pong: a driver sends 64 bytes and waits for them
back; a forwarder passes them to an echo and the echo's answer back; the echo answers.
Unix socketpairs, so the kernel's part is small and the same for each design. The
forwarder is one of:

* ``raw``: a ``select.epoll`` loop (no framework at all);
* ``trio``: two trio tasks, each ``wait_readable`` then ``recv`` then ``send``;
* ``plane``: trio, both sockets served by h2ws-proxy's data plane
  (``transport/data_plane.py``), which sleeps in the run loop's stead while it is idle.

It prints the forwarder's user and system CPU per round trip (``getrusage``), and the
driver's wall time per round trip. Numbers: bench/README.md, "The data plane".
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import time

import trio

MESSAGE = b"x" * 64


def _echo(sock: socket.socket) -> None:
    while data := sock.recv(65536):
        sock.send(data)
    os._exit(0)


def _drive(sock: socket.socket, round_trips: int, out: socket.socket) -> None:
    start = time.perf_counter()
    for _ in range(round_trips):
        sock.send(MESSAGE)
        sock.recv(65536)
    out.send(f"{(time.perf_counter() - start) / round_trips * 1e6:.1f}".encode())
    os._exit(0)


def _raw(client: socket.socket, backend: socket.socket) -> None:
    poll = select.epoll()
    poll.register(client.fileno(), select.EPOLLIN)
    poll.register(backend.fileno(), select.EPOLLIN)
    client_fd = client.fileno()
    while True:
        for fd, _events in poll.poll():
            if fd == client_fd:
                data = client.recv(65536)
                if not data:
                    return
                backend.send(data)
            else:
                client.send(backend.recv(65536))


async def _trio_tasks(client: socket.socket, backend: socket.socket) -> None:
    async def pump(source: socket.socket, sink: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(source)
            data = source.recv(65536)
            if not data:
                nursery.cancel_scope.cancel()
                return
            sink.send(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, client, backend, nursery)
        nursery.start_soon(pump, backend, client, nursery)


class _Forward:
    """A poller watcher: each read on ``source`` goes to ``sink``; an EOF ends the run."""

    watched = False

    def __init__(self, source: socket.socket, sink: socket.socket, done: trio.Event) -> None:
        self._source, self._sink, self._done = source, sink, done

    def on_readable(self) -> None:
        data = self._source.recv(65536)
        if data:
            self._sink.send(data)
        else:
            self._done.set()

    def on_error(self) -> None:
        self._done.set()

    def on_closed(self) -> None:
        self._done.set()


async def _trio_plane(client: socket.socket, backend: socket.socket) -> None:
    from h2ws_proxy.transport.data_plane import current_data_plane
    from h2ws_proxy.transport.poller import BackendPoller

    plane = current_data_plane()
    if plane is None:
        raise SystemExit("no data plane with this trio (transport/trio_idle.py's fence)")
    done = trio.Event()
    poller = BackendPoller()
    poller.register(client.fileno(), _Forward(client, backend, done))
    poller.register(backend.fileno(), _Forward(backend, client, done))
    plane.add(poller.fileno(), poller.round, lambda error: done.set())
    await done.wait()
    plane.remove(poller.fileno())
    poller.close()


def run_once(design: str, round_trips: int) -> tuple[float, float, float]:
    """(user µs, system µs, wall µs) per round trip."""
    drive_end, client = socket.socketpair()
    backend, echo_end = socket.socketpair()
    report, report_in = socket.socketpair()
    if os.fork() == 0:
        for sock in (drive_end, client, backend, report, report_in):
            sock.close()
        _echo(echo_end)
    if os.fork() == 0:
        for sock in (client, backend, echo_end, report_in):
            sock.close()
        _drive(drive_end, round_trips, report)
    for sock in (drive_end, echo_end, report):
        sock.close()
    client.setblocking(False)
    backend.setblocking(False)
    before = resource.getrusage(resource.RUSAGE_SELF)
    if design == "raw":
        _raw(client, backend)
    elif design == "trio":
        trio.run(_trio_tasks, client, backend)
    else:
        trio.run(_trio_plane, client, backend)
    after = resource.getrusage(resource.RUSAGE_SELF)
    backend.close()
    client.close()
    wall = float(report_in.recv(64))
    report_in.close()
    os.wait()
    os.wait()
    user = (after.ru_utime - before.ru_utime) / round_trips * 1e6
    system = (after.ru_stime - before.ru_stime) / round_trips * 1e6
    return user, system, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| design | forwarder user µs / round trip | system µs | driver's wall µs |")
    print("|---|---|---|---|")
    for _ in range(args.runs):
        for design in ("raw", "trio", "plane"):
            user, system, wall = run_once(design, args.round_trips)
            print(f"| {design} | {user:.1f} | {system:.1f} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()

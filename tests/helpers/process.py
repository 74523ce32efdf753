"""Helpers for tests that run the real command: free ports, reading its log as it comes."""

from __future__ import annotations

import re
import socket

import trio


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OutputWatcher:
    """Reads a process's output as it comes; ``expect`` finds the next match of a pattern."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.text = ""
        self._position = 0

    async def expect(self, pattern: str) -> re.Match[str]:
        compiled = re.compile(pattern)
        with trio.move_on_after(20):
            while (match := compiled.search(self.text, self._position)) is None:
                data = await self.stream.receive_some(4096)
                if not data:
                    break
                self.text += data.decode()
        if match is None:
            raise AssertionError(f"no {pattern!r} in the output: {self.text[self._position :]!r}")
        self._position = match.end()
        return match

    async def read_to_end(self) -> str:
        """Everything up to end of file (every writer of the pipe has exited)."""
        while data := await self.stream.receive_some(4096):
            self.text += data.decode()
        return self.text

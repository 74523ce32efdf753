"""Methods a backend could misread, and a proxy bug that a client could make loud.

RFC 9110 §9.1: methods are case-sensitive, so ``get`` is not GET and the rules for GET (no
body) would not see it, while many backends read it as GET: it is refused. A plain CONNECT
(a TCP tunnel) is not offered over HTTP/1.1 either (501, as over HTTP/2). An unexpected
error is one log line and a counter, its traceback only at debug level: a client must not
be able to flood the log.
"""

from __future__ import annotations

import logging

import hpack
import pytest
import trio
import trio.testing

from h2ws_proxy.config import BackendAddress
from tests.helpers.frames import frame
from tests.helpers.memory import MemoryNet, echo_backend, open_memory_client
from tests.helpers.raw_h2 import raw_client, read_frames_until
from tests.helpers.setup import make_config

DATA, HEADERS, RST_STREAM, GOAWAY = 0x0, 0x1, 0x3, 0x7
END_STREAM, END_HEADERS = 0x1, 0x4


def request(method: bytes, path: bytes = b"/") -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"proxy.test"),
    ]


async def h1_answer(client: trio.abc.HalfCloseableStream, head: bytes) -> bytes:
    await client.send_all(head)
    answer = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in answer:
            data = await client.receive_some(65536)
            if not data:
                break
            answer += data
    return answer


@pytest.mark.parametrize("method", [b"get", b"Get", b"hEAD", b"delete", b"post"])
@pytest.mark.parametrize("with_body", [False, True])
async def test_h2_a_method_in_another_case_is_refused(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    method: bytes,
    with_body: bool,
) -> None:
    net = MemoryNet(nursery, echo_backend)
    client = await raw_client(nursery, net)
    block = hpack.Encoder().encode(request(method))
    flags = END_HEADERS if with_body else END_HEADERS | END_STREAM
    await client.send_all(frame(HEADERS, flags, 1, block))
    if with_body:
        await client.send_all(frame(DATA, END_STREAM, 1, b"body"))
    with trio.fail_after(10):
        frames = await read_frames_until(client, {HEADERS, GOAWAY})
    status = hpack.Decoder().decode(frames[-1][3], raw=True)[0]
    assert status == (b":status", b"400")
    assert net.dials == 0


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"get / HTTP/1.1\r\nhost: proxy.test\r\n\r\n", b"400"),
        (b"Post / HTTP/1.1\r\nhost: proxy.test\r\ncontent-length: 4\r\n\r\nbody", b"400"),
        (b"CONNECT proxy.test:443 HTTP/1.1\r\nhost: proxy.test:443\r\n\r\n", b"501"),
        (b"CONNECT / HTTP/1.1\r\nhost: proxy.test\r\n\r\n", b"501"),
    ],
    ids=["lower-get", "title-post", "connect-authority", "connect-path"],
)
async def test_h1_a_method_in_another_case_or_connect_is_refused(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, head: bytes, status: bytes
) -> None:
    net = MemoryNet(nursery, echo_backend)
    client = await open_memory_client(nursery, make_config(("/", "http://127.0.0.1:9")), net)
    answer = await h1_answer(client, head)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:60]
    assert net.dials == 0


async def test_an_unexpected_error_is_one_line_and_a_counter(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = MemoryNet(nursery, echo_backend)

    async def broken_connect(address: BackendAddress) -> trio.abc.HalfCloseableStream:
        raise RuntimeError("a bug in a dial")

    monkeypatch.setattr(net, "connect", broken_connect)
    caplog.set_level(logging.INFO, logger="h2ws_proxy")
    client = await open_memory_client(nursery, make_config(("/", "http://127.0.0.1:9")), net)
    await client.send_all(b"GET / HTTP/1.1\r\nhost: proxy.test\r\n\r\n")
    with trio.fail_after(10):
        while await client.receive_some(65536):
            pass  # the connection ends
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["connection.unexpected_error"]
    assert errors[0].exc_info is None  # no traceback at INFO
    fields = getattr(errors[0], "fields", {})
    assert fields["count"] == 1
    assert "RuntimeError: a bug in a dial" in fields["error"]

"""``[[backend]]`` groups and a route's ``backend`` value: what loads, and the one-line
errors (file, line, key path) for what does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from h2ws_proxy.config import BackendGroup, HealthCheck, load_config, parse_backend
from tests.unit.test_config import load_error, write

LISTENER = '[[listener]]\nbind = "127.0.0.1:8080"\n\n'
GROUP = (
    '[[backend]]\nname = "app"\n'
    'servers = ["http://127.0.0.1:9001", "http://127.0.0.1:9002", "unix:app.sock"]\n'
)
ROUTE = '\n[[route]]\npath = "/"\nbackend = "app"\n'


def test_a_named_group_with_every_setting(tmp_path: Path) -> None:
    text = (
        LISTENER
        + GROUP
        + 'balance = "cookie"\nsticky_cookie = "srv"\nmax_connections = 50\n'
        + "queue_timeout_s = 2\nmax_fails = 5\nfail_timeout_s = 30\n"
        + '[backend.health_check]\npath = "/healthz"\ninterval_s = 2\ntimeout_s = 1\n'
        + ROUTE
    )
    config = load_config(write(tmp_path, text))
    group = config.routes[0].backend
    assert config.backends == (group,)
    assert group == BackendGroup(
        servers=(
            parse_backend("http://127.0.0.1:9001"),
            parse_backend("http://127.0.0.1:9002"),
            parse_backend(f"unix:{tmp_path / 'app.sock'}"),
        ),
        name="app",
        balance="cookie",
        sticky_cookie="srv",
        max_connections=50,
        queue_timeout_s=2.0,
        max_fails=5,
        fail_timeout_s=30.0,
        health_check=HealthCheck(path="/healthz", interval_s=2.0, timeout_s=1.0),
    )


def test_a_route_takes_a_url_a_list_or_a_name(tmp_path: Path) -> None:
    text = (
        LISTENER
        + GROUP
        + ROUTE
        + '\n[[route]]\npath = "/one"\nbackend = "http://127.0.0.1:9009"\n'
        + '\n[[route]]\npath = "/two"\nbackend = ["http://127.0.0.1:9010", "http://h:9011"]\n'
    )
    named, one, two = load_config(write(tmp_path, text)).routes
    assert named.backend.name == "app"
    assert one.backend == BackendGroup.of(parse_backend("http://127.0.0.1:9009"))
    assert [str(s) for s in two.backend.servers] == ["http://127.0.0.1:9010", "http://h:9011"]
    assert (two.backend.name, two.backend.balance) == ("", "round_robin")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            LISTENER + '[[route]]\npath = "/"\nbackend = "chat"\n',
            ':6: route[0].backend: no [[backend]] is named "chat" (defined: none); define one '
            'with name = "chat", or give a URL such as http://chat:9000',
        ),
        (
            LISTENER + GROUP + '\n[[backend]]\nname = "app"\nservers = ["http://h:1"]\n' + ROUTE,
            ":9: backend[1].name: 'app' is already the name of backend[0]; give each "
            "[[backend]] its own name",
        ),
        (
            LISTENER + '[[backend]]\nname = "app"\nservers = []\n' + ROUTE,
            ":6: backend[0].servers: must be a non-empty list of backend URLs, not an empty "
            'list; write e.g. servers = ["http://127.0.0.1:9000", "http://127.0.0.1:9001"]',
        ),
        (
            LISTENER + '[[backend]]\nname = "a b"\nservers = ["http://h:1"]\n' + ROUTE,
            ":5: backend[0].name: \"a b\": use letters, digits, '.', '_' and '-' only",
        ),
        (
            LISTENER
            + '[[backend]]\nname = "app"\nservers = ["http://h:1", "http://h:1"]\n'
            + ROUTE,
            ":6: backend[0].servers: http://h:1 is listed twice; list each server once",
        ),
        (
            LISTENER + GROUP + 'balance = "random"\n' + ROUTE,
            ':7: backend[0].balance: must be one of "round_robin", "least_connections", '
            '"client_ip", "cookie", not "random"',
        ),
        (
            LISTENER + GROUP + 'balance = "cookie"\n' + ROUTE,
            ':7: backend[0].sticky_cookie: is required with balance = "cookie"; add e.g. '
            'sticky_cookie = "h2ws_server"',
        ),
        (
            LISTENER + GROUP + 'sticky_cookie = "srv"\n' + ROUTE,
            ':7: backend[0].sticky_cookie: only applies with balance = "cookie"; remove it '
            "or set that",
        ),
        (
            LISTENER + GROUP + "max_fails = -1\n" + ROUTE,
            ":7: backend[0].max_fails: -1 is out of range; use a value from 0 to 1000000",
        ),
        (
            LISTENER + GROUP + "queue_timeout_s = 0\n" + ROUTE,
            ":7: backend[0].queue_timeout_s: must be a finite number of seconds greater "
            "than 0; write e.g. queue_timeout_s = 5.0",
        ),
        (
            LISTENER + GROUP + "[backend.health_check]\ninterval_s = 1\ntimeout_s = 2\n" + ROUTE,
            ":9: backend[0].health_check.timeout_s: must be below interval_s (1); lower it "
            "or raise that",
        ),
        (
            LISTENER + GROUP + "[backend.tls]\nverify = false\n" + ROUTE,
            ":7: backend[0].tls: applies to https:// servers, and this group has none",
        ),
        (
            LISTENER + GROUP + "weight = 3\n" + ROUTE,
            ":7: backend[0].weight: unknown key; known keys: name, servers, balance, "
            "sticky_cookie, max_connections, queue_timeout_s, max_fails, fail_timeout_s, "
            "health_check, tls, protocol",
        ),
    ],
    ids=[
        "undefined-name",
        "duplicate-name",
        "empty-servers",
        "bad-name",
        "duplicate-server",
        "bad-balance",
        "cookie-without-name",
        "name-without-cookie",
        "negative-count",
        "zero-seconds",
        "timeout-above-interval",
        "tls-without-https",
        "unknown-key",
    ],
)
def test_bad_groups_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    assert load_error(tmp_path, text) == message

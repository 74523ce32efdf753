"""config.py: parsing, defaults, and each error message (file, key path, line and hint)."""

from __future__ import annotations

import os
import re
import ssl
import textwrap
from pathlib import Path

import pytest
import trustme

from h2ws_proxy.config import (
    AdminConfig,
    BackendAddress,
    BackendGroup,
    Limits,
    ListenerConfig,
    ProxyConfig,
    RouteConfig,
    SocketAddress,
    TLSConfig,
    build_server_ssl_context,
    load_config,
    parse_backend,
    parse_config,
    parse_socket_address,
)
from h2ws_proxy.errors import ConfigError
from tests.helpers.certificates import handshake_in_memory, write_certificate

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

MINIMAL = """\
[[listener]]
bind = "127.0.0.1:8080"

[[route]]
path = "/"
backend = "http://127.0.0.1:9000"
"""


def write(tmp_path: Path, text: str, name: str = "proxy.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str) -> str:
    """Load ``text`` from proxy.toml in tmp_path, expect a ConfigError, return its message."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message == info.value.message
    assert "\n" not in message
    assert message.startswith(f"{path}")
    return message.removeprefix(str(path))


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    return cert_path, key_path


# --- what parses ----------------------------------------------------------------------


def test_minimal_config_gets_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config == ProxyConfig(
        listeners=(ListenerConfig(SocketAddress("127.0.0.1", 8080)),),
        routes=(RouteConfig("/", BackendGroup.of(BackendAddress("http", "127.0.0.1", 9000))),),
        source=str(tmp_path / "proxy.toml"),
    )
    assert config.admin is None
    assert config.limits == Limits()
    assert config.listeners[0].enable_connect_protocol == "auto"
    assert config.listeners[0].tls is None
    assert config.routes[0].x_forwarded is True


def test_limits_defaults() -> None:
    assert Limits() == Limits(
        connect_timeout_s=5.0,
        handshake_timeout_s=10.0,
        client_handshake_timeout_s=10.0,
        idle_timeout_s=300.0,
        max_concurrent_streams=128,
        stream_window_bytes=262144,
        max_header_list_bytes=65536,
        max_rejection_body_bytes=65536,
        graceful_timeout_s=10.0,
        idle_connection_timeout_s=300.0,
        send_timeout_s=60.0,
        max_connections=10000,
        max_stream_resets=200,
        stream_reset_window_s=10.0,
        max_empty_frames=1000,
    )


def test_example_toml_parses() -> None:
    config = load_config(CONFIG_DIR / "example.toml")
    assert [str(listener.bind) for listener in config.listeners] == ["127.0.0.1:8080"]
    assert config.listeners[0].tls is None
    assert [(route.path, str(route.backend)) for route in config.routes] == [
        ("/", "http://127.0.0.1:9000")
    ]
    assert config.admin == AdminConfig(SocketAddress("127.0.0.1", 9901))
    assert config.limits == Limits()


def test_example_toml_tls_block_works_when_uncommented(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    text = (CONFIG_DIR / "example.toml").read_text()
    for line in ("[listener.tls]", 'cert = "cert.pem"', 'key = "key.pem"'):
        assert f"# {line}" in text
        text = text.replace(f"# {line}", line, 1)
    config = load_config(write(tmp_path, text))
    assert config.listeners[0].tls == TLSConfig(*tls_files)
    assert config.listeners[0].enable_connect_protocol == "auto"


def test_example_toml_second_certificate_works_when_uncommented(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    api = write_certificate(trustme.CA(), tmp_path, "api", "api.example.test")
    assert (api.cert.name, api.key.name) == ("api.pem", "api.key")
    text = (CONFIG_DIR / "example.toml").read_text()
    lines = ["[listener.tls]", 'cert = "cert.pem"', 'key = "key.pem"']
    lines += ["[[listener.tls.certificate]]", 'cert = "api.pem"', 'key = "api.key"']
    for line in lines:
        assert f"# {line}" in text
        text = text.replace(f"# {line}", line, 1)
    config = load_config(write(tmp_path, text))
    assert config.listeners[0].tls == TLSConfig(*tls_files, certificates=(api,))


def test_example_toml_hosts_and_origins_work_when_uncommented(tmp_path: Path) -> None:
    text = (CONFIG_DIR / "example.toml").read_text()
    start = text.index('# [[route]]\n# path = "/chat"')
    end = text.index("# require_origin = true\n", start) + len("# require_origin = true\n")
    block = text[start:end].replace("# ", "")
    config = load_config(write(tmp_path, text[:start] + block + text[end:]))
    chat = config.routes[1]
    assert chat.host == ("chat.example.com", "*.chat.example.com")
    assert chat.allowed_origins == ("https://chat.example.com", "https://*.example.com")
    assert chat.require_origin is True
    assert (config.routes[0].host, config.routes[0].allowed_origins) == ((), ())


def test_minimal_toml_parses() -> None:
    config = load_config(CONFIG_DIR / "minimal.toml")
    assert config.listeners == (ListenerConfig(SocketAddress("127.0.0.1", 8080)),)
    assert config.routes == (
        RouteConfig("/", BackendGroup.of(BackendAddress("http", "127.0.0.1", 9000))),
    )
    assert config.admin is None


def test_every_key_is_read(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    text = """\
    [[listener]]
    bind = "[::1]:8443"
    enable_connect_protocol = false
    [listener.tls]
    cert = "cert.pem"
    key = "key.pem"

    [[listener]]
    bind = "0.0.0.0:0"

    [[route]]
    path = "/chat"
    backend = "unix:/run/chat.sock"
    x_forwarded = false

    [[route]]
    path = "/"
    backend = "HTTP://localhost/"

    [admin]
    bind = "localhost:0"

    [limits]
    connect_timeout_s = 1
    handshake_timeout_s = 2.5
    client_handshake_timeout_s = 3
    idle_timeout_s = 0
    max_concurrent_streams = 1
    stream_window_bytes = 2147483647
    max_header_list_bytes = 1024
    max_rejection_body_bytes = 0
    graceful_timeout_s = 0.5
    """
    config = load_config(write(tmp_path, text))
    first, second = config.listeners
    assert first == ListenerConfig(SocketAddress("::1", 8443), TLSConfig(*tls_files), False)
    assert str(first.bind) == "[::1]:8443"
    assert second.bind == SocketAddress("0.0.0.0", 0)
    assert config.routes == (
        RouteConfig(
            "/chat", BackendGroup.of(BackendAddress("unix", unix_path="/run/chat.sock")), False
        ),
        RouteConfig("/", BackendGroup.of(BackendAddress("http", "localhost", 80))),
    )
    assert config.admin == AdminConfig(SocketAddress("localhost", 0))
    assert config.limits == Limits(1.0, 2.5, 3.0, 0.0, 1, 2**31 - 1, 1024, 0, 0.5)
    assert isinstance(config.limits.connect_timeout_s, float)


def test_parse_config_from_memory() -> None:
    data = {
        "listener": [{"bind": "127.0.0.1:0"}],
        "route": [{"path": "/", "backend": "unix:app.sock"}],
    }
    config = parse_config(data, base_dir=Path("/srv/app"))
    assert config.source == "<memory>"
    assert config.routes[0].backend.servers[0].unix_path == "/srv/app/app.sock"
    with pytest.raises(ConfigError, match=r"^<memory>: route: missing; add at least one"):
        parse_config({"listener": [{"bind": "127.0.0.1:0"}]})


def test_tls_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    (tmp_path / "tls").mkdir()
    cert.cert_chain_pems[0].write_to_path(tmp_path / "tls" / "c.pem")
    cert.private_key_pem.write_to_path(tmp_path / "tls" / "k.pem")
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    text = MINIMAL + '[listener.tls]\ncert = "../tls/c.pem"\nkey = "../tls/k.pem"\n'
    text = text.replace("[[route]]", "#").replace('path = "/"', "").replace("backend", "#")
    text += '[[route]]\npath = "/"\nbackend = "http://127.0.0.1:9000"\n'
    config = load_config(write(conf_dir, text))
    assert config.listeners[0].tls == TLSConfig(tmp_path / "tls/c.pem", tmp_path / "tls/k.pem")


# --- addresses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:8443", "127.0.0.1", 8443),
        ("[::1]:8443", "::1", 8443),
        ("[::]:0", "::", 0),
        ("localhost:65535", "localhost", 65535),
        ("0.0.0.0:80", "0.0.0.0", 80),
    ],
)
def test_parse_socket_address(text: str, host: str, port: int) -> None:
    address = parse_socket_address(text)
    assert address == SocketAddress(host, port)
    assert str(address) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1", "has no port; write host:port"),
        (":8443", "has no host"),
        ("::1:8443", "IPv6 addresses must be in brackets"),
        ("[::1]", "has no port"),
        ("[::1:8443", "no closing ']'"),
        ("[nope]:1", "not an IPv6 address"),
        ("[::1]x:1", "unexpected 'x:1'"),
        ("127.0.0.1:65536", "not a number from 0 to 65535"),
        ("127.0.0.1:-1", "not a number from 0 to 65535"),
        ("127.0.0.1:", "not a number from 0 to 65535"),
        ("127.0.0.1:http", "not a number from 0 to 65535"),
        ("my host:80", "not a valid host name"),
    ],
)
def test_parse_socket_address_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_socket_address(text)


def _http(host: str, port: int) -> BackendAddress:
    return BackendAddress("http", host=host, port=port)


def _unix(path: str) -> BackendAddress:
    return BackendAddress("unix", unix_path=path)


@pytest.mark.parametrize(
    ("text", "expected", "shown"),
    [
        ("http://127.0.0.1:9000", _http("127.0.0.1", 9000), "http://127.0.0.1:9000"),
        ("http://127.0.0.1:9000/", _http("127.0.0.1", 9000), "http://127.0.0.1:9000"),
        ("http://example.com", _http("example.com", 80), "http://example.com:80"),
        ("http://[::1]:9000", _http("::1", 9000), "http://[::1]:9000"),
        ("http://[::1]", _http("::1", 80), "http://[::1]:80"),
        ("unix:/run/app.sock", _unix("/run/app.sock"), "unix:/run/app.sock"),
        ("unix:///run/app.sock", _unix("/run/app.sock"), "unix:/run/app.sock"),
    ],
)
def test_parse_backend(text: str, expected: BackendAddress, shown: str) -> None:
    backend = parse_backend(text)
    assert backend == expected
    assert str(backend) == shown


@pytest.mark.parametrize(
    ("text", "host_header"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1:9000"),
        ("http://example.com:80", "example.com"),
        ("http://[::1]:9000", "[::1]:9000"),
        ("http://[::1]", "[::1]"),
        ("unix:/run/app.sock", "localhost"),
    ],
)
def test_backend_host_header(text: str, host_header: str) -> None:
    assert parse_backend(text).host_header == host_header


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "ws://127.0.0.1:9000",
            "unsupported scheme 'ws://'; write http://host:port, https://host:port, h2c://host:port",
        ),
        ("127.0.0.1:9000", "has no scheme; write http://127.0.0.1:9000 or unix:"),
        ("localhost", "has no scheme; write http://localhost or unix:"),
        ("http://127.0.0.1:9000/ws", "cannot carry a path or query ('/ws')"),
        ("http://127.0.0.1:9000?x=1", "cannot carry a path or query ('?x=1')"),
        ("http://user@127.0.0.1:9000", "credentials in a backend URL are not supported"),
        ("http://", "has no host"),
        ("http://:9000", "has no host"),
        ("http://127.0.0.1:0", "port 0 cannot be connected to"),
        ("http://127.0.0.1:99999", "not a number from 0 to 65535"),
        ("http://::1:9000", "IPv6 addresses must be in brackets"),
        ("unix:", "unix socket path is empty; write unix:/path/to.sock"),
        ("unix://run/app.sock", "unix:// needs an absolute path"),
    ],
)
def test_parse_backend_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_backend(text)


# --- error messages: file, key path, line, hint ---------------------------------------


def test_missing_listener(tmp_path: Path) -> None:
    text = '[[route]]\npath = "/"\nbackend = "http://127.0.0.1:9000"\n'
    assert load_error(tmp_path, text) == (
        ": listener: missing; add at least one [[listener]] table"
    )


def test_missing_route(tmp_path: Path) -> None:
    text = '[[listener]]\nbind = "127.0.0.1:8080"\n'
    assert load_error(tmp_path, text) == ": route: missing; add at least one [[route]] table"


def test_empty_listener_array(tmp_path: Path) -> None:
    text = "listener = []\n" + MINIMAL.replace('[[listener]]\nbind = "127.0.0.1:8080"\n', "")
    assert (
        load_error(tmp_path, text) == ":1: listener: missing; add at least one [[listener]] table"
    )


def test_listener_as_single_table(tmp_path: Path) -> None:
    text = MINIMAL.replace("[[listener]]", "[listener]")
    assert load_error(tmp_path, text) == (
        ":1: listener: must be an array of tables; write [[listener]] (two brackets)"
    )


def test_listener_not_a_table(tmp_path: Path) -> None:
    text = 'listener = ["127.0.0.1:8080"]\n' + MINIMAL.split("\n", 2)[2]
    assert load_error(tmp_path, text) == (
        ":1: listener[0]: must be a table, not a string; write [[listener]] tables"
    )


def test_unknown_top_level_key_with_suggestion(tmp_path: Path) -> None:
    text = MINIMAL + "\n[[routes]]\npath = '/x'\n"
    assert load_error(tmp_path, text) == ":8: routes: unknown key; did you mean 'route'?"


def test_unknown_top_level_key_without_suggestion(tmp_path: Path) -> None:
    text = "debug = true\n" + MINIMAL
    assert load_error(tmp_path, text) == (
        ":1: debug: unknown key; known keys: workers, listener, backend, route, admin, limits"
    )


def test_unknown_route_key_with_suggestion(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[route]]\npath = "/chat"\nbacknd = "http://127.0.0.1:9001"\n'
    assert load_error(tmp_path, text) == (
        ":10: route[1].backnd: unknown key; did you mean 'backend'?"
    )


def test_unknown_listener_key(tmp_path: Path) -> None:
    text = MINIMAL.replace('bind = "127.0.0.1:8080"', 'bind = "127.0.0.1:8080"\nbnid = 1')
    assert load_error(tmp_path, text) == ":3: listener[0].bnid: unknown key; did you mean 'bind'?"


def test_unknown_tls_key(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    text = MINIMAL + '[[listener]]\nbind = "127.0.0.1:8081"\n'
    text += '[listener.tls]\ncert = "cert.pem"\nkeyfile = "key.pem"\n'
    assert load_error(tmp_path, text) == (
        ":11: listener[1].tls.keyfile: unknown key; did you mean 'key'?"
    )


def test_enable_connect_protocol_under_tls_is_explained(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    text = MINIMAL.replace(
        'bind = "127.0.0.1:8080"\n',
        'bind = "127.0.0.1:8080"\n[listener.tls]\ncert = "cert.pem"\nkey = "key.pem"\n'
        "enable_connect_protocol = false\n",
    )
    assert load_error(tmp_path, text) == (
        ":6: listener[0].tls.enable_connect_protocol: belongs to the [[listener]] table; "
        "move it above [listener.tls]"
    )


def test_unknown_admin_key(tmp_path: Path) -> None:
    text = MINIMAL + '\n[admin]\nbind = "127.0.0.1:9901"\nport = 9901\n'
    assert load_error(tmp_path, text) == ":10: admin.port: unknown key; known keys: bind"


def test_unknown_limits_key_with_suggestion(tmp_path: Path) -> None:
    text = MINIMAL + "\n[limits]\nidle_timeout_s = 1\nidle_timeout = 5\n"
    assert load_error(tmp_path, text) == (
        ":10: limits.idle_timeout: unknown key; did you mean 'idle_timeout_s'?"
    )


def test_unknown_sub_table(tmp_path: Path) -> None:
    text = MINIMAL + "\n[route.headers]\nx = 1\n"
    assert load_error(tmp_path, text) == (
        ":8: route[0].headers: unknown key; known keys: path, host, backend, x_forwarded, "
        "websocket, normalize_path, strip_fields, allowed_origins, require_origin"
    )


def test_missing_bind_points_at_the_table(tmp_path: Path) -> None:
    text = MINIMAL + "\n[[listener]]\nenable_connect_protocol = false\n"
    assert load_error(tmp_path, text) == (
        ':8: listener[1].bind: missing; add bind = "127.0.0.1:8443"'
    )


def test_missing_backend(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[route]]\npath = "/chat"\n'
    assert load_error(tmp_path, text) == (
        ':8: route[1].backend: missing; add backend = "http://127.0.0.1:9000"'
    )


def test_missing_admin_bind(tmp_path: Path) -> None:
    text = MINIMAL + "\n[admin]\n"
    assert load_error(tmp_path, text) == ':8: admin.bind: missing; add bind = "127.0.0.1:9901"'


def test_missing_tls_key(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    text = MINIMAL.replace("[[route]]", '[listener.tls]\ncert = "cert.pem"\n\n[[route]]')
    assert load_error(tmp_path, text) == ':4: listener[0].tls.key: missing; add key = "key.pem"'


def test_bind_wrong_type(tmp_path: Path) -> None:
    text = MINIMAL.replace('"127.0.0.1:8080"', "8080")
    assert load_error(tmp_path, text) == (
        ':2: listener[0].bind: must be a string, not an integer; write bind = "127.0.0.1:8443"'
    )


@pytest.mark.parametrize(
    ("bind", "reason"),
    [
        ("127.0.0.1", "'127.0.0.1' has no port; write host:port, e.g. 127.0.0.1:8443"),
        ("::1:8080", "'::1:8080': IPv6 addresses must be in brackets; write e.g. [::1]:8443"),
        (":8080", "':8080' has no host; write e.g. 127.0.0.1:8080 or 0.0.0.0:8080"),
        ("127.0.0.1:70000", "port '70000' in '127.0.0.1:70000' is not a number from 0 to 65535"),
    ],
)
def test_bad_bind(tmp_path: Path, bind: str, reason: str) -> None:
    text = MINIMAL.replace("127.0.0.1:8080", bind)
    assert load_error(tmp_path, text).startswith(f":2: listener[0].bind: {reason}")


def test_bad_admin_bind(tmp_path: Path) -> None:
    text = MINIMAL + '\n[admin]\nbind = "9901"\n'
    assert load_error(tmp_path, text) == (
        ":9: admin.bind: '9901' has no port; write host:port, e.g. 127.0.0.1:8443"
    )


def test_https_backend_defaults_to_port_443(tmp_path: Path) -> None:
    text = MINIMAL.replace("http://127.0.0.1:9000", "https://backend.internal")
    server = load_config(write(tmp_path, text)).routes[0].backend.servers[0]
    assert (server.scheme, server.host, server.port, server.tls) == (
        "https",
        "backend.internal",
        443,
        None,
    )
    assert server.host_header == "backend.internal"


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        (
            "ws://127.0.0.1:9000",
            "unsupported scheme 'ws://'; write http://host:port, https://host:port, h2c://host:port",
        ),
        ("127.0.0.1:9000", "has no scheme; write http://127.0.0.1:9000 or unix:/path/to.sock"),
        ("http://127.0.0.1:9000/chat", "cannot carry a path or query ('/chat'); write http://"),
        ("unix:", "the unix socket path is empty; write unix:/path/to.sock"),
    ],
)
def test_bad_backend(tmp_path: Path, backend: str, reason: str) -> None:
    text = MINIMAL.replace("http://127.0.0.1:9000", backend)
    message = load_error(tmp_path, text)
    assert message.startswith(":6: route[0].backend: ")
    assert reason in message


def test_relative_unix_backend_is_relative_to_the_config_file(tmp_path: Path) -> None:
    text = MINIMAL.replace("http://127.0.0.1:9000", "unix:sockets/app.sock")
    config = load_config(write(tmp_path, text))
    assert config.routes[0].backend.servers[0].unix_path == str(tmp_path / "sockets/app.sock")


def test_route_path_must_start_with_slash(tmp_path: Path) -> None:
    text = MINIMAL.replace('path = "/"', 'path = "chat"')
    assert load_error(tmp_path, text) == (
        ':5: route[0].path: must start with "/"; write path = "/chat"'
    )


def test_route_path_without_query(tmp_path: Path) -> None:
    text = MINIMAL.replace('path = "/"', 'path = "/chat?room=1"')
    message = load_error(tmp_path, text)
    assert message.startswith(":5: route[0].path: must not contain '?', '#'")
    assert "; give a plain path prefix" in message


def test_route_paths_are_unique(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[route]]\npath = "/"\nbackend = "http://127.0.0.1:9001"\n'
    assert load_error(tmp_path, text) == (
        ":9: route[1].path: '/' is already the path of route[0]; "
        "give each route its own path or host"
    )


def test_listener_binds_are_unique(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[listener]]\nbind = "127.0.0.1:8080"\n'
    assert load_error(tmp_path, text) == (
        ":9: listener[1].bind: 127.0.0.1:8080 is already used by listener[0]; "
        "give each its own address"
    )


def test_ipv6_binds_compare_by_address(tmp_path: Path) -> None:
    text = MINIMAL + '[[listener]]\nbind = "[::1]:1"\n[[listener]]\nbind = "[0::1]:1"\n'
    assert load_error(tmp_path, text).startswith(
        ":10: listener[2].bind: [0::1]:1 is already used by listener[1]"
    )


def test_port_zero_binds_may_repeat(tmp_path: Path) -> None:
    text = MINIMAL.replace("8080", "0") + '[[listener]]\nbind = "127.0.0.1:0"\n'
    text += '[admin]\nbind = "127.0.0.1:0"\n'
    config = load_config(write(tmp_path, text))
    assert [listener.bind.port for listener in config.listeners] == [0, 0]


def test_admin_bind_differs_from_listeners(tmp_path: Path) -> None:
    text = MINIMAL + '\n[admin]\nbind = "127.0.0.1:8080"\n'
    assert load_error(tmp_path, text) == (
        ":9: admin.bind: 127.0.0.1:8080 is already used by listener[0]; "
        "give the admin server its own port"
    )


def test_bool_is_not_a_number(tmp_path: Path) -> None:
    text = MINIMAL + "\n[limits]\nidle_timeout_s = 1.5\nmax_concurrent_streams = true\n"
    assert load_error(tmp_path, text) == (
        ":10: limits.max_concurrent_streams: must be an integer, not a boolean; "
        "write e.g. max_concurrent_streams = 128"
    )


def test_bool_is_not_seconds(tmp_path: Path) -> None:
    text = MINIMAL + "\n[limits]\nconnect_timeout_s = true\n"
    assert load_error(tmp_path, text) == (
        ":9: limits.connect_timeout_s: must be a number of seconds, not a boolean; "
        "write e.g. connect_timeout_s = 5.0"
    )


def test_string_is_not_seconds(tmp_path: Path) -> None:
    text = MINIMAL + '\n[limits]\nhandshake_timeout_s = "10"\n'
    assert load_error(tmp_path, text).startswith(
        ":9: limits.handshake_timeout_s: must be a number of seconds, not a string"
    )


def test_float_is_not_an_integer_limit(tmp_path: Path) -> None:
    text = MINIMAL + "\n[limits]\nstream_window_bytes = 65536.0\n"
    assert load_error(tmp_path, text) == (
        ":9: limits.stream_window_bytes: must be an integer, not a float; "
        "write e.g. stream_window_bytes = 262144"
    )


def test_boolean_keys_reject_strings(tmp_path: Path) -> None:
    # x_forwarded also takes "append" (tests/unit/test_config_routes.py): websocket is the
    # plain boolean route key here.
    text = MINIMAL + 'websocket = "yes"\n'
    assert load_error(tmp_path, text) == (
        ":7: route[0].websocket: must be true or false, not a string; write it unquoted"
    )


@pytest.mark.parametrize(
    "name",
    [
        "connect_timeout_s",
        "handshake_timeout_s",
        "client_handshake_timeout_s",
        "graceful_timeout_s",
        "send_timeout_s",
        "stream_reset_window_s",
    ],
)
@pytest.mark.parametrize("value", ["0", "-1.5"])
def test_timeouts_are_positive(tmp_path: Path, name: str, value: str) -> None:
    text = MINIMAL + f"\n[limits]\n{name} = {value}\n"
    message = load_error(tmp_path, text)
    assert message.startswith(f":9: limits.{name}: must be greater than 0 seconds; write e.g.")


def test_idle_timeout_zero_disables_but_negative_is_an_error(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL + "[limits]\nidle_timeout_s = 0\n"))
    assert config.limits.idle_timeout_s == 0.0
    text = MINIMAL + "\n[limits]\nidle_timeout_s = -1\n"
    assert load_error(tmp_path, text) == (
        ":9: limits.idle_timeout_s: must not be negative; use 0 to disable it"
    )


def test_drain_accept_s_defaults_to_0_and_stays_below_graceful_timeout_s(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).limits.drain_accept_s == 0.0
    text = MINIMAL + "[limits]\ngraceful_timeout_s = 10\ndrain_accept_s = 2.5\n"
    assert load_config(write(tmp_path, text)).limits.drain_accept_s == 2.5
    text = MINIMAL + "\n[limits]\ngraceful_timeout_s = 5\ndrain_accept_s = 5\n"
    assert load_error(tmp_path, text) == (
        ":10: limits.drain_accept_s: must be below graceful_timeout_s (5): the drain ends at "
        "graceful_timeout_s, accepting included"
    )
    text = MINIMAL + "\n[limits]\ndrain_accept_s = -1\n"
    assert load_error(tmp_path, text) == (
        ":9: limits.drain_accept_s: must not be negative; use 0 to disable it"
    )


def test_timeouts_are_finite(tmp_path: Path) -> None:
    text = MINIMAL + "\n[limits]\ngraceful_timeout_s = nan\n"
    assert load_error(tmp_path, text).startswith(
        ":9: limits.graceful_timeout_s: must be a finite number of seconds;"
    )


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("max_concurrent_streams", 1, 65535),
        ("stream_window_bytes", 65535, 2**31 - 1),
        ("max_header_list_bytes", 1024, 16 * 1024 * 1024),
        ("max_rejection_body_bytes", 0, 16 * 1024 * 1024),
        ("max_connections_per_client", 0, 1_000_000),
        ("max_tunnels_per_client", 0, 1_000_000),
    ],
)
def test_integer_limit_ranges(tmp_path: Path, name: str, low: int, high: int) -> None:
    for good in (low, high):
        config = load_config(write(tmp_path, MINIMAL + f"[limits]\n{name} = {good}\n"))
        assert getattr(config.limits, name) == good
    for bad in (low - 1, high + 1):
        text = MINIMAL + f"\n[limits]\n{name} = {bad}\n"
        assert load_error(tmp_path, text) == (
            f":9: limits.{name}: {bad} is out of range; use a value from {low} to {high}"
        )


def test_per_client_caps_default_to_a_tenth_of_the_listener_and_0_lifts_them(
    tmp_path: Path,
) -> None:
    assert (Limits().connections_per_client(), Limits().tunnels_per_client()) == (1000, 1000)
    small = Limits(max_connections=5)
    assert (small.connections_per_client(), small.tunnels_per_client()) == (1, 1)
    text = MINIMAL + "[limits]\nmax_connections_per_client = 0\nmax_tunnels_per_client = 7\n"
    limits = load_config(write(tmp_path, text)).limits
    assert (limits.connections_per_client(), limits.tunnels_per_client()) == (0, 7)
    text = MINIMAL + '\n[limits]\nmax_tunnels_per_client = "many"\n'
    assert load_error(tmp_path, text) == (
        ":9: limits.max_tunnels_per_client: must be an integer, not a string; "
        "write e.g. max_tunnels_per_client = 100"
    )


def test_limits_not_a_table(tmp_path: Path) -> None:
    text = "limits = 5\n" + MINIMAL
    assert (
        load_error(tmp_path, text) == ":1: limits: must be a table, not an integer; write [limits]"
    )


def test_error_lines_with_inline_tables(tmp_path: Path) -> None:
    text = """\
    listener = [
      { bind = "127.0.0.1:8080", tls = { cert = "nope.pem", key = "nope.pem" } },
    ]
    route = [{ path = "/", backend = "http://127.0.0.1:9000" }]
    """
    message = load_error(tmp_path, text)
    assert message.startswith(":1: listener[0].tls.cert: file not found: ")


def test_error_lines_with_dotted_keys_and_quotes(tmp_path: Path) -> None:
    text = MINIMAL + '\n[ "limits" ]\n"idle_timeout_s" = 1\n  limits_x = 2 # comment\n'
    assert load_error(tmp_path, text) == (
        ":10: limits.limits_x: unknown key; known keys: connect_timeout_s, handshake_timeout_s, "
        "client_handshake_timeout_s, idle_timeout_s, max_concurrent_streams, "
        "stream_window_bytes, max_header_list_bytes, max_rejection_body_bytes, "
        "graceful_timeout_s, drain_accept_s, idle_connection_timeout_s, send_timeout_s, "
        "max_connections, max_connections_per_client, max_tunnels_per_client, max_stream_resets, "
        "stream_reset_window_s, max_empty_frames, http_idle_timeout_s, "
        "backend_keepalive_s, backend_max_idle, half_closed_timeout_s, close_wait_s, "
        "drain_close_websockets"
    )


def test_drain_close_keys(tmp_path: Path) -> None:
    assert (Limits().close_wait_s, Limits().drain_close_websockets) == (2.0, False)
    text = MINIMAL + "[limits]\nclose_wait_s = 0.5\ndrain_close_websockets = true\n"
    limits = load_config(write(tmp_path, text)).limits
    assert (limits.close_wait_s, limits.drain_close_websockets) == (0.5, True)
    assert load_error(tmp_path, MINIMAL + "\n[limits]\ndrain_close_websockets = 1\n") == (
        ":9: limits.drain_close_websockets: must be true or false, not an integer; "
        "write it unquoted"
    )
    assert load_error(tmp_path, MINIMAL + "\n[limits]\nclose_wait_s = 0\n").startswith(
        ":9: limits.close_wait_s: must be greater than 0 seconds;"
    )


def test_no_line_without_text() -> None:
    data = {"listener": [{"bind": "127.0.0.1"}], "route": []}
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.toml")
    assert str(info.value) == (
        "x.toml: listener[0].bind: '127.0.0.1' has no port; write host:port, e.g. 127.0.0.1:8443"
    )


# --- files ----------------------------------------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = MINIMAL + "\n[limits]\nidle_timeout_s = \n"
    assert load_error(tmp_path, text) == (
        ":9: invalid TOML: Invalid value (column 18); fix the syntax"
    )


def test_toml_syntax_error_in_a_table_header(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "[limits\n")
    assert message.startswith(":7: invalid TOML: ")
    assert message.endswith("; fix the syntax")


def test_toml_syntax_error_at_end_of_document(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + 'x = "unterminated')
    assert message == ":7: invalid TOML: Unterminated string at the end of the file; fix the syntax"


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    text = MINIMAL.replace('bind = "127.0.0.1:8080"', 'bind = "a:1"\nbind = "b:2"')
    assert load_error(tmp_path, text).startswith(":3: invalid TOML: Cannot overwrite a value")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_bytes(MINIMAL.encode() + b"# \xff\n")
    with pytest.raises(ConfigError, match=r"proxy\.toml:7: not valid UTF-8; save the file"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: cannot read the config file (No such file or directory); check the path"
    )


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the config file"):
        load_config(str(tmp_path))


def test_tls_cert_missing(tmp_path: Path) -> None:
    text = MINIMAL.replace("[[route]]", '[listener.tls]\ncert = "c.pem"\nkey = "k.pem"\n[[route]]')
    assert load_error(tmp_path, text) == (
        f":5: listener[0].tls.cert: file not found: {tmp_path / 'c.pem'}; "
        f"check the path (relative paths start from {tmp_path})"
    )


def test_tls_key_missing(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    text = MINIMAL.replace(
        "[[route]]", '[listener.tls]\ncert = "cert.pem"\nkey = "/nonexistent/k.pem"\n[[route]]'
    )
    assert load_error(tmp_path, text).startswith(
        ":6: listener[0].tls.key: file not found: /nonexistent/k.pem; check the path"
    )


def test_tls_file_is_a_directory(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    (tmp_path / "dir").mkdir()
    text = MINIMAL.replace("[[route]]", '[listener.tls]\ncert = "dir"\nkey = "key.pem"\n[[route]]')
    assert load_error(tmp_path, text) == (
        f":5: listener[0].tls.cert: {tmp_path / 'dir'} is not a file; give the path of a PEM file"
    )


def test_tls_file_not_readable(
    tmp_path: Path, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tls_files[1].chmod(0)
    if os.geteuid() == 0:  # root reads anything; let access() answer as for anyone else
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tls_files[1])
    text = MINIMAL.replace(
        "[[route]]", '[listener.tls]\ncert = "cert.pem"\nkey = "key.pem"\n[[route]]'
    )
    assert load_error(tmp_path, text) == (
        f":6: listener[0].tls.key: {tls_files[1]} is not readable; check its permissions"
    )


def test_empty_tls_path(tmp_path: Path) -> None:
    text = MINIMAL.replace("[[route]]", '[listener.tls]\ncert = ""\nkey = ""\n[[route]]')
    assert load_error(tmp_path, text) == (
        ':5: listener[0].tls.cert: is empty; write cert = "cert.pem"'
    )


# --- the SSL context ------------------------------------------------------------------


def test_build_server_ssl_context(tls_files: tuple[Path, Path]) -> None:
    context = build_server_ssl_context(TLSConfig(*tls_files))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.verify_mode == ssl.CERT_NONE
    # ALPN has no getter: offer h2 to it from a client and see what is chosen.
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.set_alpn_protocols(["http/1.1", "h2"])
    assert _handshake(context, client) == "h2"
    client.set_alpn_protocols(["http/1.1"])
    assert _handshake(context, client) == "http/1.1"


def _handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> str | None:
    """Run a TLS handshake in memory; return the negotiated ALPN protocol."""
    _, server = handshake_in_memory(server_context, client_context, "localhost")
    return server.selected_alpn_protocol()


# Certificate and key problems (junk PEM, encrypted or mismatched keys): test_certificates.py.


@pytest.mark.parametrize(
    ("written", "parsed"), [('"auto"', "auto"), ("true", True), ("false", False)]
)
def test_enable_connect_protocol_values(tmp_path: Path, written: str, parsed: object) -> None:
    text = f'[[listener]]\nbind = "127.0.0.1:0"\nenable_connect_protocol = {written}\n'
    text += '[[route]]\npath = "/"\nbackend = "http://127.0.0.1:1"\n'
    config = load_config(write(tmp_path, text))
    assert config.listeners[0].enable_connect_protocol == parsed


def test_enable_connect_protocol_rejects_other_values(tmp_path: Path) -> None:
    text = '[[listener]]\nbind = "127.0.0.1:0"\nenable_connect_protocol = "yes"\n'
    text += '[[route]]\npath = "/"\nbackend = "http://127.0.0.1:1"\n'
    assert load_error(tmp_path, text) == (
        ':3: listener[0].enable_connect_protocol: must be "auto", true or false, not a string; '
        'write e.g. enable_connect_protocol = "auto"'
    )


@pytest.mark.parametrize(
    ("setting", "websocket_routes", "advertised"),
    [
        ("auto", [True, False], True),
        ("auto", [False, False], False),
        (True, [False], True),
        (False, [True], False),
    ],
)
def test_advertisement_policy(
    setting: object, websocket_routes: list[bool], advertised: bool
) -> None:
    from h2ws_proxy.config import advertises_connect_protocol

    listener = ListenerConfig(
        bind=parse_socket_address("127.0.0.1:0"), enable_connect_protocol=setting
    )  # type: ignore[arg-type]
    routes = tuple(
        RouteConfig(
            path=f"/r{i}",
            backend=BackendGroup.of(parse_backend("http://127.0.0.1:1")),
            websocket=flag,
        )
        for i, flag in enumerate(websocket_routes)
    )
    config = ProxyConfig(listeners=(listener,), routes=routes)
    assert advertises_connect_protocol(config, listener) is advertised


# --- workers --------------------------------------------------------------------------


def test_workers_default_to_one(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).workers == 1


def test_workers_take_an_integer(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "workers = 4\n" + MINIMAL)).workers == 4


@pytest.mark.parametrize(("cpus", "workers"), [(2, 2), (None, 1), (200, 64)])
def test_workers_auto_is_one_per_cpu_up_to_64(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int | None, workers: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert load_config(write(tmp_path, 'workers = "auto"\n' + MINIMAL)).workers == workers


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "0 is out of range; use a value from 1 to 64"),
        ("65", "65 is out of range; use a value from 1 to 64"),
        ("-2", "-2 is out of range; use a value from 1 to 64"),
        ("true", 'must be an integer or "auto", not a boolean; write e.g. workers = 2'),
        ('"4"', 'must be an integer or "auto", not a string; write e.g. workers = 2'),
        ("2.0", 'must be an integer or "auto", not a float; write e.g. workers = 2'),
        ('"all"', 'must be an integer or "auto", not a string; write e.g. workers = 2'),
    ],
)
def test_bad_workers(tmp_path: Path, value: str, problem: str) -> None:
    text = "# proxy\n" + f"workers = {value}\n" + MINIMAL
    assert load_error(tmp_path, text) == f":2: workers: {problem}"


def test_workers_as_a_table_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + "\n[workers]\ncount = 2\n"
    assert load_error(tmp_path, text) == (
        ':8: workers: must be an integer or "auto", not a table; write e.g. workers = 2'
    )


@pytest.mark.parametrize("table", ["[limits]", "[admin]", "[[route]]", "[[listener]]"])
def test_workers_below_a_table_header_get_a_hint(tmp_path: Path, table: str) -> None:
    # The usual TOML trap: a top-level key written after a header lands in that table.
    text = MINIMAL + f"\n{table}\nworkers = 2\n"
    key = {"[[route]]": "route[1]", "[[listener]]": "listener[1]"}.get(table, table[1:-1])
    assert load_error(tmp_path, text) == (
        f":9: {key}.workers: is a top-level key; move it above the first [table] or [[table]] "
        "of the file"
    )


def test_workers_typo_gets_a_suggestion(tmp_path: Path) -> None:
    text = "worker = 2\n" + MINIMAL
    assert load_error(tmp_path, text) == ":1: worker: unknown key; did you mean 'workers'?"


@pytest.mark.parametrize(
    ("written", "parsed"),
    [
        (None, ("h2", "http/1.1")),
        ('["h2"]', ("h2",)),
        ('["http/1.1"]', ("http/1.1",)),
        ('["http/1.1", "h2"]', ("http/1.1", "h2")),
    ],
)
def test_listener_protocols(tmp_path: Path, written: str | None, parsed: object) -> None:
    text = '[[listener]]\nbind = "127.0.0.1:0"\n'
    text += f"protocols = {written}\n" if written else ""
    text += '[[route]]\npath = "/"\nbackend = "http://127.0.0.1:1"\n'
    assert load_config(write(tmp_path, text)).listeners[0].protocols == parsed


@pytest.mark.parametrize(
    ("written", "described"),
    [('["h3"]', '["h3"]'), ("[]", "[]"), ('["h2", "h2"]', '["h2", "h2"]'), ('"h2"', "a string")],
)
def test_listener_protocols_refuses_others(tmp_path: Path, written: str, described: str) -> None:
    text = f'[[listener]]\nbind = "127.0.0.1:0"\nprotocols = {written}\n'
    text += '[[route]]\npath = "/"\nbackend = "http://127.0.0.1:1"\n'
    assert load_error(tmp_path, text) == (
        f':3: listener[0].protocols: must list "h2", "http/1.1" or both, once each, not '
        f'{described}; write e.g. protocols = ["h2", "http/1.1"]'
    )

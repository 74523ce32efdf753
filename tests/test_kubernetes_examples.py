"""config/kubernetes/: no cluster here, so the check is that each example agrees with itself.

Each file's ConfigMap holds the proxy's config; it is loaded with the proxy's own
``load_config`` (its certificate paths mapped to test certificates) and compared with the
Deployment and Service around it: the container ports are the listener's and the admin's,
the probes ask the admin port for ``/healthz`` (liveness) and ``/readyz`` (readiness), the
Service reaches the listener, the config file is where the container reads it, and
``terminationGracePeriodSeconds`` covers the preStop sleep and the whole drain
(``graceful_timeout_s`` + ``close_wait_s``); in the sidecar, the app outlives the drain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from h2ws_proxy.config import ProxyConfig, load_config
from tests.helpers.certificates import write_certificate

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "config" / "kubernetes").glob("*.yaml"))
#: The drain's wait for Close frames after graceful_timeout_s (issue 17 item 3); its
#: default until the config has the key.
CLOSE_WAIT_S_DEFAULT = 2.0
CONFIG_DIR = "/etc/h2ws-proxy"


def _documents(path: Path) -> dict[str, dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    kinds = [doc["kind"] for doc in documents]
    assert len(set(kinds)) == len(kinds), f"{path.name}: one of each kind: {kinds}"
    return {doc["kind"]: doc for doc in documents}


def _proxy_config(config_map: dict[str, Any], tmp_path: Path) -> ProxyConfig:
    """The ConfigMap's proxy.toml, loaded as the proxy would, with certificates for the
    paths it names (the Secret's, in a cluster)."""
    text = config_map["data"]["proxy.toml"]
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    write_certificate(trustme.CA(), tls_dir, "tls", "proxy.example.com")
    (tls_dir / "tls.pem").rename(tls_dir / "tls.crt")
    path = tmp_path / "proxy.toml"
    path.write_text(text.replace(f"{CONFIG_DIR}/tls/", f"{tls_dir}/"))
    return load_config(path)


def _proxy_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (proxy,) = [c for c in containers if "h2ws-proxy" in c["image"]]
    return proxy


def _port(container: dict[str, Any], port: int | str) -> int:
    """A container port by number or by name."""
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(found)


def _pre_stop_sleep_s(container: dict[str, Any]) -> float:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    return float(command[1])


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_the_example_agrees_with_its_config(path: Path, tmp_path: Path) -> None:
    documents = _documents(path)
    config = _proxy_config(documents["ConfigMap"], tmp_path)
    assert config.admin is not None
    deployment, service = documents["Deployment"], documents["Service"]
    pod = deployment["spec"]["template"]["spec"]
    proxy = _proxy_container(deployment)

    # Ports: the listener's and the admin's, and nothing else.
    listen_port = config.listeners[0].bind.port
    assert sorted(p["containerPort"] for p in proxy["ports"]) == sorted(
        [listen_port, config.admin.bind.port]
    )
    # Probes: liveness and readiness on the admin port.
    liveness, readiness = proxy["livenessProbe"]["httpGet"], proxy["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/readyz"
    assert _port(proxy, liveness["port"]) == _port(proxy, readiness["port"])
    assert _port(proxy, readiness["port"]) == config.admin.bind.port
    # The Service reaches the listener of these pods.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert _port(proxy, service_port["targetPort"]) == listen_port
    # The config file is the ConfigMap's key, where the container reads it.
    config_arg = proxy["args"][proxy["args"].index("--config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (config_volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[config_volume]["configMap"]["name"] == documents["ConfigMap"]["metadata"]["name"]
    assert config_arg == f"{mounts[config_volume]}/proxy.toml" == f"{CONFIG_DIR}/proxy.toml"
    for listener in config.listeners:  # the certificates come from the mounted Secret
        if listener.tls is not None:
            (secret_volume,) = [n for n, v in volumes.items() if "secret" in v]
            assert mounts[secret_volume] == f"{CONFIG_DIR}/tls"
    # Time: the preStop sleep, then the whole drain, within the grace period.
    limits = config.limits
    drain_s = limits.graceful_timeout_s + getattr(limits, "close_wait_s", CLOSE_WAIT_S_DEFAULT)
    proxy_stop_s = _pre_stop_sleep_s(proxy) + drain_s
    assert pod["terminationGracePeriodSeconds"] > proxy_stop_s
    # Non-root, as the image (Dockerfile USER 10001:10001).
    security = proxy["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (10001, 10001)
    for other in pod["containers"]:
        if other is proxy:
            continue
        # A sidecar's app outlives the proxy's drain, and the proxy reaches it on loopback.
        assert _pre_stop_sleep_s(other) >= proxy_stop_s
        assert pod["terminationGracePeriodSeconds"] > _pre_stop_sleep_s(other)
        backends = {server for route in config.routes for server in route.backend.servers}
        assert {(server.host, server.port) for server in backends} == {("127.0.0.1", 9000)}


def test_both_examples_are_there() -> None:
    assert [path.name for path in EXAMPLES] == ["edge-gateway.yaml", "sidecar.yaml"]

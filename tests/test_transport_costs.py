"""What a request costs the controller (issue 17 item 5), counted, not timed: no proxy environment
read per request, the environment's CA bundle ignored as the README promises, one TLS context
per CA file for every host and connection that names it."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import requests.utils
from conftest import fast_settings

from wuremote.contract.scripts import get_script
from wuremote.inventory import HostConfig
from wuremote.lab.lab import Endpoint, Lab
from wuremote.secret import Secret
from wuremote.transport import Transport, TransportError, open_transport

TRANSPORTS = ("psrp", "winrm")


@pytest.fixture(scope="module")
def clab() -> Iterator[Lab]:
    with Lab(hosts=4, scenario="healthy", time_scale=0.001) as running:
        yield running


def transport(endpoint: Endpoint, kind: str, **overrides: Any) -> Transport:
    values: dict[str, Any] = dict(name=endpoint.name, address=endpoint.address, port=endpoint.port,
                                  scheme=endpoint.scheme, transport=kind, auth="basic", username=endpoint.username,
                                  password=Secret(endpoint.password), ca_file=endpoint.ca_file)
    values.update(overrides)
    return open_transport(HostConfig(**values), fast_settings())


def boot_info(client: Transport) -> None:
    result = client.run_step(get_script("boot-info"), {"RunId": "costs"}, timeout=10)
    assert result.exit_code == 0 and result.result is not None, result.errors


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_no_proxy_environment_is_read_per_request(clab: Lab, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[str] = []
    original = requests.utils.should_bypass_proxies

    def counted(url: str, no_proxy: Any) -> bool:
        lookups.append(url)
        return bool(original(url, no_proxy))

    monkeypatch.setattr(requests.utils, "should_bypass_proxies", counted)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # would be refused if it were ever used
    endpoint = clab.endpoints[0]
    client = transport(endpoint, kind)
    try:
        boot_info(client)  # the client library reads the environment once, as it builds its session
        lookups.clear()
        before = clab.requests_served(endpoint.name)
        for _ in range(3):
            boot_info(client)
        sent = clab.requests_served(endpoint.name) - before
    finally:
        client.close()
    assert sent >= 9 and lookups == []  # none per request


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_the_environments_ca_bundle_is_not_trusted(clab: Lab, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = clab.endpoints[1]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(endpoint.ca_file))  # the lab's CA, but not named in the inventory
    client = transport(endpoint, kind, ca_file=None)
    try:
        with pytest.raises(TransportError) as caught:
            boot_info(client)
    finally:
        client.close()
    assert caught.value.kind == "tls"


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_ca_file_is_loaded_once_for_every_host_and_connection(clab: Lab, kind: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file = str(clab.endpoints[2].ca_file)
    loads: list[Any] = []
    checks: list[str] = []
    load, exists = ssl.SSLContext.load_verify_locations, os.path.exists

    def counted_load(self: ssl.SSLContext, cafile: Any = None, *args: Any, **kwargs: Any) -> None:
        loads.append(cafile)
        load(self, cafile, *args, **kwargs)

    def counted_exists(path: Any) -> bool:
        if str(path) == ca_file:
            checks.append(str(path))
        return exists(path)

    from wuremote.transport import session

    cached = getattr(session, "tls_context", None)
    if cached is not None:
        cached.cache_clear()  # loaded by an earlier test: count this one's loads from nothing
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted_load)
    monkeypatch.setattr(os.path, "exists", counted_exists)
    clients = [transport(endpoint, kind) for endpoint in clab.endpoints[2:4]]
    try:
        for client in clients:
            boot_info(client)
            boot_info(client)
            client.reset()  # a new pool/shell; the connection is new too
            boot_info(client)
    finally:
        for client in clients:
            client.close()
    assert [str(path) for path in loads if path is not None] == [ca_file]  # two hosts, four sessions: one load
    assert checks == []  # no per-request look at the file


def test_a_short_psrp_step_costs_three_requests_every_time(clab: Lab) -> None:
    """Command, one Receive, Signal: Windows answers a short pipeline's output, its state and Done in one
    Receive (pypsrp's test_client_execute_ps.yml), so a warm short step never needs a second one."""
    endpoint = clab.endpoints[0]
    client = transport(endpoint, "psrp")
    costs = []
    try:
        boot_info(client)  # opens the pool and defines the prelude
        for index in range(20):
            before = clab.requests_served(endpoint.name)
            if index % 2:
                boot_info(client)
            else:
                action = "take" if index % 4 == 0 else "release"
                result = client.run_step(get_script("lock"), {"RunId": "costs", "Action": action}, timeout=10)
                assert result.result is not None, result.errors
            costs.append(clab.requests_served(endpoint.name) - before)
    finally:
        client.close()
    assert set(costs) == {3}, costs

"""Transports built from a Connection (not a HostConfig), and probe mode, against the lab."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_settings

from wuremote.contract.scripts import get_script
from wuremote.demo import demo_hosts
from wuremote.lab.lab import Lab
from wuremote.transport import PSRPTransport, TransportError, WinRSTransport, open_transport
from wuremote.transport.connection import Connection

TIME_SCALE = 0.001
TRANSPORTS = {"psrp": PSRPTransport, "winrm": WinRSTransport}
BUSY_FAULT = 2150859173  # "too many shells for this user": transient, so opening is tried again


def connection(lab: Lab, transport: str, **overrides: Any) -> Connection:
    """The lab's first host as a transport sees it (from the demo's inventory entry for it)."""
    return dataclasses.replace(demo_hosts(lab, transport)[0].connection, **overrides)


def test_basic_over_http_in_a_connection_is_refused_by_both_transports_before_any_request() -> None:
    with Lab(hosts=1, http=True, allow_unencrypted=True, time_scale=TIME_SCALE) as lab:
        endpoint = lab.endpoints[0]
        for kind, transport_class in TRANSPORTS.items():
            with pytest.raises(TransportError) as caught:
                transport_class(connection(lab, kind), fast_settings())
            message = str(caught.value)
            assert caught.value.kind == "config" and message.startswith(f"{endpoint.name}: ")
            assert "allow_unencrypted_basic" in message and endpoint.password not in message
        assert lab.requests_served(endpoint.name) == 0
        for kind, transport_class in TRANSPORTS.items():  # the same connection, opted in by name, is served
            transport = transport_class(connection(lab, kind, allow_unencrypted_basic=True), fast_settings())
            try:
                assert transport.run_command("hostname", timeout=5) == (0, endpoint.name)
            finally:
                transport.close()
        assert lab.requests_served(endpoint.name) > 0


def test_open_transport_takes_a_connection_and_hands_it_over(lab: Lab) -> None:
    endpoint = lab.endpoints[0]
    for kind, transport_class in TRANSPORTS.items():
        given = connection(lab, kind)
        transport = open_transport(given, fast_settings())
        try:
            assert type(transport) is transport_class and transport.connection is given  # type: ignore[attr-defined]
            assert transport.run_command("hostname", timeout=5) == (0, endpoint.name)
        finally:
            transport.close()


@pytest.mark.parametrize("kind", sorted(TRANSPORTS))
def test_a_probe_opens_once_and_the_transport_retries_again_after_it(kind: str, tmp_path: Path) -> None:
    """The host answers every request with a transient fault, so each open attempt is one request the lab counts."""
    scenario = tmp_path / "busy.toml"
    scenario.write_text('[[hosts]]\nscenario = "healthy"\nname = "busy"\ncount = 1\n'
                        f"[hosts.faults]\nhttp500_every = 1\nhttp500_code = {BUSY_FAULT}\n", encoding="utf-8")
    with Lab(scenario=scenario, time_scale=TIME_SCALE) as lab:
        endpoint = lab.endpoints[0]
        transport = open_transport(connection(lab, kind), fast_settings(open_retries=2))
        try:
            before = lab.requests_served(endpoint.name)
            with transport.probe(), pytest.raises(TransportError) as caught:
                transport.run_step(get_script("boot-info"), {"RunId": "probe"}, timeout=10)
            assert caught.value.code == BUSY_FAULT and caught.value.transient
            assert lab.requests_served(endpoint.name) - before == 1  # one attempt, so no sleep either

            before = lab.requests_served(endpoint.name)
            with pytest.raises(TransportError):
                transport.run_command("hostname", timeout=10)
            assert lab.requests_served(endpoint.name) - before == 3  # out of the block: 1 + open_retries
        finally:
            transport.close()

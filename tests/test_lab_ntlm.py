"""NTLM with message encryption on the lab, as the RAW clients (pypsrp, pywinrm) meet it.

Over plain HTTP with AllowUnencrypted off, a WinRM host takes only sealed bodies
(multipart/encrypted, HTTP-SPNEGO-session-encrypted): the listener counts what it had to
unseal and what came in the clear, so "encrypted on the wire" is what the host saw.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests
import winrm
import winrm.exceptions
from conftest import OPERATION_TIMEOUT, READ_TIMEOUT
from pypsrp.client import Client
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.shell import Process, WinRS
from pypsrp.wsman import WSMan

from wuremote.lab.lab import Endpoint, Lab


@pytest.fixture(scope="module")
def http_lab() -> Iterator[Lab]:
    with Lab(hosts=1, http=True, allow_unencrypted=False, time_scale=0.01) as running:
        yield running


@pytest.fixture(scope="module")
def ep(http_lab: Lab) -> Endpoint:
    return http_lab.endpoints[0]


def wsman(endpoint: Endpoint, *, auth: str = "ntlm", password: str | None = None, **kwargs: object) -> WSMan:
    return WSMan(endpoint.address, port=endpoint.port, username=endpoint.username,
                 password=endpoint.password if password is None else password, ssl=endpoint.scheme == "https",
                 auth=auth, cert_validation=endpoint.ca_file or False, operation_timeout=OPERATION_TIMEOUT,
                 read_timeout=READ_TIMEOUT, connection_timeout=5, reconnection_retries=0, **kwargs)  # type: ignore[arg-type]


def pywinrm(endpoint: Endpoint, password: str | None = None) -> winrm.Protocol:
    return winrm.Protocol(endpoint.url, transport="ntlm", username=endpoint.username,
                          password=endpoint.password if password is None else password,
                          server_cert_validation="validate" if endpoint.ca_file else "ignore",
                          ca_trust_path=endpoint.ca_file, operation_timeout_sec=OPERATION_TIMEOUT,
                          read_timeout_sec=READ_TIMEOUT)


def counts(lab: Lab, endpoint: Endpoint) -> tuple[int, int]:
    listener = lab.listener(endpoint.name)
    return listener.sealed_requests, listener.plain_requests


# --- both shells, sealed -----------------------------------------------------------------------
@pytest.mark.parametrize("auth", ["ntlm", "negotiate"])
def test_pypsrp_pool_over_http_is_sealed(http_lab: Lab, ep: Endpoint, auth: str) -> None:
    sealed_before, plain_before = counts(http_lab, ep)
    with RunspacePool(wsman(ep, auth=auth)) as pool:  # negotiate: NTLM inside SPNEGO, with the final token on the 200
        ps = PowerShell(pool)
        ps.add_script("hostname")
        assert ps.invoke() == [ep.name]
    sealed, plain = counts(http_lab, ep)
    assert sealed - sealed_before >= 4  # Create, Receive, Command, Receive, Signal, Delete...
    assert plain == plain_before


def test_pypsrp_winrs_over_http_is_sealed(http_lab: Lab, ep: Endpoint) -> None:
    sealed_before, plain_before = counts(http_lab, ep)
    with WinRS(wsman(ep)) as shell:
        process = Process(shell, "hostname")
        process.invoke()
        assert process.stdout.strip() == ep.name.encode()
        assert process.rc == 0
    assert counts(http_lab, ep)[0] > sealed_before and counts(http_lab, ep)[1] == plain_before


def test_pywinrm_ntlm_over_http_is_sealed_for_cmd_and_powershell(http_lab: Lab, ep: Endpoint) -> None:
    sealed_before, plain_before = counts(http_lab, ep)
    session = winrm.Session(ep.url, auth=(ep.username, ep.password), transport="ntlm")
    session.protocol = pywinrm(ep)
    result = session.run_cmd("hostname")
    assert (result.status_code, result.std_out.strip()) == (0, ep.name.encode())
    result = session.run_ps("Write-Output 'sealed'")
    assert result.std_out.strip() == b"sealed"
    assert counts(http_lab, ep)[0] - sealed_before >= 8
    assert counts(http_lab, ep)[1] == plain_before


def test_the_soap_body_is_not_readable_on_the_wire(http_lab: Lab, ep: Endpoint) -> None:
    # A sealed Create sent by hand through pypsrp's own wrapping: what crosses the socket is ciphertext.
    transport = wsman(ep)
    marker = b"wuremote-canary-body"
    seen: list[bytes] = []
    original = socket.socket.sendall

    def spy(self: socket.socket, data: bytes, *args: object) -> None:
        seen.append(bytes(data))
        return original(self, data, *args)

    socket.socket.sendall = spy  # type: ignore[method-assign]
    try:
        with pytest.raises(Exception):
            transport.transport.send(b"<s:Envelope>" + marker + b"</s:Envelope>")  # not WS-Man: the host faults
    finally:
        socket.socket.sendall = original  # type: ignore[method-assign]
        transport.close()
    wire = b"".join(seen)
    assert b"multipart/encrypted" in wire and b"HTTP-SPNEGO-session-encrypted" in wire
    assert marker not in wire


# --- refusals ----------------------------------------------------------------------------------
def test_wrong_password_is_401_for_both_clients(http_lab: Lab, ep: Endpoint) -> None:
    failures = http_lab.listener(ep.name).auth_failures
    with pytest.raises(AuthenticationError), RunspacePool(wsman(ep, password="wrong")):
        pass
    with pytest.raises(winrm.exceptions.InvalidCredentialsError):
        pywinrm(ep, password="wrong").open_shell()
    assert http_lab.listener(ep.name).auth_failures == failures + 2


def test_clear_body_after_an_ntlm_logon_is_refused_without_allow_unencrypted(http_lab: Lab, ep: Endpoint) -> None:
    plain = counts(http_lab, ep)[1]
    with pytest.raises(AuthenticationError), RunspacePool(wsman(ep, encryption="never")):  # type: ignore[arg-type]
        pass
    assert counts(http_lab, ep)[1] == plain  # the clear Create never reached the service


def test_negotiate_is_offered_next_to_basic(ep: Endpoint) -> None:
    response = requests.post(ep.url, data=b"<x/>", timeout=5)
    assert response.status_code == 401
    assert "Negotiate" in response.headers.get("WWW-Authenticate", "")
    assert "Basic" not in response.headers.get("WWW-Authenticate", "")  # plain HTTP, AllowUnencrypted off


def test_ntlm_over_https_works_unsealed_inside_tls() -> None:
    with Lab(hosts=1, time_scale=0.01) as lab:
        endpoint = lab.endpoints[0]
        client = Client(endpoint.address, port=endpoint.port, username=endpoint.username, password=endpoint.password,
                        ssl=True, auth="ntlm", cert_validation=endpoint.ca_file, operation_timeout=OPERATION_TIMEOUT,
                        read_timeout=READ_TIMEOUT, connection_timeout=5, reconnection_retries=0)
        assert client.execute_ps("hostname")[0] == endpoint.name
        sealed, plain = counts(lab, endpoint)
        assert sealed == 0 and plain > 0  # TLS carries it: no message encryption needed (encryption="auto")

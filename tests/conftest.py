"""Shared fixtures: a healthy lab, and the RAW clients (pywinrm, pypsrp) pointed at one of its hosts.

Nothing of wuremote's orchestrator sits between these clients and the lab: the tests
prove the lab speaks WS-Management as the unmodified clients expect.  Client timeouts
are short so a lab bug fails a test instead of hanging the suite.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import winrm
from pypsrp.client import Client
from pypsrp.powershell import RunspacePool
from pypsrp.wsman import WSMan

from wuremote.lab.lab import Endpoint, Lab

# Short client timeouts: a long poll ends after OPERATION_TIMEOUT seconds with the
# OperationTimeout fault, and no HTTP read waits longer than READ_TIMEOUT.
OPERATION_TIMEOUT = 2
READ_TIMEOUT = 6
TIME_SCALE = 0.01  # modelled seconds -> real seconds (Start-Sleep -Seconds 600 lasts 6 s)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A healthy lab shared by tests that leave its hosts as they found them."""
    with Lab(hosts=3, scenario="healthy", time_scale=TIME_SCALE) as running:
        yield running


@pytest.fixture(scope="session")
def endpoint(lab: Lab) -> Endpoint:
    return lab.endpoints[0]


@pytest.fixture
def fresh_lab() -> Iterator[Lab]:
    """A one-host lab of its own, for tests that reboot a host or fill its quotas."""
    with Lab(hosts=1, scenario="healthy", time_scale=TIME_SCALE) as running:
        yield running


# --- pywinrm ------------------------------------------------------------------------------
def winrm_protocol(endpoint: Endpoint, *, password: str | None = None, ca_file: str | None = None,
                   operation_timeout: int = OPERATION_TIMEOUT, read_timeout: int = READ_TIMEOUT) -> winrm.Protocol:
    kwargs: dict[str, Any] = {"server_cert_validation": "ignore"}  # plain HTTP: no certificate to check
    if endpoint.scheme == "https":
        kwargs = {"server_cert_validation": "validate", "ca_trust_path": ca_file or endpoint.ca_file}
    return winrm.Protocol(
        endpoint.url,
        transport="basic",
        username=endpoint.username,
        password=endpoint.password if password is None else password,
        operation_timeout_sec=operation_timeout,
        read_timeout_sec=read_timeout,
        **kwargs,
    )


def winrm_session(endpoint: Endpoint, **kwargs: Any) -> winrm.Session:
    """A pywinrm Session (run_cmd / run_ps) whose protocol verifies TLS against the lab's CA."""
    session = winrm.Session(endpoint.url, auth=(endpoint.username, endpoint.password), transport="basic")
    session.protocol = winrm_protocol(endpoint, **kwargs)
    return session


# --- pypsrp -------------------------------------------------------------------------------
def psrp_wsman(endpoint: Endpoint, *, password: str | None = None, ca_file: str | None = None,
               operation_timeout: int = OPERATION_TIMEOUT, read_timeout: int = READ_TIMEOUT, **kwargs: Any) -> WSMan:
    ssl = endpoint.scheme == "https"
    return WSMan(
        endpoint.address,
        port=endpoint.port,
        username=endpoint.username,
        password=endpoint.password if password is None else password,
        ssl=ssl,
        auth="basic",
        cert_validation=(ca_file or endpoint.ca_file) if ssl else False,
        operation_timeout=operation_timeout,
        read_timeout=read_timeout,
        connection_timeout=5,
        reconnection_retries=0,
        **kwargs,
    )


def psrp_pool(endpoint: Endpoint, **kwargs: Any) -> RunspacePool:
    """A RunspacePool (not opened yet: use it as a context manager)."""
    wsman_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in ("password", "ca_file", "operation_timeout", "read_timeout")}
    return RunspacePool(psrp_wsman(endpoint, **wsman_kwargs), **kwargs)


def psrp_client(endpoint: Endpoint, **kwargs: Any) -> Client:
    ssl = endpoint.scheme == "https"
    return Client(
        endpoint.address,
        port=endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        ssl=ssl,
        auth="basic",
        cert_validation=endpoint.ca_file if ssl else False,
        operation_timeout=OPERATION_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        connection_timeout=5,
        reconnection_retries=0,
        **kwargs,
    )


# --- waiting ------------------------------------------------------------------------------
def port_open(endpoint: Endpoint) -> bool:
    try:
        with socket.create_connection((endpoint.address, endpoint.port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> float:
    """Poll until `predicate()` is true; returns the time it took, fails the test after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


def edit_one_byte(payload: str) -> str:
    """The payload with one letter of the step script (just after its header) changed in case."""
    from wuremote.contract.scripts import HEADER_END

    i = payload.index(HEADER_END) + len(HEADER_END)
    while not payload[i].isascii() or not payload[i].isalpha():
        i += 1
    edited = payload[:i] + payload[i].swapcase() + payload[i + 1:]
    assert len(edited.encode()) == len(payload.encode()) and edited != payload
    return edited


# --- what the lab received ------------------------------------------------------------------
@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every wuremote payload the lab recognised (a models.Known: its text and bound parameters), both transports."""
    from wuremote.lab import models

    seen: list[Any] = []
    for name in ("recognize_psrp", "recognize_winrs"):
        original = getattr(models, name)

        def spy(*args: Any, _original: Any = original) -> Any:
            known = _original(*args)
            if known is not None:
                seen.append(known)
            return known

        monkeypatch.setattr(models, name, spy)
    return seen

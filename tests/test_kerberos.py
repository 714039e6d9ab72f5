"""Kerberos against a real MIT KDC (tests/kdc.py) on loopback: the lab's hosts accept Negotiate and
Kerberos logons from the real clients, seal every body with the Kerberos session keys over HTTP,
and both transports run steps with ``auth = "kerberos"`` and ``"negotiate"``.

Skipped, with the reason, where the KDC or the Python Kerberos modules are not installed
(``.ci/run`` installs them as root; see the README).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_settings
from kdc import Kdc, missing

from wuremote.contract.scripts import get_script
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.inventory import HostConfig
from wuremote.lab.lab import Lab
from wuremote.secret import Secret
from wuremote.transport import TransportError, open_transport

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))
PASSWORD = "Lab-kerberos-Pw1"  # lab data: the KDC's user and the lab's account share it
USER = "labadmin"


@pytest.fixture(scope="module")
def kdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kdc]:
    running = Kdc(tmp_path_factory.mktemp("kdc"), USER, PASSWORD).start()
    saved = {name: os.environ.get(name) for name in running.env}
    os.environ.update(running.env)  # the clients and the lab's acceptor (same process) read these
    try:
        yield running
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        running.stop()


@pytest.fixture(scope="module")
def klab(kdc: Kdc) -> Iterator[Lab]:
    with Lab(hosts=1, http=True, allow_unencrypted=False, time_scale=0.001, password=PASSWORD) as running:
        yield running


def transport(lab: Lab, kind: str, auth: str) -> Any:
    endpoint = lab.endpoints[0]
    return open_transport(HostConfig(name=endpoint.name, address=endpoint.address, port=endpoint.port,
                                     scheme=endpoint.scheme, transport=kind, auth=auth, username=USER,
                                     password=Secret(PASSWORD)), fast_settings())


@pytest.mark.parametrize("kind", ["psrp", "winrm"])
@pytest.mark.parametrize("auth", ["kerberos", "negotiate"])
def test_transports_run_a_step_with_kerberos_sealed_over_http(klab: Lab, kind: str, auth: str) -> None:
    listener = klab.listener(klab.endpoints[0].name)
    before = (listener.kerberos_logons, listener.sealed_requests, listener.plain_requests)
    session = transport(klab, kind, auth)
    try:
        result = session.run_step(get_script("boot-info"), {"RunId": "run-k"}, timeout=20)
    finally:
        session.close()
    assert result.exit_code == 0 and result.result is not None
    kerberos, sealed, plain = (listener.kerberos_logons - before[0], listener.sealed_requests - before[1],
                               listener.plain_requests - before[2])
    # pywinrm has no Negotiate: "negotiate" over WinRS is NTLM (transport/winrm.py), Kerberos is its own scheme
    assert (kerberos >= 1) == (auth == "kerberos" or kind == "psrp")
    assert sealed >= 3 and plain == 0


# --- a host whose clock is more than 5 minutes off --------------------------------------------------------
@pytest.fixture(scope="module")
def skewed(kdc: Kdc) -> Iterator[Lab]:
    # the clock-skew scenario's host is 5,400 s off: beyond Kerberos' 5 minutes
    with Lab(hosts=1, scenario="clock-skew", http=True, allow_unencrypted=False, time_scale=0.001,
             password=PASSWORD) as running:
        yield running


@pytest.mark.parametrize("kind, auth", [("psrp", "kerberos"), ("psrp", "negotiate"), ("winrm", "kerberos")])
def test_clock_skew_host_refuses_kerberos_and_wuremote_says_why_in_one_line(skewed: Lab, kind: str, auth: str) -> None:
    session = transport(skewed, kind, auth)
    try:
        with pytest.raises(TransportError) as info:
            session.run_command("hostname", timeout=10)
    finally:
        session.close()
    message = str(info.value)
    assert info.value.kind == "auth" and "\n" not in message
    assert "KRB_AP_ERR_SKEW" in message
    # The host's clock is read from an HTTP Date header, whole seconds (RFC 9110 §5.6.7): the skew
    # it shows is the scenario's 5,400 s, or one second less when the second turns in between.
    ahead = re.search(r"clock is (\d+) s ahead", message)
    assert ahead is not None and int(ahead.group(1)) in (5399, 5400), message
    assert 'auth = "ntlm"' in message and "fix its clock out of band" in message
    assert skewed.listener(skewed.endpoints[0].name).skew_refusals >= 1


def test_the_way_out_ntlm_reaches_the_skewed_host(skewed: Lab) -> None:
    session = transport(skewed, "psrp", "ntlm")
    try:
        assert session.run_command("hostname", timeout=10)[0] == 0
    finally:
        session.close()


# --- the mixed fleet, repaired with Kerberos ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["psrp", "winrm"])
def test_both_transports_repair_the_mixed_scenario_with_kerberos(kdc: Kdc, tmp_path: Path, kind: str) -> None:
    with Lab(scenario="mixed", hosts=13, http=True, allow_unencrypted=False, time_scale=0.002, password=PASSWORD) as lab:
        hosts = [replace(h, auth="kerberos", username=USER, ca_file=None) for h in demo_hosts(lab, kind)]
        summary = Runner(hosts, demo_options(tmp_path / "state"), subscribers=[]).run()
        kerberos_logons = sum(lab.listener(e.name).kerberos_logons for e in lab.endpoints)
        scenarios = {e.name: e.scenario for e in lab.endpoints}
    for host, scenario in scenarios.items():
        outcome, cause = summary.outcomes[host], summary.causes[host]
        if scenario == "clock-skew":
            assert outcome == "unreachable" and "KRB_AP_ERR_SKEW" in cause, cause
        elif scenario == "healthy":
            assert outcome == "healthy", cause
        elif scenario in ("wsus-unreachable", "component-store-needs-source", "disabled-services"):
            assert outcome == "needs-operator", cause
        else:
            assert outcome == "repaired", f"{host} ({scenario}): {outcome}: {cause}"
    assert kerberos_logons >= 12

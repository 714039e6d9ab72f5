"""The prelude travels once per session (issue 17): once per PSRP pool, staged once per host over WinRS.

Counted on what the lab receives: the prelude's definitions, each step's payload, the bytes
of each step's requests, and the copy staged on the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_settings

from wuremote.contract.scripts import PRELUDE_BEGIN, get_script, prelude_sha256, prelude_text
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.inventory import HostConfig
from wuremote.lab import models
from wuremote.lab.lab import Endpoint, Lab
from wuremote.secret import Secret
from wuremote.transport import Transport, TransportSettings, open_transport

PRELUDE_BYTES = len(prelude_text().encode("utf-8"))
STAGED = "c:\\programdata\\wuremote\\prelude\\{0}.ps1"


@pytest.fixture(scope="module")
def plab() -> Iterator[Lab]:
    with Lab(hosts=6, scenario="healthy", time_scale=0.001) as running:
        yield running


@pytest.fixture
def definitions(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every prelude definition a PSRP pool received (_psrp_prelude.ps1, recognised by hash)."""
    seen: list[Any] = []
    original = models.recognize_psrp

    def spy(*args: Any) -> Any:
        known = original(*args)
        if known is not None and not isinstance(known, models.Known):
            seen.append(known)
        return known

    monkeypatch.setattr(models, "recognize_psrp", spy)
    return seen


def transport(endpoint: Endpoint, kind: str, settings: TransportSettings | None = None) -> Transport:
    host = HostConfig(name=endpoint.name, address=endpoint.address, port=endpoint.port, scheme=endpoint.scheme,
                      transport=kind, auth="basic", username=endpoint.username, password=Secret(endpoint.password),
                      ca_file=endpoint.ca_file)
    return open_transport(host, settings or fast_settings())


def step_bytes(lab: Lab, endpoint: Endpoint, client: Transport, step: str = "boot-info") -> int:
    """Request bytes one step cost, as the lab received them; the step must succeed."""
    before = lab.bytes_received(endpoint.name)
    result = client.run_step(get_script(step), {"RunId": "prelude-once"}, timeout=10)
    assert result.exit_code == 0 and result.result is not None, result.errors
    return lab.bytes_received(endpoint.name) - before


# --- PSRP: once per pool -------------------------------------------------------------------------
def test_psrp_sends_the_prelude_once_per_pool(plab: Lab, received: list[Any], definitions: list[Any]) -> None:
    endpoint = plab.endpoints[0]
    client = transport(endpoint, "psrp")
    try:
        first = step_bytes(plab, endpoint, client)
        step_bytes(plab, endpoint, client, "diagnose")
        later = [step_bytes(plab, endpoint, client), step_bytes(plab, endpoint, client)]
    finally:
        client.close()
    assert len(definitions) == 1  # one definition, with the first step, for all three
    assert all(PRELUDE_BEGIN not in known.text for known in received)  # no step carried it inlined
    assert first > PRELUDE_BYTES
    assert all(spent < PRELUDE_BYTES // 2 for spent in later), later


def test_psrp_defines_the_prelude_again_on_a_new_pool(plab: Lab, definitions: list[Any]) -> None:
    endpoint = plab.endpoints[1]
    client = transport(endpoint, "psrp")
    try:
        step_bytes(plab, endpoint, client)
        step_bytes(plab, endpoint, client)
        client.reset()  # the pool is gone (a reconnect): the next one starts without the prelude
        again = step_bytes(plab, endpoint, client)
    finally:
        client.close()
    assert len(definitions) == 2 and again > PRELUDE_BYTES


def test_psrp_a_recycled_pool_gets_the_prelude_again(plab: Lab, definitions: list[Any]) -> None:
    endpoint = plab.endpoints[2]
    client = transport(endpoint, "psrp", fast_settings(commands_per_session=2))
    try:
        for _ in range(5):  # pools of 2 operations: 3 pools
            step_bytes(plab, endpoint, client)
    finally:
        client.close()
    assert len(definitions) == 3


# --- WinRS: staged once per host, checked by hash ------------------------------------------------
def staged_copy(lab: Lab, endpoint: Endpoint) -> bytes | None:
    files = lab.host(endpoint.name).state.files
    return lab.call(lambda: files.get(STAGED.format(prelude_sha256())))


def test_winrs_stages_the_prelude_once_and_later_steps_load_it_by_hash(plab: Lab, received: list[Any]) -> None:
    endpoint = plab.endpoints[3]
    client = transport(endpoint, "winrm")
    try:
        first = step_bytes(plab, endpoint, client)
        step_bytes(plab, endpoint, client, "diagnose")
        later = [step_bytes(plab, endpoint, client)]
        client.reset()  # a new shell: the copy on the host still serves
        later.append(step_bytes(plab, endpoint, client))
    finally:
        client.close()
    assert staged_copy(plab, endpoint) == prelude_text().encode("utf-8")
    assert all(PRELUDE_BEGIN not in known.text for known in received)
    assert first > PRELUDE_BYTES
    assert all(spent < PRELUDE_BYTES // 2 for spent in later), later


@pytest.mark.parametrize("change", ["tampered", "deleted"])
def test_winrs_a_changed_staged_prelude_is_not_run_and_the_step_is_sent_with_it(plab: Lab, change: str) -> None:
    endpoint = plab.endpoints[4 if change == "tampered" else 5]
    files = plab.host(endpoint.name).state.files
    path = STAGED.format(prelude_sha256())
    client = transport(endpoint, "winrm")
    try:
        step_bytes(plab, endpoint, client)
        if change == "tampered":
            plab.call(lambda: files.__setitem__(path, b"Restart-Computer -Force\n" + files[path]))
        else:
            plab.call(lambda: files.pop(path))
        ran_before = list(plab.host(endpoint.name).state.scripts_run)
        spent = step_bytes(plab, endpoint, client)  # refused by the bootstrap's hash check, then sent with it
        ran = plab.host(endpoint.name).state.scripts_run[len(ran_before):]
        later = step_bytes(plab, endpoint, client)
    finally:
        client.close()
    assert ran == ["boot-info"]  # the step ran once, on the prelude it carried: never on the changed copy
    assert spent > PRELUDE_BYTES  # the second send carried the prelude
    assert staged_copy(plab, endpoint) == prelude_text().encode("utf-8")  # and staged it afresh
    assert later < PRELUDE_BYTES // 2


# --- a detached step's start: the body alone where the session holds the prelude ----------------
@pytest.mark.parametrize("kind", ["psrp", "winrm"])
def test_a_detached_start_sends_the_prelude_only_where_the_session_does_not_hold_it(
        tmp_path: Path, kind: str, received: list[Any]) -> None:
    """Over PSRP the pool's runspace keeps the prelude's text, so detached-start gets the step's body and
    composes the payload on the host (checked against the payload's SHA-256); a WinRS step's
    powershell.exe keeps nothing, so the payload goes whole there.  verify passing shows the composed
    payload was the controller's to the byte: a mismatch is refused before anything is staged."""
    with Lab(scenario="healthy", hosts=1, time_scale=0.002) as lab:
        summary = Runner(demo_hosts(lab, transport=kind), demo_options(tmp_path)).run()
    assert list(summary.outcomes.values()) == ["healthy"], summary.causes
    starts = [known for known in received if "# name: detached-start\n" in known.text[:200]]
    assert starts  # verify runs detached
    for known in starts:
        if kind == "psrp":
            assert "Payload" not in known.params and PRELUDE_BEGIN not in known.params["Body"]
            assert known.params["PreludeSha256"] == prelude_sha256()
            assert len(known.params["Body"].encode("utf-8")) < PRELUDE_BYTES // 2
        else:
            assert PRELUDE_BEGIN in known.params["Payload"] and "Body" not in known.params

"""Both transports (PSRP over pypsrp, WinRS over pywinrm) end to end against the lab."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import edit_one_byte, fast_settings, psrp_pool, refused_port, wait_for
from pypsrp.host import PSHost
from pypsrp.powershell import PowerShell

from wuremote.contract.scripts import get_script
from wuremote.inventory import HostConfig
from wuremote.lab.lab import Endpoint, Lab
from wuremote.secret import Secret
from wuremote.transport import StreamRecord, Transport, TransportError, TransportSettings, open_transport
from wuremote.transport.psrp import progress_text, to_plain

TRANSPORTS = ("psrp", "winrm")
TIME_SCALE = 0.001
WRONG_PASSWORD = "Lab-wrongwrongwrongwr"


@pytest.fixture(scope="module")
def tlab() -> Iterator[Lab]:
    with Lab(hosts=2, scenario="healthy", time_scale=TIME_SCALE) as running:
        yield running


def config(endpoint: Endpoint, transport: str, **overrides: Any) -> HostConfig:
    values: dict[str, Any] = dict(
        name=endpoint.name, address=endpoint.address, port=endpoint.port, scheme=endpoint.scheme,
        transport=transport, auth="basic", username=endpoint.username,
        password=Secret(endpoint.password), ca_file=endpoint.ca_file,
    )
    values.update(overrides)
    return HostConfig(**values)


@pytest.fixture
def connect() -> Iterator[Any]:
    """Open transports for a test and close them all after it, whatever happened."""
    opened: list[Transport] = []

    def make(endpoint: Endpoint, transport: str, settings: TransportSettings | None = None, **overrides: Any) -> Transport:
        opened.append(open_transport(config(endpoint, transport, **overrides), settings or fast_settings()))
        return opened[-1]

    yield make
    for transport in opened:
        transport.close()


def live_connections(lab: Lab, name: str) -> tuple[int, int]:
    """(runspace pools, WinRS shells) the lab host holds right now."""
    service = lab.hosts[name].service
    return lab.call(lambda: (len(service.psrp.pools), len(service.winrs.shells)))


def failure(call: Any, *args: Any, **kwargs: Any) -> TransportError:
    with pytest.raises(TransportError) as caught:
        call(*args, **kwargs)
    return caught.value


def free_port() -> int:
    return refused_port()  # kept bound: no other xdist worker's lab can be given it meanwhile


# --- steps and commands ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", TRANSPORTS)
def test_boot_info_result_exit_code_and_live_streams(tlab: Lab, connect: Any, kind: str) -> None:
    endpoint = tlab.endpoints[0]
    seen: list[StreamRecord] = []
    result = connect(endpoint, kind).run_step(get_script("boot-info"), {"RunId": "run-1"}, timeout=10, on_stream=seen.append)
    assert result.exit_code == 0 and result.status == "ok" and result.errors == []
    assert result.result is not None and result.result["step"] == "boot-info"
    last_boot = tlab.host(endpoint.name).state.last_boot
    assert result.facts["last_boot_utc"].startswith(last_boot.strftime("%Y-%m-%dT%H:%M:%S"))
    assert result.facts["pending_reboot"] == []
    assert seen and seen == result.streams  # the live view saw every kept record as it came
    assert result.host == endpoint.name and result.step == "boot-info" and result.duration > 0


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_parameters_reach_the_host_only_as_data(tlab: Lab, connect: Any, kind: str, received: list[Any]) -> None:
    hostile = "it's \"quoted\" $(Restart-Computer -Force); `whoami` & del C:\\*\nsecond line ünïcødé ✓ 日本"
    script = get_script("boot-info")
    result = connect(tlab.endpoints[0], kind).run_step(script, {"RunId": hostile}, timeout=10)
    assert result.exit_code == 0 and result.result is not None and result.result["status"] == "ok"
    [known] = received
    assert known.text == script.session_payload()  # the script bytes are the shipped payload, untouched
    assert known.params["RunId"] == hostile
    assert tlab.host(tlab.endpoints[0].name).state.reboots == 0


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_exit_codes_and_reset_between_commands(tlab: Lab, connect: Any, kind: str) -> None:
    transport = connect(tlab.endpoints[0], kind)
    assert transport.run_command("exit 3", timeout=5) == (3, "")
    assert transport.run_command("hostname", timeout=5) == (0, tlab.endpoints[0].name)  # exit 3 did not stick


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_script_that_breaks_the_contract_gives_no_result_and_says_why(tlab: Lab, connect: Any, kind: str) -> None:
    shipped = get_script("boot-info")
    edited = dataclasses.replace(shipped, text=edit_one_byte(shipped.text))  # the lab refuses unknown scripts
    result = connect(tlab.endpoints[0], kind).run_step(edited, {"RunId": "run-x"}, timeout=10)
    assert result.result is None and result.exit_code == 1 and result.status == "failed"
    assert any("no model for script 'boot-info'" in e for e in result.errors)  # WinRS: decoded from CLIXML
    assert not any("_x000D_" in e or "<S " in e for e in result.errors)
    assert any("broke the script contract" in e for e in result.errors)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_sixty_steps_on_one_connection_stay_within_the_quotas(tlab: Lab, connect: Any, kind: str) -> None:
    endpoint = tlab.endpoints[1]
    transport = connect(endpoint, kind)
    for i in range(60):
        result = transport.run_step(get_script("boot-info"), {"RunId": f"run-{i}"}, timeout=10)
        assert result.exit_code == 0 and result.result is not None
    assert live_connections(tlab, endpoint.name) == ((1, 0) if kind == "psrp" else (0, 1))
    service = tlab.hosts[endpoint.name].service
    leftover = tlab.call(lambda: sum(len(p.pipes) for p in service.psrp.pools.values())
                         + sum(len(s.commands) for s in service.winrs.shells.values()))
    assert leftover == 0  # every pipeline/command was closed on the host
    transport.close()
    assert live_connections(tlab, endpoint.name) == (0, 0)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_forty_transports_opened_and_closed_in_a_row(tlab: Lab, kind: str) -> None:
    """30 WinRS shells / 25 pools per user is the host's quota: closing must delete them."""
    endpoint = tlab.endpoints[1]
    for _ in range(40):
        transport = open_transport(config(endpoint, kind), fast_settings())
        try:
            assert transport.run_command("hostname", timeout=5) == (0, endpoint.name)
        finally:
            transport.close()
    assert live_connections(tlab, endpoint.name) == (0, 0)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_output_is_kept_up_to_the_cap(tlab: Lab, connect: Any, kind: str) -> None:
    """The lab's vocabulary has no loop, so the cap is scaled down instead of the output up."""
    words = " ".join(["x" * 99] * 50)  # `echo` of 5000 bytes: cmd's built-in and PowerShell's alias
    transport = connect(tlab.endpoints[0], kind, fast_settings(output_cap=1000))
    code, text = transport.run_command(f"echo {words}", timeout=5)
    assert code == 0 and text.startswith("x" * 99)
    assert 900 < len(text.replace("\n", "").encode()) <= 1000  # PSRP keeps 10 of 50 lines, WinRS the head of one

    tiny = connect(tlab.endpoints[0], kind, fast_settings(output_cap=10))
    result = tiny.run_step(get_script("boot-info"), {"RunId": "run-cap"}, timeout=10)
    assert result.result is not None and result.result["status"] == "ok"  # the result survives the cap
    assert sum(len(r.text.encode()) for r in result.streams) <= 10 and result.truncated_bytes > 100


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_deadline_passing_is_a_timeout_and_the_connection_stays_usable(tlab: Lab, connect: Any, kind: str) -> None:
    transport = connect(tlab.endpoints[0], kind)
    sleep = "Start-Sleep -Seconds 60000" if kind == "psrp" else 'powershell -Command "Start-Sleep -Seconds 60000"'
    error = failure(transport.run_command, sleep, timeout=0.5)
    assert error.kind == "timeout" and "did not finish within 0.5 s" in str(error)
    assert tlab.endpoints[0].password not in str(error) + repr(error)
    assert transport.run_command("hostname", timeout=5) == (0, tlab.endpoints[0].name)


def test_many_transports_side_by_side_in_threads(tlab: Lab, connect: Any) -> None:
    transports = [connect(endpoint, kind) for endpoint in tlab.endpoints for kind in TRANSPORTS]

    def ten_steps(transport: Transport) -> list[str]:
        return [transport.run_step(get_script("boot-info"), {"RunId": f"t{i}"}, timeout=10).status for i in range(10)]

    with ThreadPoolExecutor(len(transports)) as pool:
        statuses = list(pool.map(ten_steps, transports))
    assert statuses == [["ok"] * 10] * len(transports)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_environment_proxy_is_ignored_unless_the_inventory_sets_one(tlab: Lab, connect: Any, kind: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert connect(tlab.endpoints[0], kind).run_command("hostname", timeout=5) == (0, tlab.endpoints[0].name)
    error = failure(connect(tlab.endpoints[0], kind, proxy=dead_proxy).run_command, "hostname", timeout=5)
    assert error.kind in ("unreachable", "lost")  # the inventory's proxy is used, and it is down


# --- failures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", TRANSPORTS)
def test_wrong_password_is_auth_after_one_request(tlab: Lab, connect: Any, kind: str) -> None:
    endpoint = tlab.endpoints[0]
    before = tlab.requests_served(endpoint.name)
    error = failure(connect(endpoint, kind, password=Secret(WRONG_PASSWORD)).run_command, "hostname", timeout=5)
    assert error.kind == "auth" and not error.transient
    assert str(error) == f"{endpoint.name}: authentication failed for user {endpoint.username} (wrong password or expired account)"
    assert tlab.requests_served(endpoint.name) - before == 1  # never retried


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_untrusted_certificate_is_tls(tlab: Lab, connect: Any, kind: str) -> None:
    error = failure(connect(tlab.endpoints[0], kind, ca_file=None).run_command, "hostname", timeout=5)
    assert error.kind == "tls" and tlab.endpoints[0].name in str(error)
    assert "ca_file" in str(error) and "cert_validation" in str(error)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_closed_port_is_unreachable(tlab: Lab, connect: Any, kind: str) -> None:
    error = failure(connect(tlab.endpoints[0], kind, port=free_port()).run_command, "hostname", timeout=5)
    assert error.kind == "unreachable" and error.transient


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_basic_over_http_is_refused_before_any_request_unless_opted_in(kind: str) -> None:
    with Lab(hosts=1, http=True, allow_unencrypted=True, time_scale=TIME_SCALE) as lab:
        endpoint = lab.endpoints[0]
        error = failure(open_transport, config(endpoint, kind), fast_settings())
        assert error.kind == "config"
        assert endpoint.name in str(error) and "allow_unencrypted_basic" in str(error) and "\n" not in str(error)
        assert lab.requests_served(endpoint.name) == 0
        transport = open_transport(config(endpoint, kind, allow_unencrypted_basic=True), fast_settings())
        try:
            assert transport.run_command("hostname", timeout=5) == (0, endpoint.name)
        finally:
            transport.close()


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_reboot_loses_the_connection_and_a_fresh_one_follows(kind: str) -> None:
    with Lab(hosts=1, time_scale=TIME_SCALE) as lab:
        endpoint = lab.endpoints[0]
        host = lab.host(endpoint.name)
        transport = open_transport(config(endpoint, kind), fast_settings())
        try:
            before = transport.run_step(get_script("boot-info"), {"RunId": "r"}, timeout=10).facts["last_boot_utc"]
            assert lab.call(lambda: host.request_reboot())
            wait_for(lambda: host.state.reboots == 1 and lab.call(host.up.is_set), timeout=10)
            error = failure(transport.run_step, get_script("boot-info"), {"RunId": "r"}, timeout=10)
            assert error.kind in ("lost", "unreachable") and error.transient  # never re-sent on its own
            after = transport.run_step(get_script("boot-info"), {"RunId": "r"}, timeout=10).facts["last_boot_utc"]
            assert after != before
            assert live_connections(lab, endpoint.name) == ((1, 0) if kind == "psrp" else (0, 1))
        finally:
            transport.close()


def test_no_transport_error_or_repr_holds_a_password(tlab: Lab, connect: Any) -> None:
    endpoint = tlab.endpoints[0]
    errors: list[TransportError] = []
    transports: list[Transport] = []
    for kind in TRANSPORTS:
        cases: list[dict[str, Any]] = [{"password": Secret(WRONG_PASSWORD)}, {"ca_file": None}, {"port": free_port()}]
        for overrides in cases:
            transports.append(connect(endpoint, kind, **overrides))
            errors.append(failure(transports[-1].run_command, "hostname", timeout=5))
        errors.append(failure(open_transport, config(endpoint, kind, scheme="http"), fast_settings()))
    assert {e.kind for e in errors} == {"auth", "tls", "unreachable", "config"}  # timeout: see its own test
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(t) for t in transports]
    for text in texts:
        assert endpoint.password not in text and WRONG_PASSWORD not in text
        assert "Lab-" not in text


# --- what the PSRP records become ------------------------------------------------------------------
def test_psrp_records_as_plain_data_and_progress_text(tlab: Lab) -> None:
    """Real pypsrp-deserialized objects from the lab: nested properties become dicts, progress reads '45% ...'."""
    with psrp_pool(tlab.endpoints[0], host=PSHost(None, None, False, "t", None, None, "1.0")) as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-Service bits\nWrite-Progress -Activity 'DISM' -Status 'Repairing' -PercentComplete 45\n"
                      "Write-Progress -Activity 'Scanning' -Status 'Starting'")
        [service] = ps.invoke()
        assert to_plain(service) == {"Name": "bits", "DisplayName": "Background Intelligent Transfer Service",
                                          "Status": "Running", "StartType": "Manual"}
        assert [progress_text(p) for p in ps.streams.progress] == ["45% Repairing", "Starting"]


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_pool_or_shell_left_open_is_deleted_by_id_from_a_new_connection(tlab: Lab, connect: Any, kind: str) -> None:
    endpoint = tlab.endpoints[1]
    before = sum(live_connections(tlab, endpoint.name))
    abandoned = connect(endpoint, kind)
    abandoned.run_command("hostname", timeout=10)
    session = abandoned.session_id
    assert session and sum(live_connections(tlab, endpoint.name)) == before + 1
    cleaner = connect(endpoint, kind)
    assert cleaner.close_orphan(session) is True
    assert sum(live_connections(tlab, endpoint.name)) == before
    assert cleaner.close_orphan(session) is False  # already gone: said so, not raised

"""Shared fixtures: a healthy lab, and the RAW clients (pywinrm, pypsrp) pointed at one of its hosts.

Nothing of wuremote's orchestrator sits between these clients and the lab: the tests
prove the lab speaks WS-Management as the unmodified clients expect.  Client timeouts
are short so a lab bug fails a test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import winrm
from hypothesis import HealthCheck, settings
from pypsrp.client import Client
from pypsrp.host import PSHost
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from wuremote.contract.scripts import get_script, sha256_text
from wuremote.lab.host import Host, HostState
from wuremote.lab.lab import Endpoint, Lab

# --- hypothesis ---------------------------------------------------------------------------
# CI (CI=true, as .ci/run is run) draws the same examples on every run and every xdist worker,
# so a red property test is a real finding that reproduces, never a lucky draw; a developer's
# run keeps exploring new examples (and replays the failures hypothesis saved).
# HYPOTHESIS_PROFILE=ci|dev picks one by hand.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI", "").lower() not in ("", "0", "false", "no") else "dev"))

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


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.01, what: str = "") -> float:
    """Poll until `predicate()` is true; returns the time it took, fails the test after `timeout`.

    The one way a test waits for something to happen: the bound is generous (a loaded CI
    machine is slow, a hang still fails), and no assertion depends on how long it took.
    """
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what or getattr(predicate, '__name__', 'condition')}: not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


class HeldClock:
    """A lab host's modelled time, held by the test (see `held_clock`)."""

    def __init__(self, lab: Lab, host: Host, when: Callable[[], bool]) -> None:
        self.lab, self.host, self.when = lab, host, when
        self.waits: list[float] = []  # modelled seconds of each wait held, in the order they began
        self._gate = asyncio.Event()
        self._holding = True

    async def sleep(self, model_seconds: float) -> None:
        gate = self._gate if self._holding and self.when() else None
        if gate is not None:
            self.waits.append(model_seconds)
        await type(self.host).sleep(self.host, model_seconds)  # the modelled time still passes
        if gate is not None:
            await gate.wait()

    def release(self, action: Callable[[], Any] | None = None) -> Any:
        """End every held wait that has begun (once its modelled time is over); later ones are held
        again.  `action` runs on the lab's loop in the same step, before any released wait goes on."""

        def release_on_the_loop() -> Any:
            result = action() if action is not None else None
            self._gate.set()
            self._gate = asyncio.Event()
            return result

        return self.lab.call(release_on_the_loop)

    def stop(self) -> None:
        def stop_on_the_loop() -> None:
            self._holding = False
            self._gate.set()

        self.lab.call(stop_on_the_loop)


@contextmanager
def held_clock(lab: Lab, host: Host, when: Callable[[], bool] = lambda: True) -> Iterator[HeldClock]:
    """Hold a lab host's modelled time: each wait of its models (a step's duration, a restart's
    delay, a boot) that begins while `when()` is true (asked on the lab's loop) ends only after
    its own modelled time AND the test's next `clock.release()`; leaving the block lets all go.

    A test then finds the host mid-way (a restart scheduled, the host down, a step part-done)
    however slowly it gets there: its steps follow events, never the model's scaled durations.
    """
    clock = HeldClock(lab, host, when)
    host.sleep = clock.sleep  # type: ignore[method-assign]  # Host.sleep: every modelled wait goes through it
    try:
        yield clock
    finally:
        clock.stop()
        del host.sleep


def in_reboot(host: Host) -> Callable[[], bool]:
    """`when` for held_clock: the waits of the host's restart (its delay, then its boot) only."""
    return lambda: asyncio.current_task() is host._reboot_task  # noqa: SLF001 - the model's restart task


def refused_port() -> int:
    """A loopback port that refuses connections for the rest of the test session: bound, never
    listened on, and kept, so no other test or xdist worker can be handed it meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _HELD_PORTS.append(sock)
    return sock.getsockname()[1]


_HELD_PORTS: list[socket.socket] = []


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
            if isinstance(known, models.Known):  # a step, not the prelude's definition
                seen.append(known)
            return known

        monkeypatch.setattr(models, name, spy)
    return seen


# --- transport settings for the lab on loopback ----------------------------------------------
def fast_settings(**overrides: Any) -> Any:
    """TransportSettings with short timeouts for tests against the lab on loopback (one open retry)."""
    from wuremote.transport import TransportSettings

    values: dict[str, Any] = {"connect_timeout": 2.0, "operation_timeout": 1, "read_timeout": 4,
                              "open_retries": 1, "backoff": 0.01}
    return TransportSettings(**{**values, **overrides})


# --- every report written in the suite validates against its schema ---------------------------
_REPORT_PROBLEMS: list[str] = []


def _report_validator() -> Any:
    import json
    from importlib.resources import files

    import jsonschema

    schema = json.loads(files("wuremote.output").joinpath("report_schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _schema_problem(report: Any, validator: Any, where: str) -> str | None:
    error = next(iter(validator.iter_errors(report)), None)
    if error is None:
        return None
    return f"{where}: {'/'.join(map(str, error.absolute_path))}: {error.message}"


@pytest.fixture(scope="session", autouse=True)
def _reports_follow_their_schema() -> Iterator[None]:
    """Every report.json written in-process (e2e, fault matrix, resume, merge, the CLI) is checked against
    report_schema.json as it is written; the test that wrote it fails at its teardown (below)."""
    import json

    from wuremote.output import report as report_module

    validator = _report_validator()
    original = report_module.write_report_files

    def checked(folder: Any, report: dict[str, Any]) -> None:
        problem = _schema_problem(json.loads(json.dumps(report)), validator, f"{folder}/report.json")
        if problem is not None:
            _REPORT_PROBLEMS.append(problem)
        original(folder, report)

    report_module.write_report_files = checked  # type: ignore[assignment]
    try:
        yield
    finally:
        report_module.write_report_files = original  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _no_report_broke_its_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: no report written in-process broke the schema, nor any report.json a wuremote
    subprocess left under the test's tmp_path (the kill -9 and resume tests)."""
    import json

    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    problems = list(_REPORT_PROBLEMS)
    del _REPORT_PROBLEMS[:]
    if tmp_path is not None:
        validator = _report_validator()
        for path in tmp_path.rglob("report.json"):
            if (path.parent / "junit.xml").is_file():  # written by wuremote, not a test's hand-made file
                try:
                    report = json.loads(path.read_text(encoding="utf-8"))
                except ValueError:
                    continue
                problem = _schema_problem(report, validator, str(path))
                if problem is not None:
                    problems.append(problem)
    assert not problems, problems


def _plain(value: Any) -> Any:
    """A deserialized PSCustomObject tree as dicts and lists."""
    props = getattr(value, "extended_properties", None)
    if props is not None:
        return {key: _plain(item) for key, item in props.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


class Steps:
    """wuremote's step scripts sent to one lab host as add_script + parameters."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.host = PSHost(None, None, False, "wuremote-tests", None, None, "1.0")
        self.pool = psrp_pool(endpoint, host=self.host)
        self.pool.open()

    def close(self) -> None:
        self.pool.close()

    def call(self, step: str, **params: Any) -> tuple[int, dict[str, Any]]:
        self.host.rc = None  # exit 0 makes no SetShouldExit call
        ps = PowerShell(self.pool)
        ps.add_script(get_script(step).payload())
        for name, value in params.items():
            ps.add_parameter(name, value)
        output = ps.invoke()
        assert not ps.had_errors, [str(e) for e in ps.streams.error]
        return self.host.rc or 0, _plain(output[-1])

    def start(self, step: str, run_id: str, *, payload: str | None = None, restart: bool = False,
              **params: Any) -> tuple[int, dict[str, Any]]:
        body = payload or get_script(step).payload()
        switches = {"Restart": True} if restart else {}
        return self.call("detached-start", RunId=run_id, Step=step, Payload=body, PayloadSha256=sha256_text(body),
                         ParametersJson=json.dumps(params), **switches)

    def poll(self, step: str, run_id: str, **params: Any) -> dict[str, Any]:
        code, result = self.call("detached-poll", RunId=run_id, Step=step, **params)
        assert code == 0, result["messages"]
        return result["facts"]

    def wait_done(self, step: str, run_id: str) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def done() -> bool:
            last.clear()
            last.update(self.poll(step, run_id))
            return last["state"] in ("finished", "interrupted")

        wait_for(done, interval=0.02, what=f"{step} of {run_id} finished or interrupted")
        return last


@pytest.fixture
def on(lab: Lab) -> Iterator[Callable[[int], tuple[Steps, HostState]]]:
    """on(i): a client for lab host i and that host's state (each test takes hosts of its own)."""
    opened: list[Steps] = []

    def connect(index: int) -> tuple[Steps, HostState]:
        endpoint = lab.endpoints[index]
        opened.append(Steps(endpoint))
        return opened[-1], lab.host(endpoint.name).state

    yield connect
    for steps in opened:
        steps.close()


class MovableClock:
    """The time module as one side's deadlines read it (a host's step runner, the controller), whose
    monotonic clock can be moved on: that side was blocked while the other was not."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

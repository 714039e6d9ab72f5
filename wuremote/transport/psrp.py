"""PSRP over WSMan (pypsrp): one RunspacePool per host, one closed pipeline per step.

Why each choice:
- the pool is reused so a step costs a Command, a few Receives and a Signal, not a logon;
  each pipeline is closed (Signal terminate) so the endpoint's per-shell command limit is
  never reached;
- parameters go through add_parameter: values travel as serialized data, never as code;
- the exit code comes from SetShouldExit on our PSHost (``exit N`` in a remote script calls
  it; ``exit 0`` does not), so the host's record is reset before every step;
- pypsrp's ``had_errors`` is only set when the pipeline fails, so non-terminating errors are
  read from the error stream;
- output is drained after every poll and kept up to a cap (a host printing 100 MB cannot
  exhaust the controller), and pypsrp's own lists are emptied as we go;
- pypsrp retries a Receive on a read timeout five times with long sleeps: our WSMan drops
  that, and a broken pool is replaced by a fresh one on the next call instead.
"""

from __future__ import annotations

import binascii
import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from pypsrp.complex_objects import GenericComplexObject, PSInvocationState
from pypsrp.exceptions import (
    AuthenticationError,
    FragmentError,
    InvalidPipelineStateError,
    InvalidPSRPOperation,
    InvalidRunspacePoolStateError,
    SerializationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from pypsrp.host import PSHost
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import NAMESPACES, SelectorSet, WSMan, WSManAction

from ..inventory import HostConfig
from ..contract.scripts import StepScript
from ..contract import StepResult
from .base import StreamCallback, TransportError

PSRP_RESOURCE_URI = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
from .common import (
    HostConnection,
    Unreadable,
    contract_problem,
    OPERATION_QUOTA_FAULT,
    SHELL_NOT_FOUND_FAULT,
    Collector,
    Deadline,
    TransportSettings,
    auth_failed,
    network_error,
    one_line,
    open_with_retries,
    to_json_text,
)

_TERMINAL = (PSInvocationState.COMPLETED, PSInvocationState.FAILED, PSInvocationState.STOPPED)


class _WSMan(WSMan):
    """pypsrp's WSMan without its built-in Receive retries (five tries, sleeps up to a minute),
    which would let one step outlive its deadline; a lost Receive is reported instead."""

    def receive(self, resource_uri: str, resource: ET.Element, option_set: Any = None,
                selector_set: Any = None, timeout: int | None = None) -> ET.Element:
        response = self.invoke(WSManAction.RECEIVE, resource_uri, resource, option_set, selector_set, timeout)
        return response.find("s:Body", namespaces=NAMESPACES)  # type: ignore[return-value]


def to_plain(value: Any) -> Any:
    """A deserialized PowerShell value as plain JSON-like data (dicts, lists, str, numbers, bools)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(to_plain(k)): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, GenericComplexObject):
        properties = {**value.adapted_properties, **value.extended_properties}
        if properties:
            return {str(k): to_plain(v) for k, v in properties.items()}
        if value.property_sets:
            return [to_plain(v) for v in value.property_sets]
        return str(value)
    return str(value)


def progress_text(record: Any) -> str:
    """A progress record as the live view shows it: "45% Repairing"."""
    description = str(getattr(record, "description", "") or getattr(record, "activity", "") or "")
    percent = getattr(record, "percent_complete", -1)
    if isinstance(percent, int) and percent >= 0:
        return f"{percent}% {description}".rstrip()
    return description


def _is_result(value: Any) -> bool:
    return isinstance(value, dict) and "wuremote_result" in value


class PSRPTransport(HostConnection):
    """One host over PSRP; used by one thread at a time (many transports run side by side)."""

    def __init__(self, host: HostConfig, settings: TransportSettings | None = None) -> None:
        super().__init__(host, settings)
        self._pshost = PSHost(None, None, False, "wuremote", None, None, "1.0")
        self._pool: RunspacePool | None = None

    # --- the protocol ---------------------------------------------------------------------
    def run_step(self, script: StepScript, params: dict[str, Any], *, timeout: float,
                 on_stream: StreamCallback | None = None) -> StepResult:
        deadline = Deadline(timeout)
        step = script.meta.name
        collector = Collector(self.host, step, self.settings.output_cap, on_stream)
        results: list[dict[str, Any]] = []

        def on_output(obj: Any) -> None:
            value = to_plain(obj)
            if _is_result(value):
                results.append(value)
            collector.add("output", value if isinstance(value, str) else to_json_text(value))

        def build(ps: PowerShell) -> None:
            ps.add_script(script.payload())
            for name, value in params.items():
                if name != "ResultMarker":  # over PSRP the result is an object, not a marked line
                    ps.add_parameter(name, value)

        exit_code = self._invoke(build, deadline, collector, on_output, f"running step {step}")
        result = results[-1] if results else None
        problem = contract_problem(result) if result is not None else None
        if problem:
            collector.errors.append(f"{self.host}: step {step} broke the script contract: {problem}")
            result = None
        elif result is None:
            collector.errors.append(f"{self.host}: step {step} broke the script contract: it emitted no result object")
        elif len(results) > 1:
            collector.errors.append(f"{self.host}: step {step} emitted {len(results)} result objects; the last one is used")
        return collector.result(exit_code, result)

    def run_command(self, command: str, *, timeout: float) -> tuple[int, str]:
        deadline = Deadline(timeout)
        collector = Collector(self.host, "command", self.settings.output_cap)
        def on_output(obj: Any) -> None:
            value = to_plain(obj)
            collector.add("output", value if isinstance(value, str) else to_json_text(value))

        exit_code = self._invoke(lambda ps: ps.add_script(command), deadline, collector, on_output, "running a command")
        return exit_code, "\n".join(r.text for r in collector.streams if r.stream == "output")

    @property
    def session_id(self) -> str | None:
        return str(self._pool.shell.id) if self._pool is not None and self._pool.shell.id else None

    def close_orphan(self, session_id: str) -> bool:
        wsman = self._wsman()
        selectors = SelectorSet()
        selectors.add_option("ShellId", session_id)
        try:
            wsman.delete(PSRP_RESOURCE_URI, selector_set=selectors)
        except Exception as exc:  # noqa: BLE001 - the host answers "not found" for a pool already gone
            error = self._translate(exc, "deleting a pool left by a stopped run")
            if error.code is not None:
                return False
            raise error from None
        finally:
            wsman.close()
        return True

    def reset(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            _close_pool(pool)

    def close(self) -> None:
        self.reset()

    # --- the pool -------------------------------------------------------------------------
    def _ensure_pool(self) -> RunspacePool:
        if self._pool is None:
            self._pool = open_with_retries(self.settings, self._open_pool)
        return self._pool

    def _open_pool(self) -> RunspacePool:
        pool = RunspacePool(self._wsman(), host=self._pshost)
        try:
            pool.open()
        except Exception as exc:
            pool.connection.close()
            raise self._translate(exc, "opening the runspace pool") from None
        return pool

    def _wsman(self) -> _WSMan:
        host, settings = self.config, self.settings
        https = host.scheme == "https"
        verify: bool | str = False
        if https and host.cert_validation:
            verify = host.ca_file or True
        password = host.password.reveal() if host.password is not None else None
        extra: dict[str, Any] = {}
        if host.auth == "certificate":
            extra = {"certificate_pem": host.cert_pem, "certificate_key_pem": host.cert_key_pem}
        return _WSMan(
            host.address,
            port=host.effective_port,
            username=host.username,
            password=password,
            ssl=https,
            auth=host.auth,
            cert_validation=verify,
            # message encryption wherever the auth can do it (NTLM, Kerberos, CredSSP over HTTP)
            encryption="never" if host.auth in ("basic", "certificate") else "auto",
            proxy=host.proxy,
            no_proxy=host.proxy is None,
            operation_timeout=settings.operation_timeout,
            read_timeout=settings.read_timeout,
            connection_timeout=settings.connect_timeout,  # type: ignore[arg-type]  # requests takes a float
            reconnection_retries=0,
            **extra,
        )

    def _forget(self) -> None:
        """Drop the pool without talking to the host (it is gone or unreachable)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.connection.close()

    # --- one pipeline ---------------------------------------------------------------------
    def _invoke(self, build: Callable[[PowerShell], Any], deadline: Deadline, collector: Collector,
                on_output: Callable[[Any], None], what: str) -> int:
        reused = self._pool is not None
        pool = self._ensure_pool()
        ps = PowerShell(pool)
        build(ps)
        self._pshost.rc = None  # SetShouldExit of an earlier step must not leak into this one
        try:
            try:
                ps.begin_invoke()
            except WSManFaultError as exc:
                if not reused or _fault_code(exc.code) != OPERATION_QUOTA_FAULT:
                    raise
                # The host refused the pipeline before running it (its operations quota spent):
                # nothing ran, so a fresh pool takes it, once.
                self.reset()
                pool = self._ensure_pool()
                ps = PowerShell(pool)
                build(ps)
                ps.begin_invoke()
            while ps.state == PSInvocationState.RUNNING:
                if deadline.passed:
                    self._stop(ps)
                    raise TransportError("timeout", f"{self.host}: {what} did not finish within "
                                                    f"{deadline.timeout:g} s; it was stopped")
                ps.poll_invoke(timeout=deadline.poll_seconds(self.settings.operation_timeout))
                _drain(ps, collector, on_output)
            _drain(ps, collector, on_output)
        except TransportError:
            raise
        except Exception as exc:
            error = self._translate(exc, what)
            if error.kind in ("lost", "unreachable", "protocol"):
                self._forget()
            raise error from None
        finally:
            if ps.state in _TERMINAL and self._pool is pool:
                self._close_pipeline(ps)
        if self._pshost.rc is not None:
            return int(self._pshost.rc)
        return 0 if ps.state == PSInvocationState.COMPLETED else 1

    def _stop(self, ps: PowerShell) -> None:
        try:
            ps.stop()
        except Exception:  # the pool cannot even stop a pipeline: start afresh next time
            self._forget()

    def _close_pipeline(self, ps: PowerShell) -> None:
        try:
            ps.close()
        except Exception:  # a pipeline that cannot be closed means a pool in trouble
            self._forget()

    def _translate(self, exc: BaseException, what: str) -> TransportError:
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, AuthenticationError):
            return auth_failed(self.config)
        if isinstance(exc, WSManFaultError):
            code = _fault_code(exc.code)
            if code == SHELL_NOT_FOUND_FAULT:
                return TransportError("lost", f"{self.host}: the runspace pool is gone (host restarted or pool "
                                              f"timed out) while {what}", code=code)
            return TransportError("fault", f"{self.host}: WS-Management fault {code} while {what}: "
                                           f"{one_line(exc.reason)}", code=code)
        if isinstance(exc, WinRMTransportError):
            return TransportError("fault", f"{self.host}: HTTP {exc.code} from the WinRM service while {what}")
        if isinstance(exc, (InvalidRunspacePoolStateError, InvalidPipelineStateError)):
            return TransportError("lost", f"{self.host}: the runspace pool broke while {what}")
        network = network_error(self.config, exc, what)
        if network is not None:
            return network
        if isinstance(exc, (WinRMError, FragmentError, SerializationError, InvalidPSRPOperation, ET.ParseError)):
            return TransportError("protocol", f"{self.host}: unreadable PSRP answer while {what}: {one_line(str(exc))}")
        if isinstance(exc, (binascii.Error, ValueError, RecursionError, Unreadable)):  # bad base64, a non-numeric field
            return TransportError("protocol", f"{self.host}: unreadable PSRP answer while {what}: {type(exc).__name__}")
        raise exc


def _drain(ps: PowerShell, collector: Collector, on_output: Callable[[Any], None]) -> None:
    """Move what the last poll received out of pypsrp's lists into the capped transcript."""
    for obj in ps.output:
        on_output(obj)
    ps.output.clear()
    streams = ps.streams
    for record in streams.error:
        collector.error(str(record))
    for name, records in (("warning", streams.warning), ("verbose", streams.verbose), ("debug", streams.debug)):
        for record in records:
            collector.add(name, str(record.message))
    for record in streams.information:
        collector.add("information", str(to_plain(record.message_data)))
    for record in streams.progress:
        collector.add("progress", progress_text(record))
    for records in (streams.error, streams.warning, streams.verbose, streams.debug, streams.information, streams.progress):
        records.clear()


def _close_pool(pool: RunspacePool) -> None:
    try:
        pool.close()
    except Exception:  # closing is a courtesy to the host; a dead pool is simply forgotten
        pass
    finally:
        pool.connection.close()


def _fault_code(code: Any) -> int | None:
    try:
        return int(code)
    except (TypeError, ValueError):
        return None

"""PSRP over WSMan (pypsrp): one RunspacePool per host, one closed pipeline per step.

Why each choice:
- the pool is reused so a step costs a Command, a few Receives and a Signal, not a logon;
  each pipeline is closed (Signal terminate) so the endpoint's per-shell command limit is
  never reached;
- the prelude is defined once per pool: the pool's first step pipeline begins with a statement
  (ps_scripts/_psrp_prelude.ps1) that keeps it as a script block in the pool's one runspace,
  and every step's body dot-sources that block (``StepScript.session_payload``), so a step
  sends its body alone; a new pool (reconnect, recycle) gets the definition again;
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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import tenacity
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
from pypsrp.messages import MessageType
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import NAMESPACES, SelectorSet, WSMan, WSManAction

from ..contract import StepResult
from ..contract.scripts import StepScript, prelude_sha256, prelude_text, psrp_chain_text, psrp_prelude_text
from .base import OPERATION_TIMEOUT_FAULT, StreamCallback
from .common import Collector, Deadline, TransportSettings, contract_problem, to_json_text
from .connection import Connection
from .session import REAUTH_RETRY, Faults, Session, Unreadable, tune_session

WMI_ERROR_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/MSFT_WmiError"
PSRP_RESOURCE_URI = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
INPUT_ITEM_FLOOR = 96 * 1024  # bytes of an input item before a pool is open (inside a 150 KB envelope)
_TERMINAL = (PSInvocationState.COMPLETED, PSInvocationState.FAILED, PSInvocationState.STOPPED)
FAULTS = Faults(
    auth=AuthenticationError,
    fault=WSManFaultError,
    fault_code=("code",),
    http=WinRMTransportError,
    broken=(InvalidRunspacePoolStateError, InvalidPipelineStateError),
    quoted=(WinRMError, FragmentError, SerializationError, InvalidPSRPOperation, ET.ParseError),
    unreadable=(binascii.Error, ValueError, RecursionError, Unreadable),  # bad base64, a non-numeric field
)


def _wmi_error_code(xml_text: str) -> int | None:
    """error_Code of an s:Detail/MSFT_WmiError, the shape Windows gives some faults (the operations
    quota: pywinrm's test_wsman_fault_wmi_error_detail) where pypsrp finds no WSManFault."""
    try:
        node = ET.fromstring(xml_text).find(f"s:Body/s:Fault/s:Detail/{{{WMI_ERROR_NS}}}MSFT_WmiError/{{{WMI_ERROR_NS}}}error_Code",
                                            namespaces=NAMESPACES)
        return int(node.text or "") if node is not None else None
    except (ET.ParseError, ValueError):
        return None


class _WSMan(WSMan):
    """pypsrp's WSMan, on Windows' terms:

    - without its built-in Receive retries (five tries, sleeps up to a minute), which would let
      one step outlive its deadline; a lost Receive is reported instead;
    - a long poll's HTTP read waits the configured read timeout, not pypsrp's OperationTimeout + 2 s
      (a busy Windows host answers up to 5 s late: its own client allows NetworkDelayms = 5000, as
      the winrm/config recordings show);
    - a fault whose code is only in an MSFT_WmiError gets that code, not pypsrp's "w:InternalError";
    - a sealed request answered 400 (HTTP.sys closed the idle connection and the body came on a new
      socket without a logon, as ansible-core's winrm plugin notes) logs on afresh and is sent
      again, once (REAUTH_RETRY): a 400 is answered before the service reads the request.
    """

    def __init__(self, *args: Any, tune: Callable[[Any], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        transport = self.transport
        send = transport.send
        build = transport._build_session

        def built() -> Any:
            session = build()
            tune(session)  # session.tune_session: no environment lookups, one TLS context per CA file
            return session

        transport._build_session = built  # type: ignore[method-assign]

        def sent(message: bytes, *, retries_on_read_timeout: int = 0, timeout: Any = None) -> bytes:
            if isinstance(timeout, (int, float)):  # pypsrp's OperationTimeout + 2: keep the configured margin
                timeout = (transport.connection_timeout, max(float(timeout), float(transport.read_timeout)))
            for attempt in REAUTH_RETRY.copy(retry=tenacity.retry_if_exception(_refused_seal(transport))):
                with attempt:
                    return send(message, retries_on_read_timeout=retries_on_read_timeout, timeout=timeout)
            raise AssertionError("unreachable")  # pragma: no cover - the policy reraises

        transport.send = sent  # type: ignore[method-assign]

    def receive(self, resource_uri: str, resource: ET.Element, option_set: Any = None,
                selector_set: Any = None, timeout: int | None = None) -> ET.Element:
        response = self.invoke(WSManAction.RECEIVE, resource_uri, resource, option_set, selector_set, timeout)
        return response.find("s:Body", namespaces=NAMESPACES)  # type: ignore[return-value]

    @staticmethod
    def _parse_wsman_fault(xml_text: str) -> WSManFaultError:
        error = WSMan._parse_wsman_fault(xml_text)
        code = _wmi_error_code(xml_text) if not isinstance(error.code, int) else None
        if code is None:
            return error
        return WSManFaultError(code, error.machine, error.reason, error.provider, error.provider_path, error.provider_fault)


def _refused_seal(transport: Any) -> Callable[[BaseException], bool]:
    """A sealed request refused with 400: drop the session (a new one logs on first) and say so."""

    def refused(exc: BaseException) -> bool:
        if not (isinstance(exc, WinRMTransportError) and exc.code == 400 and transport.wrap_required):
            return False
        if transport.session is not None:
            transport.session.close()
        transport.session, transport.encryption = None, None
        return True

    return refused


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


class _Pipeline:
    """One closed PowerShell pipeline on the pool: its output drained into the transcript after
    every poll (pypsrp's own lists emptied as we go), result objects kept aside."""

    def __init__(self, pool: RunspacePool, pshost: PSHost, collector: Collector,
                 build: Callable[[PowerShell], Any], input: Iterable[str] | None = None,
                 on_ran: Callable[[], None] | None = None) -> None:
        self.ps = PowerShell(pool)
        build(self.ps)
        self.pshost = pshost
        self.collector = collector
        self.input = input
        self.results: list[dict[str, Any]] = []
        self.on_ran = on_ran  # told once the pipeline ended with a result or Completed

    @property
    def done(self) -> bool:
        return self.ps.state != PSInvocationState.RUNNING

    def begin(self) -> None:
        self.pshost.rc = None  # SetShouldExit of an earlier step must not leak into this one
        if self.input is None:
            self.ps.begin_invoke()
            return
        items = self.input

        def one_by_one() -> Iterator[list[str]]:
            # pypsrp sends each list as PIPELINE_INPUT messages, END_OF_PIPELINE_INPUT after the last
            # (it takes a generator only); an empty input still ends the input.
            yield from ([item] for item in items)
            yield []

        self.ps.begin_invoke(input=one_by_one())

    def poll(self, seconds: int) -> None:
        self.ps.poll_invoke(timeout=seconds)
        self._drain()

    def finish(self) -> int:
        self._drain()
        if self.on_ran is not None and (self.results or self.ps.state == PSInvocationState.COMPLETED):
            self.on_ran()
        if self.pshost.rc is not None:
            return int(self.pshost.rc)
        return 0 if self.ps.state == PSInvocationState.COMPLETED else 1

    def stop(self) -> None:
        self.ps.stop()

    def close(self) -> None:
        if self.ps.state in _TERMINAL:
            self.ps.close()

    def result(self) -> tuple[dict[str, Any] | None, str | None]:
        if not self.results:
            return None, "it emitted no result object"
        problem = contract_problem(self.results[-1])
        if problem:
            return None, problem
        if len(self.results) > 1:
            self.collector.errors.append(f"{self.collector.host}: step {self.collector.step} emitted "
                                         f"{len(self.results)} result objects; the last one is used")
        return self.results[-1], None

    def _output(self, obj: Any) -> None:
        value = to_plain(obj)
        if _is_result(value):
            self.results.append(value)
        self.collector.add("output", value if isinstance(value, str) else to_json_text(value))

    def _drain(self) -> None:
        """Move what the last poll received out of pypsrp's lists into the capped transcript."""
        ps, collector = self.ps, self.collector
        for obj in ps.output:
            self._output(obj)
        ps.output.clear()
        streams = ps.streams
        for error in streams.error:
            collector.error(str(error))
        for name, records in (("warning", streams.warning), ("verbose", streams.verbose), ("debug", streams.debug)):
            for record in records:
                collector.add(name, str(record.message))
        for information in streams.information:
            collector.add("information", str(to_plain(information.message_data)))
        for progress in streams.progress:
            collector.add("progress", progress_text(progress))
        for kept in (streams.error, streams.warning, streams.verbose, streams.debug, streams.information,
                     streams.progress):
            kept.clear()


# The record streams pypsrp keeps a list of each, by the message that brings a record.
_STREAMS = {MessageType.ERROR_RECORD: "error", MessageType.DEBUG_RECORD: "debug", MessageType.VERBOSE_RECORD: "verbose",
            MessageType.WARNING_RECORD: "warning", MessageType.PROGRESS_RECORD: "progress",
            MessageType.INFORMATION_RECORD: "information"}


class _OrderedPowerShell(PowerShell):
    """pypsrp's PowerShell, also keeping the order in which the records of all streams arrived (pypsrp keeps
    one list per stream): a chain's records belong to the step whose result object has not come yet."""

    def __init__(self, pool: RunspacePool) -> None:
        super().__init__(pool)
        self.ordered: list[tuple[str, Any]] = []

    def poll_invoke(self, timeout: int | None = None) -> None:
        """pypsrp's poll_invoke (the OperationTimeout fault is an empty answer), noting every record in order."""
        seen = {name: len(getattr(self.streams, name)) for name in _STREAMS.values()}
        try:
            responses = self.runspace_pool._receive(self.id, timeout=timeout)
        except WSManFaultError as err:
            if err.code != OPERATION_TIMEOUT_FAULT:
                raise
            responses = []
        for message_type, value in responses:
            if message_type == MessageType.PIPELINE_OUTPUT:
                self.output.append(value.data.data)
                self.ordered.append(("output", value.data.data))
            elif message_type in _STREAMS:
                name = _STREAMS[message_type]
                kept = getattr(self.streams, name)
                if seen[name] < len(kept):
                    self.ordered.append((name, kept[seen[name]]))
                    seen[name] += 1
        for name, count in seen.items():  # the pipeline's own end can bring an error record
            self.ordered.extend((name, record) for record in getattr(self.streams, name)[count:])


class _ChainPipeline(_Pipeline):
    """Several steps in one pipeline (_psrp_chain.ps1): each record goes to the transcript of the step
    running when it came, the one whose result object has not come yet."""

    def __init__(self, pool: RunspacePool, pshost: PSHost, collectors: list[Collector],
                 build: Callable[[PowerShell], Any], on_ran: Callable[[], None] | None = None) -> None:
        self.ps = _OrderedPowerShell(pool)
        build(self.ps)
        self.pshost = pshost
        self.collectors = collectors
        self.collector = collectors[0]
        self.results = []
        self.by_step: dict[int, list[dict[str, Any]]] = {}
        self.index = 0
        self.on_ran = on_ran
        self.input = None  # a chain takes no input

    def _drain(self) -> None:
        ps = self.ps
        assert isinstance(ps, _OrderedPowerShell)
        for stream, record in ps.ordered:
            collector = self.collectors[self.index]
            if stream == "output":
                value = to_plain(record)
                collector.add("output", value if isinstance(value, str) else to_json_text(value))
                if _is_result(value):
                    self.results.append(value)
                    self.by_step.setdefault(self.index, []).append(value)
                    self.index = min(self.index + 1, len(self.collectors) - 1)
            elif stream == "error":
                collector.error(str(record))
            elif stream == "information":
                collector.add("information", str(to_plain(record.message_data)))
            elif stream == "progress":
                collector.add("progress", progress_text(record))
            else:
                collector.add(stream, str(record.message))
        ps.ordered.clear()
        ps.output.clear()
        for name in _STREAMS.values():
            getattr(ps.streams, name).clear()

    def step_results(self, exit_code: int) -> list[StepResult]:
        """A StepResult for each step that ran, in order; a step the chain did not reach has none."""
        done: list[StepResult] = []
        for index, collector in enumerate(self.collectors):
            found = self.by_step.get(index)
            result = found[-1] if found else None
            problem = contract_problem(result) if result is not None else "it emitted no result object"
            if result is None or problem is not None:
                collector.errors.append(f"{collector.host}: step {collector.step} broke the script contract: {problem}")
                done.append(collector.result(exit_code or 1, None))
                break
            if found is not None and len(found) > 1:
                collector.errors.append(f"{collector.host}: step {collector.step} emitted {len(found)} result objects; "
                                        "the last one is used")
            done.append(collector.result(int(result["exit_code"]), result))
            if result["exit_code"] != 0 or result["reboot_required"]:
                break  # the chain runs the next step only after a success that asks for no restart
        return done


class PSRPTransport(Session[WSMan, RunspacePool]):
    """One host over PSRP: a RunspacePool reused across steps, one closed pipeline per step or command."""

    faults = FAULTS
    noun = "runspace pool"
    label = "PSRP"
    # MaxConcurrentCommandsPerShell of the PowerShell endpoint is 1,000, counted over the pool's
    # life even for closed pipelines (pypsrp#148, MS-WSMV note 118): a fresh pool well before it.
    commands_per_session = 900
    output_stream = "output"
    # A run of input carries 8 MB, so the host's count of what it holds is read back, and journalled,
    # every 8 MB; an item fills one fragment (input_item_bytes).
    input_run_bytes = 8 * 1024 * 1024
    # Every step pipeline on a pool without the prelude defines it first (_step, _chain), and the
    # definition keeps its text as a global of the pool's runspace (_psrp_prelude.ps1).
    prelude_in_session = True

    def __init__(self, connection: Connection, settings: TransportSettings | None = None) -> None:
        super().__init__(connection, settings)
        self._pshost = PSHost(None, None, False, "wuremote", None, None, "1.0")
        self._prelude_pool: RunspacePool | None = None  # the pool whose runspace holds the prelude

    @property
    def input_item_bytes(self) -> int:
        """Bytes of one input item: one PSRP fragment, one Send, as pypsrp's Client.copy sizes its chunks
        ((max_payload_size - 82) / 4 * 3: the base64 text and the message around it). The payload size
        is the open pool's: pypsrp raises it to a 500 KB envelope once the host speaks protocol 2.2 or
        later (Windows Server 2012 and later; 2008 R2 keeps 150 KB)."""
        connection = self._handle.connection if self._handle is not None else None
        payload = int(getattr(connection, "max_payload_size", 0) or 0)
        return max(INPUT_ITEM_FLOOR, (payload - 82) // 4 * 3)

    # --- a step or a command: one pipeline ------------------------------------------------------
    def _step(self, pool: RunspacePool, script: StepScript, params: dict[str, Any],
              collector: Collector, input: Iterable[str] | None) -> _Pipeline:
        # A step fed with input on a pool without the prelude carries it inline: a definition sent as
        # the pipeline's first statement would stand between the input and the step.
        defined_here = self._prelude_pool is pool
        define = not defined_here and input is None
        text = script.session_payload() if defined_here or define else script.payload()

        def build(ps: PowerShell) -> None:
            if define:
                self._define_prelude(ps)
            ps.add_script(text)
            for name, value in params.items():
                if name != "ResultMarker":  # over PSRP the result is an object, not a marked line
                    ps.add_parameter(name, value)

        def defined() -> None:
            self._prelude_pool = pool

        return _Pipeline(pool, self._pshost, collector, build, input, defined if define else None)

    def run_chain(self, calls: list[tuple[StepScript, dict[str, Any]]], *, timeout: float,
                  on_stream: StreamCallback | None = None) -> list[StepResult]:
        """Steps one after another in one pipeline (_psrp_chain.ps1), each with its own result and transcript;
        the next runs only after the one before exited 0 and asked for no restart.  Returns a result for
        each step that ran: fewer than asked when the chain stopped early."""
        deadline = Deadline(timeout)
        collectors = [Collector(self.host, script.meta.name, self.settings.output_cap, on_stream) for script, _ in calls]
        names = ", ".join(script.meta.name for script, _ in calls)
        exit_code, operation = self._run(lambda pool: self._chain(pool, calls, collectors), deadline,
                                         f"running steps {names}")
        assert isinstance(operation, _ChainPipeline)
        return operation.step_results(exit_code)

    def _chain(self, pool: RunspacePool, calls: list[tuple[StepScript, dict[str, Any]]],
               collectors: list[Collector]) -> _ChainPipeline:
        define = self._prelude_pool is not pool

        def build(ps: PowerShell) -> None:
            if define:
                self._define_prelude(ps)
            ps.add_script(psrp_chain_text(), use_local_scope=True)
            ps.add_parameter("Steps", [script.session_payload() for script, _ in calls])
            ps.add_parameter("Parameters", [{name: value for name, value in params.items() if name != "ResultMarker"}
                                            for _, params in calls])

        def defined() -> None:
            self._prelude_pool = pool

        return _ChainPipeline(pool, self._pshost, collectors, build, defined if define else None)

    @staticmethod
    def _define_prelude(ps: PowerShell) -> None:
        """The prelude's definition, a statement of its own in a local scope: only the global it sets outlives it."""
        ps.add_script(psrp_prelude_text(), use_local_scope=True)
        ps.add_parameter("Text", prelude_text())
        ps.add_parameter("Sha256", prelude_sha256())
        ps.add_statement()

    def _command(self, pool: RunspacePool, command: str, collector: Collector) -> _Pipeline:
        return _Pipeline(pool, self._pshost, collector, lambda ps: ps.add_script(command))

    # --- the pool ---------------------------------------------------------------------------
    def _client(self) -> _WSMan:
        host, settings = self.connection, self.settings
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
            cert_validation=verify,  # pypsrp's hint says bool; a CA file path is documented
            # message encryption wherever the auth can do it (NTLM, Kerberos, CredSSP over HTTP)
            encryption="never" if host.auth in ("basic", "certificate") else "auto",
            proxy=host.proxy,
            no_proxy=host.proxy is None,
            operation_timeout=settings.operation_timeout,
            read_timeout=settings.read_timeout,
            connection_timeout=settings.connect_timeout,  # requests takes a float
            reconnection_retries=0,
            tune=lambda session: tune_session(session, host),
            **extra,
        )

    def _release(self, client: WSMan) -> None:
        client.close()

    def _open_on(self, client: WSMan) -> RunspacePool:
        # The client chooses the pool's id: "before sending [wxf:Create], the client creates a
        # RunspacePool instance, assigns it a GUID" (MS-PSRP 3.1.5.3.1); pypsrp sends it as the ShellId
        # attribute of the Create's rsp:Shell (MS-WSMV 3.1.4.5.2), and Windows names the shell by it (the
        # ShellId selector of its ResourceCreated answer: tests/recordings/pypsrp/test_psrp_open_runspace.yml).
        # So it is told, and journalled, before the Create goes out; a Delete of it answers "not found"
        # if the Create never arrived (close_orphan).
        pool = RunspacePool(client, host=self._pshost)
        self._opening(str(pool.id))
        pool.open()
        return pool

    def _client_of(self, pool: RunspacePool) -> WSMan:
        return pool.connection

    def _id_of(self, pool: RunspacePool) -> str | None:
        return str(pool.shell.id) if pool.shell.id else None

    def _delete(self, pool: RunspacePool) -> None:
        pool.close()

    def _delete_by_id(self, client: WSMan, session_id: str) -> None:
        selectors = SelectorSet()
        selectors.add_option("ShellId", session_id)
        client.delete(PSRP_RESOURCE_URI, selector_set=selectors)

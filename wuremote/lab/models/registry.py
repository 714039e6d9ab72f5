"""The model registry: what every model module imports (StepContext, `model`, MODELS, Known).

Kept apart from the package's __init__ so the model modules import it, not their own
package, and the package imports them without an import cycle.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from ...contract.scripts import (
    HEADER_START,
    PRELUDE_NOT_STAGED_EXIT,
    ScriptHeaderError,
    ScriptMeta,
    parse_header,
    sha256_text,
    split_payload,
    split_reference,
)
from ..engine import ErrorInfo, Run, Stop
from ..host import Host

# Recorded hashes of the shipped texts the lab knows.  Update them together with the model.
PRELUDE_SHA256 = "36149115c8b40f0bfd853f54f5acd1633a52c5d8f7feb9dc4a09f8b947f1a5aa"
# Windows PowerShell 5.1's ConvertFrom-Json (which the WinRS bootstrap runs on the parameter line) uses
# JavaScriptSerializer with its default MaxJsonLength of 2,097,152 characters and refuses longer text
# (microsoft/azure-pipelines-tasks#952; microsoft/sql-server-samples#348 shows the error record).
MAX_JSON_LENGTH = 2_097_152
BOOTSTRAP_SHA256 = "f564751b387fe29ec8b4dc2c41824ec4c73a671fe10f5f4805e3d119888d5e97"
PSRP_CHAIN_SHA256 = "b30f974d70a5fa70e26cbf61c9b38415b14308e2e14095ac6adc059a5154254b"
PSRP_PRELUDE_SHA256 = "e0f0361de3c59728e04cf95c92099bad0bf32ea6856950bcb493e3a936a505eb"
# Where the WinRS bootstrap stages the prelude (%ProgramData%\wuremote\prelude\<sha256>.ps1), lower-cased
# as the lab's file table keys paths.
STAGED_PRELUDE = "c:\\programdata\\wuremote\\prelude\\{0}.ps1"


class InputSource(Protocol):
    """A PSRP pipeline's input as it arrives (MS-PSRP 2.2.2.17 PIPELINE_INPUT, 2.2.2.18 END_OF_PIPELINE_INPUT):
    items appended to ``inputs``, ``input_arrived`` set after each, ``input_done`` set at the end."""

    inputs: list[Any]
    input_arrived: asyncio.Event
    input_done: asyncio.Event


@dataclass
class StepContext:
    host: Host
    user: str
    run: Run
    params: dict[str, Any]
    meta: ScriptMeta
    source: InputSource | None = None

    async def input_items(self) -> AsyncIterator[Any]:
        """What the script's ValueFromPipeline parameter ($InputObject) is bound to, item by item:
        the -InputObject given by name (WinRS), then the pipeline's input as it arrives (PSRP), each
        item taken out of the pipe once handed over, as a process block consumes it."""
        bound = next((value for key, value in self.params.items() if key.lower() == "inputobject"), None)
        for item in (bound if isinstance(bound, list) else [] if bound is None else [bound]):
            yield item
        source = self.source
        if source is None:
            return
        while True:
            while source.inputs:
                yield source.inputs.pop(0)
            if source.input_done.is_set():
                return
            source.input_arrived.clear()
            waiters = [asyncio.ensure_future(source.input_arrived.wait()), asyncio.ensure_future(source.input_done.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    def verbose(self, text: str) -> None:
        self.run.emit("verbose", text)

    def warning(self, text: str) -> None:
        self.run.emit("warning", text)

    def progress(self, activity: str, status: str, percent: int, message: str = "") -> None:
        """A progress record; ``message`` stands for Set-WuStepProgress -Message (status.json's message)."""
        self.run.emit("progress", (activity, status, percent, message) if message else (activity, status, percent))

    def finish(
        self,
        status: str,
        exit_code: int,
        *,
        facts: dict[str, Any] | None = None,
        changes: list[Any] | None = None,
        messages: list[str] | None = None,
        reboot_required: bool = False,
    ) -> NoReturn:
        """What Complete-WuStep does: one result (object, or marked JSON line) then `exit`."""
        result = {
            "wuremote_result": 1,
            "step": self.meta.name,
            "status": status,
            "exit_code": exit_code,
            "reboot_required": reboot_required,
            "changes": list(changes or []),
            "facts": dict(facts or {}),
            "messages": list(messages or []),
        }
        marker = str(self.params.get("ResultMarker") or "")
        if marker:
            # ConvertTo-Json writes non-ASCII characters as they are (Windows PowerShell 5.1's
            # JavaScriptSerializer escapes only control characters, quotes and <>&'), so a result with
            # an accent reaches stdout as that character, in the console's output encoding.
            self.run.emit("stdout", f"{marker} {json.dumps(result, separators=(',', ':'), ensure_ascii=False)}\r\n")
        else:
            self.run.emit("output", result)
        raise Stop(exit_code)


ModelFn = Callable[[StepContext], Awaitable[None]]


@dataclass(frozen=True)
class Model:
    name: str
    sha256: str
    fn: ModelFn


MODELS: dict[str, Model] = {}
# The steps that do not start with Start-WuTranscript (so not with its language-mode refusal).
PRELUDE_SKIPS_TRANSCRIPT = frozenset({"detached-poll", "detached-cleanup"})


def model(name: str, sha256: str) -> Callable[[ModelFn], ModelFn]:
    def register(fn: ModelFn) -> ModelFn:
        MODELS[name] = Model(name, sha256, fn)
        return fn

    return register


@dataclass
class Known:
    """A recognised payload, ready to run with its bound parameters.

    ``available`` holds the sha256 of each prelude whose script block the session defined
    ($global:WuremotePrelude_<sha256>): what a step's reference to its prelude can load.
    ``stop`` ends the run before the step starts (what the WinRS bootstrap does on its own)."""

    text: str
    params: dict[str, Any]
    available: frozenset[str] = frozenset()
    stop: Stop | None = None
    refused: ErrorInfo | None = None  # the bootstrap failed before the script ran

    async def run(self, host: Host, user: str, run: Run, source: InputSource | None = None) -> int:
        if self.refused is not None:
            run.finish(1, self.refused)
            return 1
        try:
            await self._run(host, user, run, source)
        except Stop as stop:
            run.finish(stop.exit_code if stop.failure is None else 1, stop.failure)
        else:
            run.finish(0)
        assert run.exit_code is not None
        return run.exit_code

    async def _run(self, host: Host, user: str, run: Run, source: InputSource | None) -> None:
        if self.stop is not None:
            raise self.stop
        reference = split_reference(self.text)
        prelude_sha: str | None
        if reference is not None:
            script, prelude_sha = reference
            if prelude_sha not in self.available:
                raise Stop(1, _not_a_command())  # `. $global:WuremotePrelude_<sha>` of a variable never set
        else:
            script, prelude = split_payload(self.text)
            prelude_sha = sha256_text(prelude) if prelude is not None else None
        try:
            meta = parse_header(script)
        except ScriptHeaderError as exc:
            raise Stop(1, _lab_error(f"lab: the script's wuremote header does not parse: {exc}")) from None
        entry = MODELS.get(meta.name)
        digest = sha256_text(script)
        if prelude_sha != PRELUDE_SHA256:
            raise Stop(1, _lab_error("lab: this payload's prelude is not the one the lab models "
                                     "(update PRELUDE_SHA256 and the models together)"))
        if entry is None or entry.sha256 != digest:
            raise Stop(1, _lab_error(f"lab: no model for script {meta.name!r} v{meta.version} with sha256 {digest}; "
                                     "a script edited without its lab model is refused (see wuremote/lab/models/)"))
        host.state.scripts_run.append(meta.name)
        ctx = StepContext(host, user, run, self.params, meta, source)
        if host.state.language_mode != "FullLanguage" and meta.name not in PRELUDE_SKIPS_TRANSCRIPT:
            # Start-WuTranscript's refusal: under Constrained Language every step stops there.
            ctx.finish("failed", 1, facts={"language_mode": host.state.language_mode}, messages=[
                f"PowerShell runs in {host.state.language_mode} on this host (WDAC/AppLocker): wuremote's steps need "
                "FullLanguage; nothing was changed"])
        await entry.fn(ctx)


def _lab_error(message: str) -> ErrorInfo:
    return ErrorInfo(message, category="NotImplemented", fqid="WuremoteLabUnknownScript",
                     exception_type="System.NotSupportedException", command="wuremote-lab")


def _not_a_command() -> ErrorInfo:
    """What PowerShell says when `.` is given $null (a variable never set), as a terminating error."""
    return ErrorInfo("The expression after '.' in a pipeline element produced an object that was not valid. It must "
                     "result in a command name, a script block, or a CommandInfo object.", category="InvalidOperation",
                     fqid="BadExpression", exception_type="System.Management.Automation.RuntimeException", command="")


@dataclass
class PreludeDefinition:
    """_psrp_prelude.ps1 on a pool: keeps the prelude's script block in the runspace once its sha256 checks."""

    params: dict[str, Any]
    preludes: set[str]

    async def run(self, host: Host, user: str, run: Run, source: InputSource | None = None) -> int:
        text, claimed = str(self.params.get("Text", "")), str(self.params.get("Sha256", ""))
        actual = sha256_text(text)
        if actual != claimed:
            failure = ErrorInfo(f"wuremote: the prelude arrived with sha256 {actual}, not {claimed}",
                                category="OperationStopped", fqid=f"wuremote: the prelude arrived with sha256 {actual}, "
                                f"not {claimed}", exception_type="System.Management.Automation.RuntimeException", command="")
            run.finish(1, failure)
            return 1
        self.preludes.add(actual)
        run.finish(0)
        return 0


class _Chained(Run):
    """A chained step's run: its records reach the chain's run at once; its result is kept aside."""

    def __init__(self, parent: Run) -> None:
        super().__init__()
        self.parent = parent
        self.result: dict[str, Any] | None = None

    def emit(self, kind: str, value: Any) -> None:
        if kind == "output" and isinstance(value, dict) and "wuremote_result" in value:
            self.result = value
        self.parent.emit(kind, value)


@dataclass
class Chain:
    """_psrp_chain.ps1: each step in turn, in one pipeline; the next only after exit code 0 and no restart
    asked (Complete-WuStep, chained, ends the step by leaving the chain's loop instead of `exit`)."""

    params: dict[str, Any]
    preludes: set[str]

    async def run(self, host: Host, user: str, run: Run, source: InputSource | None = None) -> int:  # a chain takes no input
        steps = list(self.params.get("Steps") or [])
        bound = list(self.params.get("Parameters") or [])
        for text, params in zip(steps, bound):
            child = _Chained(run)
            await Known(str(text), {str(k): v for k, v in dict(params).items()}, frozenset(self.preludes)).run(host, user, child)
            if child.failure is not None:  # a terminating error ends the whole pipeline, as it would the chain
                run.finish(1, child.failure)
                return 1
            last = child.result
            if last is None or last.get("exit_code") != 0 or last.get("reboot_required"):
                break
        run.finish(0)
        return 0


def recognize_psrp(script: str, params: dict[str, Any], preludes: set[str]) -> Known | PreludeDefinition | Chain | None:
    """A wuremote step payload, the prelude's definition or a chain of steps added with add_script, or None
    for any other text.  ``preludes`` is the pool's runspace: the prelude hashes defined in it so far."""
    digest = sha256_text(script)
    if digest == PSRP_PRELUDE_SHA256:
        return PreludeDefinition(params, preludes)
    if digest == PSRP_CHAIN_SHA256:
        return Chain(params, preludes)
    if not script.startswith(HEADER_START):
        return None
    return Known(script, params, frozenset(preludes))


def is_bootstrap(text: str) -> bool:
    return sha256_text(text) == BOOTSTRAP_SHA256


def recognize_winrs(stdin: bytes, host: Host) -> Known | None:
    """The payload, parameters and prelude the wuremote bootstrap reads from stdin, or None.

    The bootstrap reads stdin as UTF-8 whatever the console's code page.  Its prelude line is
    ``stage <sha256> <base64>`` (checked, then staged under %ProgramData%\\wuremote\\prelude) or
    ``staged <sha256>`` (the staged copy, used only when its sha256 matches; otherwise exit 22357
    before the step runs)."""
    raw = stdin.decode("utf-8", errors="replace")
    parts = raw.split("\n", 2)
    if len(parts) < 3:
        return None
    head, directive, script = parts
    try:
        text = base64.b64decode(head.strip(), validate=True).decode("utf-8")
        params = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
        text, params = "", None
    if not isinstance(params, dict) or not script.startswith(HEADER_START):
        return None
    if len(text) > MAX_JSON_LENGTH:
        return Known(script, params, refused=ErrorInfo(
            "Error during serialization or deserialization using the JSON JavaScriptSerializer. The length of the "
            "string exceeds the value set on the maxJsonLength property.\r\nParameter name: input",
            fqid="System.ArgumentException,Microsoft.PowerShell.Commands.ConvertFromJsonCommand",
            exception_type="System.ArgumentException", command="ConvertFrom-Json"))
    words = directive.strip().split(" ")
    expected = words[1] if len(words) >= 2 else ""
    path = STAGED_PRELUDE.format(expected)
    prelude: str | None = None
    if words[0] == "stage" and len(words) >= 3:
        try:
            prelude = base64.b64decode(words[2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Known(script, params, stop=Stop(1, _lab_error("lab: the prelude line is not base64 of UTF-8")))
    elif path in host.state.files:
        prelude = host.state.files[path].decode("utf-8", errors="replace")
    if prelude is None or sha256_text(prelude) != expected:
        if words[0] == "stage":
            return Known(script, params, stop=Stop(1, _lab_error("wuremote bootstrap: the prelude does not match its sha256")))
        return Known(script, params, stop=Stop(PRELUDE_NOT_STAGED_EXIT))
    if words[0] == "stage":
        host.state.files[path] = prelude.encode("utf-8")
    return Known(script, params, frozenset({expected}))


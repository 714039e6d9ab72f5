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

from ...contract.scripts import HEADER_START, ScriptHeaderError, ScriptMeta, parse_header, sha256_text, split_payload
from ..engine import ErrorInfo, Run, Stop
from ..host import Host

# Recorded hashes of the shipped texts the lab knows.  Update them together with the model.
PRELUDE_SHA256 = "184421b9865735afbadbaefb89594853865aa3ce54523e05f8cd2e105774d349"
# Windows PowerShell 5.1's ConvertFrom-Json (which the WinRS bootstrap runs on the parameter line) uses
# JavaScriptSerializer with its default MaxJsonLength of 2,097,152 characters and refuses longer text
# (microsoft/azure-pipelines-tasks#952; microsoft/sql-server-samples#348 shows the error record).
MAX_JSON_LENGTH = 2_097_152
BOOTSTRAP_SHA256 = "30986d8c9cc67f85955aea604108f2680b2d413cb99f627972247e7f5a7b1645"


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
            self.run.emit("stdout", f"{marker} {json.dumps(result, separators=(',', ':'))}\r\n")
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
    """A recognised payload, ready to run with its bound parameters."""

    text: str
    params: dict[str, Any]
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
        script, prelude = split_payload(self.text)
        try:
            meta = parse_header(script)
        except ScriptHeaderError as exc:
            raise Stop(1, _lab_error(f"lab: the script's wuremote header does not parse: {exc}")) from None
        entry = MODELS.get(meta.name)
        digest = sha256_text(script)
        if prelude is None or sha256_text(prelude) != PRELUDE_SHA256:
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


def recognize_psrp(script: str, params: dict[str, Any]) -> Known | None:
    """A wuremote step payload added with add_script, or None for any other text."""
    if not script.startswith(HEADER_START):
        return None
    return Known(script, params)


def is_bootstrap(text: str) -> bool:
    return sha256_text(text) == BOOTSTRAP_SHA256


def recognize_winrs(stdin: bytes) -> Known | None:
    """The payload and parameters the wuremote bootstrap reads from stdin, or None."""
    raw = stdin.decode("utf-8", errors="replace")
    head, _, script = raw.partition("\n")
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
    return Known(script, params)


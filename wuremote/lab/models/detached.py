"""Models of detached-start, detached-poll and detached-cleanup: long steps as SYSTEM scheduled tasks.

On Windows the body outlives the WinRM shell because the Task Scheduler runs it; here it is
an asyncio task on the lab's loop, so closing the pipeline or the shell that started it
leaves it running, and only the host going down ends it (then, as on Windows, nothing is
recorded: status.json still says "running" and the poll derives "interrupted").  All that
the scripts keep on disk lives in HostState.files under the same paths (status.json,
result.json, params.json, step.ps1, runner.ps1, transcript.log), and the task in
HostState.scheduled_tasks under Get-WuDetachedTaskName's name, so a reboot, the cleanup
step or diagnose see what they would see on Windows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import re
import weakref
from dataclasses import dataclass
from typing import Any

from ...contract.scripts import ScriptHeaderError, inline_prelude, parse_header, prelude_text, sha256_text, split_payload
from ..engine import ErrorInfo, Run, Stop
from ..host import Host, HostState, parse_windows_utc, windows_utc
from .helpers import NAME_PATTERN, StateRootUnsafe, param, protect_state_root, require_elevated, switch, thrown
from .long_steps import SYSTEM_USER, int_param, run_folder, text_param
from .registry import MODELS, PRELUDE_SHA256, Known, StepContext, _lab_error, model

STEP_PATTERN = r"^[a-z][a-z0-9-]{0,40}$"
TASK_PATH = "\\wuremote\\"
RUNNER_START_SECONDS = 2.0  # Task Scheduler starting powershell.exe and the runner reaching its first write
START_WAIT_SECONDS = 15.0  # how long detached-start waits for the runner to leave "queued"
RUN_ID_MESSAGE = "a detached step needs a run id of letters, digits, dot, dash or underscore (1-64)"
BOM = "\ufeff"


def task_name(run_id: str, step: str) -> str:
    """Get-WuDetachedTaskName."""
    return f"wuremote-{run_id}-{step}"


@functools.cache
def _runner_text() -> str:
    """The constant runner.ps1, as Get-WuDetachedRunnerText returns it."""
    match = re.search(r"function Get-WuDetachedRunnerText \{.*?@'\n(.*?)\n'@", prelude_text(), re.DOTALL)
    assert match is not None, "the prelude no longer defines Get-WuDetachedRunnerText"
    return match.group(1)


def _file(folder: str, name: str) -> str:
    return f"{folder}\\{name}"


def _read_json(state: HostState, path: str) -> dict[str, Any] | None:
    data = state.files.get(path.lower())
    return None if data is None else json.loads(data.decode("utf-8-sig"))


def _write_json(state: HostState, path: str, value: dict[str, Any]) -> None:
    state.files[path.lower()] = json.dumps(value, indent=4).encode("utf-8")
    if path.lower().endswith("\\status.json"):
        written = _STATUS_WRITTEN.pop(id(state), None)
        if written is not None:
            written.set()  # detached-poll's waits re-read the state now


# --- detached-poll's wait: woken by every status.json write ---------------------------------
# The script re-reads the state each second (Start-Sleep -Seconds 1); the model re-reads it when
# status.json is written (the only way state or percent moves while the host is up) and at least
# every WAIT_RECHECK_SECONDS for what no write announces (a queued task timing out), so a
# thousand waiting hosts do not wake the lab's loop a thousand times a modelled second.
WAIT_RECHECK_SECONDS = 30.0
_STATUS_WRITTEN: dict[int, asyncio.Event] = {}  # id(HostState) -> set at its next status.json write


async def _status_written(state: HostState, seconds: float) -> None:
    """Until the host's next status.json write, or ``seconds`` of real time."""
    written = _STATUS_WRITTEN.get(id(state))
    if written is None:
        written = _STATUS_WRITTEN[id(state)] = asyncio.Event()
        weakref.finalize(state, _STATUS_WRITTEN.pop, id(state), None)
    try:
        await asyncio.wait_for(written.wait(), seconds)
    except asyncio.TimeoutError:
        pass


def _percent_text(status: dict[str, Any]) -> str:
    """[string]$status.percent: '' for null."""
    percent = status.get("percent")
    return "" if percent is None else str(percent)


async def _wait_for_change(host: Host, run_id: str, step: str, seen_state: str, seen_percent: str,
                           seconds: int) -> DetachedState | None:
    """detached-poll's wait: the state once it or its percent differs from what the controller saw,
    or once ``seconds`` (modelled) have passed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds * host.time_scale
    current = detached_state(host, run_id, step)
    while (current is not None and current.state == seen_state and _percent_text(current.status) == seen_percent
           and loop.time() < end):
        await _status_written(host.state, min(end - loop.time(), WAIT_RECHECK_SECONDS * host.time_scale))
        current = detached_state(host, run_id, step)
    return current


# --- the bodies that run now (processes: they do not survive the host going down) ------------
_LIVE: weakref.WeakKeyDictionary[Host, dict[str, asyncio.Task[None]]] = weakref.WeakKeyDictionary()


def _live(host: Host) -> dict[str, asyncio.Task[None]]:
    tasks = _LIVE.get(host)
    if tasks is None:
        tasks = _LIVE[host] = {}

        async def power_off() -> None:
            running = [task for task in tasks.values() if not task.done()]
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            tasks.clear()

        host.on_down(power_off)
    return tasks


def _process_alive(host: Host, name: str) -> bool:
    task = _live(host).get(name)
    return task is not None and not task.done()


@dataclass
class DetachedState:
    """Get-WuDetachedState: status.json with its effective state."""

    status: dict[str, Any]
    state: str  # queued | running | finished | interrupted
    reason: str
    task_name: str
    task_state: str  # the scheduled task's state, or "absent"
    status_path: str


def detached_state(host: Host, run_id: str, step: str) -> DetachedState | None:
    """The step's state as the prelude derives it; None when it was never started. Changes nothing."""
    state = host.state
    status_path = _file(run_folder(run_id, step), "status.json")
    status = _read_json(state, status_path)
    if status is None:
        return None
    name = task_name(run_id, step)
    task = state.scheduled_tasks.get(name)
    task_state = str(task["state"]) if task is not None else "absent"
    effective, reason = str(status.get("state")), ""
    if effective == "running":
        boot_utc = status.get("boot_utc")
        if boot_utc and state.last_boot > parse_windows_utc(str(boot_utc)) + dt.timedelta(minutes=1):
            effective, reason = "interrupted", "the host restarted while the step ran"
        elif not _process_alive(host, name) and task_state != "Running":
            effective, reason = "interrupted", "the step process ended without recording a result"
    elif effective == "queued" and task_state not in ("Running", "Queued"):
        if state.clock > parse_windows_utc(str(status["queued"])) + dt.timedelta(minutes=5):
            effective, reason = "interrupted", "the task did not start within 5 minutes"
    return DetachedState(status, effective, reason, name, task_state, status_path)


class _BodyRun(Run):
    """The runner's view of a body: verbose and warning lines go to the transcript, progress
    to status.json's percent (Set-WuStepProgress), and the result object is kept for result.json."""

    def __init__(self, state: HostState, folder: str) -> None:
        super().__init__()
        self.state = state
        self.folder = folder
        self.result: dict[str, Any] | None = None

    def transcribe(self, text: str) -> None:
        key = _file(self.folder, "transcript.log").lower()
        self.state.files[key] = self.state.files.get(key, b"") + text.encode("utf-8")

    def emit(self, kind: str, value: Any) -> None:
        super().emit(kind, value)
        if kind in ("verbose", "warning"):
            self.transcribe(f"{kind.upper()}: {value}\r\n")
        elif kind == "progress":
            self._record_percent(int(value[2]), str(value[3]) if len(value) > 3 else "")
        elif kind == "output" and isinstance(value, dict) and "wuremote_result" in value:
            self.result = value

    def _record_percent(self, percent: int, message: str) -> None:
        """Set-WuStepProgress: percent, and with -Message what the step does now."""
        path = _file(self.folder, "status.json")
        status = _read_json(self.state, path)
        if status is None or status.get("state") != "running":
            return
        if status.get("percent") != percent or (message and status.get("message") != message):
            status["percent"] = percent
            if message:
                status["message"] = message
            _write_json(self.state, path, status)


def _transcript_header(host: Host, folder: str, pid: int) -> str:
    stamp = host.state.clock.strftime("%Y%m%d%H%M%S")
    return ("**********************\r\nWindows PowerShell transcript start\r\n"
            f"Start time: {stamp}\r\nUsername: NT AUTHORITY\\SYSTEM\r\nRunAs User: NT AUTHORITY\\SYSTEM\r\n"
            f"Machine: {host.name} (Microsoft Windows NT 10.0.{host.state.build}.0)\r\n"
            f"Host Application: powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File {folder}\\runner.ps1\r\n"
            f"Process ID: {pid}\r\n**********************\r\n")


async def _run_body(host: Host, run_id: str, step: str) -> None:
    """runner.ps1: mark running, run step.ps1 with params.json bound, record the exit code and result."""
    state = host.state
    folder = run_folder(run_id, step)
    status_path = _file(folder, "status.json")
    await host.sleep(RUNNER_START_SECONDS)
    pid = host.rng.randrange(1000, 30000, 4)
    status = _read_json(state, status_path) or {}
    status.update(state="running", pid=pid, pid_started=windows_utc(state.clock), started=windows_utc(state.clock),
                  boot_utc=windows_utc(state.last_boot))
    _write_json(state, status_path, status)

    run = _BodyRun(state, folder)
    run.transcribe(_transcript_header(host, folder, pid))
    payload = state.files[_file(folder, "step.ps1").lower()].decode("utf-8-sig")
    parameters = _read_json(state, _file(folder, "params.json")) or {}
    parameters["ResultMarker"] = ""
    failure = ""
    try:
        exit_code = await Known(payload, parameters).run(host, SYSTEM_USER, run)
        if run.failure is not None:
            failure = run.failure.message
    except Exception as exc:  # a model bug shows in the poll as the runner's catch would show it
        exit_code, failure = 1, f"lab model error: {exc!r}"
    if run.result is not None:
        _write_json(state, _file(folder, "result.json"), run.result)
    run.transcribe("**********************\r\nWindows PowerShell transcript end\r\n"
                   f"End time: {state.clock.strftime('%Y%m%d%H%M%S')}\r\n**********************\r\n")
    status = _read_json(state, status_path) or {}
    status.update(state="finished", exit_code=exit_code, finished=windows_utc(state.clock), error=failure)
    if exit_code in (0, 3010):
        status["percent"] = 100
    _write_json(state, status_path, status)
    task = state.scheduled_tasks.get(task_name(run_id, step))
    if task is not None:
        task.update(state="Ready", last_task_result=exit_code)


# --- detached-start --------------------------------------------------------------------------
def _unmodelled(payload: str) -> str | None:
    """Why the lab could not run this payload as a body (the check Known applies), or None."""
    script, prelude = split_payload(payload)
    if prelude is None or sha256_text(prelude) != PRELUDE_SHA256:
        return "lab: this payload's prelude is not the one the lab models (update PRELUDE_SHA256 and the models together)"
    try:
        meta = parse_header(script)
    except ScriptHeaderError as exc:
        return f"lab: the script's wuremote header does not parse: {exc}"
    entry, digest = MODELS.get(meta.name), sha256_text(script)
    if entry is None or entry.sha256 != digest:
        return (f"lab: no model for script {meta.name!r} v{meta.version} with sha256 {digest}; "
                "a script edited without its lab model is refused (see wuremote/lab/models/)")
    return None


def _payload_header(payload: str) -> dict[str, str]:
    header: dict[str, str] = {}
    for line in payload.split("\n")[:12]:
        match = re.match(r"^# (name|detached): *(\S+)", line, re.IGNORECASE)
        if match:
            header[match.group(1).lower()] = match.group(2)
    return header


def _composed(ctx: StepContext, body: str, prelude_sha: str, failed: Any) -> str:
    """detached-start's -Body: the payload composed from the step's body and the prelude text the
    session holds.  A PSRP pool holds it once _psrp_prelude.ps1 ran there (the source's preludes,
    by sha256: the lab keeps the hashes, and the text of the one prelude it models); a WinRS step's
    powershell.exe holds no globals from one step to the next."""
    held: set[str] = getattr(ctx.source, "preludes", set())
    if not body or not prelude_sha or prelude_sha not in held:
        failed("no payload: give -Payload, or -Body with -PreludeSha256 naming a prelude this session holds")
    if prelude_sha != PRELUDE_SHA256:
        raise Stop(1, _lab_error("lab: the session's prelude is not the one the lab models (update PRELUDE_SHA256 "
                                 "and the models together)"))
    try:
        return inline_prelude(body, prelude_text())  # the script's loop: the first line that is the placeholder
    except ScriptHeaderError:
        failed("the body has no '# wuremote-prelude' line after its param() block")
        raise  # pragma: no cover - failed() ends the step


@model("detached-start", sha256="5ef380a0e25c1311d7fc728ebbf7cf0dbf561c3eb031e8e5198997ded163edc4")
async def detached_start(ctx: StepContext) -> None:
    step = text_param(ctx, "Step", STEP_PATTERN, mandatory=True)
    payload = text_param(ctx, "Payload")
    body = text_param(ctx, "Body")
    prelude_sha = text_param(ctx, "PreludeSha256", r"^([0-9a-f]{64})?$")
    payload_sha = text_param(ctx, "PayloadSha256", r"^[0-9a-fA-F]{64}$", mandatory=True)
    parameters_json = str(param(ctx, "ParametersJson", "{}"))
    restart = switch(ctx, "Restart")
    run_id = text_param(ctx, "RunId")
    require_elevated(ctx)
    if not NAME_PATTERN.match(run_id):
        ctx.finish("failed", 1, messages=[RUN_ID_MESSAGE])
    try:
        protect_state_root(ctx.host)
    except StateRootUnsafe as exc:
        raise thrown(str(exc)) from None
    host, state = ctx.host, ctx.host.state
    folder = run_folder(run_id, step)
    name = task_name(run_id, step)
    facts: dict[str, Any] = {"run_id": run_id, "step": step, "task_name": name, "folder": folder}

    def failed(message: str) -> None:
        ctx.finish("failed", 1, facts=facts, messages=[message])

    current = detached_state(host, run_id, step)
    if current is not None and (current.state in ("running", "queued") or not restart):
        facts.update(state=current.state, reason=current.reason, attached=True, status=current.status)
        live = current.state in ("running", "queued")
        ctx.finish("ok", 0, facts=facts, messages=[
            "already running: re-attached" if live else f"already {current.state}; pass -Restart to run it again"])

    if not payload:
        payload = _composed(ctx, body, prelude_sha, failed)
    if hashlib.sha256(payload.encode("utf-8")).hexdigest() != payload_sha.lower():
        failed("payload does not match its SHA-256: not staged")
    header = _payload_header(payload)
    if header.get("name", "").lower() != step.lower() or header.get("detached", "").lower() != "yes":
        failed(f"the payload is not the detached step {step} (its header names {header.get('name', '')}, "
               f"detached {header.get('detached', '')})")
    refusal = _unmodelled(payload)
    if refusal is not None:
        raise Stop(1, _lab_error(refusal))
    try:
        parsed = json.loads(parameters_json)
    except json.JSONDecodeError as exc:
        failed(f"-ParametersJson is not a JSON object: {exc}")
    if not isinstance(parsed, dict):
        failed("-ParametersJson must be a JSON object of parameter names and values")
    parameters = {key: value for key, value in parsed.items() if key.lower() not in ("resultmarker", "runid")}
    parameters["RunId"] = run_id

    for old in ("result.json", "status.json"):
        state.files.pop(_file(folder, old).lower(), None)
    state.files[_file(folder, "step.ps1").lower()] = (BOM + payload).encode("utf-8")
    state.files[_file(folder, "runner.ps1").lower()] = (BOM + _runner_text()).encode("utf-8")
    _write_json(state, _file(folder, "params.json"), parameters)
    _write_json(state, _file(folder, "status.json"), {
        "run_id": run_id, "step": step, "task_name": name, "state": "queued", "queued": windows_utc(state.clock),
        "step_sha256": hashlib.sha256(payload.encode("utf-8")).hexdigest(),
        "pid": None, "started": None, "percent": 0, "exit_code": None, "finished": None, "boot_utc": None, "error": "",
    })
    state.scheduled_tasks[name] = {
        "path": TASK_PATH, "state": "Running", "principal": "SYSTEM", "run_level": "Highest",
        "execution_time_limit": "PT0S", "multiple_instances": "IgnoreNew",
        "action": "encoded-command",  # Get-WuLoaderCommand's loader of runner.ps1, not -File
        "description": f"wuremote detached step {step} of run {run_id}",
    }
    if state.task_action_runs("encoded-command"):
        _live(host)[name] = asyncio.get_running_loop().create_task(_run_body(host, run_id, step))
    else:  # powershell.exe refuses runner.ps1 (policy or language mode): the step stays queued
        state.scheduled_tasks[name].update(state="Ready", last_result=1)

    waited = 0.0
    current = detached_state(host, run_id, step)
    while current is not None and current.state == "queued" and waited < START_WAIT_SECONDS:
        await host.sleep(0.5)
        waited += 0.5
        current = detached_state(host, run_id, step)
    assert current is not None
    facts.update(state=current.state, attached=False, status=current.status)
    ctx.finish("ok", 0, facts=facts, messages=["started"])


# --- detached-poll ---------------------------------------------------------------------------
@model("detached-poll", sha256="6c8229de108f2d5d436cad5dac71e35283d37df2850724bf4ecfd036eb3a623e")
async def detached_poll(ctx: StepContext) -> None:
    step = text_param(ctx, "Step", STEP_PATTERN, mandatory=True)
    offset = int_param(ctx, "TranscriptOffset", -1, -1, (1 << 63) - 1)
    max_bytes = int_param(ctx, "MaxTranscriptBytes", 262144, 1024, 4194304)
    wait = int_param(ctx, "WaitSeconds", 0, 0, 3600)
    seen_state = text_param(ctx, "SeenState", r"^(|queued|running|finished|interrupted)$")
    seen_percent = text_param(ctx, "SeenPercent", r"^(|\d{1,3})$")
    run_id = text_param(ctx, "RunId")
    if not NAME_PATTERN.match(run_id):
        ctx.finish("failed", 1, messages=[RUN_ID_MESSAGE])
    state = ctx.host.state
    folder = run_folder(run_id, step)
    facts: dict[str, Any] = {"run_id": run_id, "step": step}
    current = await _wait_for_change(ctx.host, run_id, step, seen_state, seen_percent, wait)
    if current is not None and state.status_json_gaps > 0:  # ReplaceFile left a gap (HostState.status_json_gaps)
        state.status_json_gaps -= 1
        current = None
    elif current is not None and state.status_json_held > 0:  # Read-WuSharedText gives up on a held file
        state.status_json_held -= 1
        raise Stop(1, ErrorInfo(
            "Exception calling \".ctor\" with \"4\" argument(s): \"The process cannot access the file "
            "because it is being used by another process.\"", category="NotSpecified",
            fqid="IOException", exception_type="System.IO.IOException", command="New-Object"))
    if current is None:
        ctx.finish("not-applicable", 2, facts=facts, messages=[f"no detached step {step} for run {run_id} on this host"])
    status = current.status
    if current.state == "interrupted" and status.get("state") != "interrupted":
        status.update(state="interrupted", error=current.reason)
        _write_json(state, current.status_path, status)
    facts.update(state=current.state, reason=current.reason, task_state=current.task_state,
                 **{key: status.get(key) for key in ("pid", "percent", "started", "finished", "exit_code")},
                 message=str(status.get("message") or ""))
    facts["result"] = _read_json(state, _file(folder, "result.json")) if current.state == "finished" else None
    if offset >= 0:
        data = state.files.get(_file(folder, "transcript.log").lower())
        facts.update(transcript="", transcript_next_offset=offset)
        if data is not None:
            start = min(offset, len(data))
            chunk = data[start : start + max_bytes]
            if current.state != "finished" and chunk:
                chunk = chunk[: chunk.rfind(b"\n") + 1]  # whole lines only while the step still writes
            facts.update(transcript=chunk.decode("utf-8", errors="replace"), transcript_next_offset=start + len(chunk))
    ctx.finish("ok", 0, facts=facts)


# --- detached-cleanup ------------------------------------------------------------------------
@model("detached-cleanup", sha256="e093fd9ca953c9096e944429fd6efd9b54cb95e22ec5faf6a699aa09d5d71246")
async def detached_cleanup(ctx: StepContext) -> None:
    step = text_param(ctx, "Step", STEP_PATTERN, mandatory=True)
    remove_files = switch(ctx, "RemoveFiles")
    run_id = text_param(ctx, "RunId")
    require_elevated(ctx)
    if not NAME_PATTERN.match(run_id):
        ctx.finish("failed", 1, messages=[RUN_ID_MESSAGE])
    state = ctx.host.state
    folder = run_folder(run_id, step)
    name = task_name(run_id, step)
    facts: dict[str, Any] = {"run_id": run_id, "step": step, "task_name": name}
    current = detached_state(ctx.host, run_id, step)
    if current is not None and (current.state in ("running", "queued") or current.task_state == "Running"):
        facts["state"] = current.state
        ctx.finish("failed", 4, facts=facts,
                   messages=[f"{step} is still {current.state}: it is never stopped; poll until it finishes"])
    changes: list[dict[str, Any]] = []
    if state.scheduled_tasks.pop(name, None) is not None:
        changes.append({"kind": "task-removed", "name": name})
    staged = ["step.ps1", "runner.ps1", "params.json"] + (["status.json", "result.json", "transcript.log"] if remove_files else [])
    for file_name in staged:
        path = _file(folder, file_name)
        if state.files.pop(path.lower(), None) is not None:
            changes.append({"kind": "file-removed", "path": path})
    ctx.finish("ok", 0, facts=facts, changes=changes)

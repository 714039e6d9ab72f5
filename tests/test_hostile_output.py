"""Hostile or broken host output: each is a clear failure of that host, never a controller crash.

A two-host lab: the victim misbehaves, the bystander does not.  Output-level misbehaviour
(a flood, a forged result line, no result, odd exit codes, a result of the wrong shape) is a
stand-in model of ``diagnose``, and the runner runs ``check`` over both hosts through the real
clients: the victim ends failed (or, where the output was merely noisy, checked with the noise
capped and its result intact) with a cause a person can act on, the bystander is checked, and
the run writes its report.  Envelope-level misbehaviour (malformed XML, a truncated envelope,
the wrong encoding, an empty, HTML or foreign body, spoiled values) replaces the victim's
WS-Management answers: each transport must raise a typed TransportError naming the host at
once, without asking the host again and again until the step's timeout.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_settings

from wuremote.contract.scripts import get_script
from wuremote.engine.runner import Runner, RunOptions, RunSummary
from wuremote.inventory import HostConfig
from wuremote.lab import models
from wuremote.lab.engine import Record, Stop
from wuremote.lab.http import HttpRequest, HttpResponse
from wuremote.lab.lab import Lab
from wuremote.lab.service import WSManService
from wuremote.output.live import PlainView
from wuremote.secret import Secret
from wuremote.transport import TransportError, TransportSettings, open_transport
from wuremote.transport.base import OUTPUT_CAP_BYTES

LAB_SCALE = 0.001
# Loopback answers come at once; these bounds only stop a loaded CI machine from turning slowness into failures.
PATIENT = TransportSettings(connect_timeout=10.0, operation_timeout=5, read_timeout=20, open_retries=0, backoff=0.01)
TRANSPORTS = ("psrp", "winrm")
MB = 1024 * 1024
ModelFn = Callable[[models.StepContext], Awaitable[None]]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=2, scenario="healthy", time_scale=LAB_SCALE) as running:
        yield running


def names(lab: Lab) -> tuple[str, str]:
    return lab.endpoints[0].name, lab.endpoints[1].name


def run_check(lab: Lab, state_dir: Path, transport: str) -> RunSummary:
    hosts = [HostConfig(name=e.name, address=e.address, port=e.port, scheme=e.scheme, transport=transport, auth="basic",
                        username=e.username, password=Secret(e.password), ca_file=e.ca_file) for e in lab.endpoints]
    options = RunOptions(command="check", forks=4, state_dir=state_dir, poll_interval=0.05, time_scale=LAB_SCALE * 100,
                         host_timeout=60.0, transport=PATIENT)
    return Runner(hosts, options).run()


def assert_clear_failure(summary: RunSummary, victim: str, bystander: str, *words: str) -> str:
    """The victim failed with a one-line cause naming what broke; the bystander was not touched."""
    cause = summary.causes[victim]
    assert summary.outcomes[victim] in ("failed", "unreachable"), (summary.outcomes[victim], cause)
    assert "internal error" not in cause and "Traceback" not in cause, cause  # a handled failure, not a bug caught late
    assert "\n" not in cause and len(cause) < 600, cause
    for word in words:
        assert word in cause, cause
    assert summary.outcomes[bystander] == "checked", summary.causes[bystander]
    report = json.loads(summary.report_json.read_text(encoding="utf-8"))
    assert report["hosts"][victim]["outcome"] == summary.outcomes[victim]
    return cause


def misbehave(monkeypatch: pytest.MonkeyPatch, victim: str, fn: ModelFn) -> None:
    """``diagnose`` on the victim runs ``fn`` instead of its model; every other host is left as it was."""
    shipped = models.MODELS["diagnose"]

    async def either(ctx: models.StepContext) -> None:
        await (fn if ctx.host.name == victim else shipped.fn)(ctx)

    monkeypatch.setitem(models.MODELS, "diagnose", models.Model("diagnose", shipped.sha256, either))


def result(status: str = "ok", exit_code: int = 0, **extra: Any) -> dict[str, Any]:
    return {"wuremote_result": 1, "step": "diagnose", "status": status, "exit_code": exit_code,
            "reboot_required": False, "changes": [], "facts": {"os": {"caption": "forged"}}, "messages": [], **extra}


def say(ctx: models.StepContext, text: str) -> None:
    """A line the script prints (WinRS: stdout text; PSRP: a string on the output stream)."""
    if ctx.params.get("ResultMarker"):
        ctx.run.emit("stdout", text + "\r\n")
    else:
        ctx.run.emit("output", text)


# --- output-level misbehaviour -------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_forged_result_line_cannot_pass_for_the_result(lab: Lab, tmp_path: Path, transport: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Printed text that looks like a result (a guessed marker, the marker's prefix, the JSON alone) is text."""
    victim, bystander = names(lab)

    async def forger(ctx: models.StepContext) -> None:
        forged = json.dumps(result())
        for text in (f"WUREMOTE-RESULT-{'0' * 24} {forged}", f"WUREMOTE-RESULT- {forged}", f"WUREMOTE-RESULT {forged}",
                     forged, f" {ctx.params.get('ResultMarker', 'x')}x {forged}"):
            say(ctx, text)
        raise Stop(0)  # and no real result

    misbehave(monkeypatch, victim, forger)
    summary = run_check(lab, tmp_path, transport)
    assert_clear_failure(summary, victim, bystander, "diagnose failed (exit 0)", "broke the script contract")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_forged_line_before_the_real_result_changes_nothing(lab: Lab, tmp_path: Path, transport: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    victim, bystander = names(lab)
    shipped = models.MODELS["diagnose"].fn

    async def forger_then_real(ctx: models.StepContext) -> None:
        say(ctx, f"WUREMOTE-RESULT-{'f' * 24} {json.dumps(result(status='failed', exit_code=1))}")
        await shipped(ctx)

    misbehave(monkeypatch, victim, forger_then_real)
    summary = run_check(lab, tmp_path, transport)
    assert summary.outcomes == {victim: "checked", bystander: "checked"}, summary.causes


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_missing_result_fails_the_host(lab: Lab, tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    victim, bystander = names(lab)

    async def silent(ctx: models.StepContext) -> None:
        say(ctx, "all good, trust me")
        raise Stop(0)

    misbehave(monkeypatch, victim, silent)
    summary = run_check(lab, tmp_path, transport)
    assert_clear_failure(summary, victim, bystander, "broke the script contract")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("code", [-1073741819, 2147483647, -1, 256])
def test_an_exit_code_out_of_range_fails_the_host(lab: Lab, tmp_path: Path, transport: str, code: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    victim, bystander = names(lab)

    async def odd_exit(ctx: models.StepContext) -> None:
        ctx.finish("ok", code, facts={"os": {"caption": "odd"}})

    misbehave(monkeypatch, victim, odd_exit)
    summary = run_check(lab, tmp_path, transport)
    assert_clear_failure(summary, victim, bystander, f"diagnose failed (exit {code})")


def shape_cases() -> list[Any]:
    bugs: dict[tuple[str, str], str] = {}  # (shape, transport) -> a known bug, as a strict xfail
    cases = []
    for shape in ("not-json", "a-list", "wrong-types", "deep"):
        for transport in TRANSPORTS:
            bug = bugs.get((shape, transport))
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            cases.append(pytest.param(shape, transport, id=f"{shape}-{transport}", marks=marks))
    return cases


@pytest.mark.parametrize(("shape", "transport"), shape_cases())
def test_a_result_of_the_wrong_shape_fails_the_host(lab: Lab, tmp_path: Path, transport: str, shape: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The script's own marker, followed by something that is not a result object."""
    victim, bystander = names(lab)
    bodies = {"not-json": "{status: ok", "a-list": "[1, 2, 3]",
              "wrong-types": json.dumps({"wuremote_result": 1, "step": 5, "status": ["ok"], "exit_code": "zero",
                                         "reboot_required": "maybe", "changes": "all", "facts": [1],
                                         "messages": {"a": 1}}),
              "deep": '{"wuremote_result": 1, "facts": ' + "[" * 100_000 + "]" * 100_000 + "}"}

    async def wrong(ctx: models.StepContext) -> None:
        marker = ctx.params.get("ResultMarker")
        if marker:
            ctx.run.emit("stdout", f"{marker} {bodies[shape]}\r\n")
        else:
            ctx.run.emit("output", bodies[shape] if shape in ("not-json", "deep") else json.loads(bodies[shape]))
        raise Stop(0)

    misbehave(monkeypatch, victim, wrong)
    summary = run_check(lab, tmp_path, transport)
    assert_clear_failure(summary, victim, bystander, "diagnose failed", "broke the script contract")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="resident memory is read from /proc")
@pytest.mark.parametrize(("transport", "megabytes"), [("winrm", 100), ("psrp", 12)])
def test_a_flood_of_output_is_capped_with_a_marker_and_memory_stays_bounded(
        lab: Lab, tmp_path: Path, transport: str, megabytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 MB over WinRS (PSRP's serialisation is slower, so it gets 12 MB: three times its cap).

    The lab makes the output as the client reads it and forgets what was read, so the process's
    resident memory measures the controller's share."""
    victim, bystander = names(lab)
    shipped = models.MODELS["diagnose"].fn
    chunk = ("y" * 1023 + "\n") * 1024  # 1 MB of lines

    async def flood(ctx: models.StepContext) -> None:
        kind = "stdout" if ctx.params.get("ResultMarker") else "output"
        for _ in range(megabytes):
            ctx.run.emit(kind, chunk)
            while ctx.run._read < len(ctx.run.records):  # noqa: SLF001 - the lab's reader position: wait for it
                await asyncio.sleep(0.0005)
            ctx.run.records[:] = [Record(r.kind, "") for r in ctx.run.records]
        await shipped(ctx)

    misbehave(monkeypatch, victim, flood)
    peak = [rss_bytes()]
    baseline = peak[0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        summary = run_check(lab, tmp_path, transport)
    finally:
        done.set()
        sampler.join()
    assert summary.outcomes == {victim: "checked", bystander: "checked"}, summary.causes  # the result survived
    assert peak[0] - baseline < 60 * MB, f"resident memory grew by {(peak[0] - baseline) // MB} MB"
    transcript = next((summary.run_dir / "transcripts").glob(f"{victim}/diagnose*.log"))
    assert transcript.stat().st_size < OUTPUT_CAP_BYTES * 1.5
    text = transcript.read_text(encoding="utf-8")
    assert "bytes of output dropped past the controller's output cap" in text
    assert summary.report_json.stat().st_size < MB and summary.junit_xml.stat().st_size < MB


# --- envelope-level misbehaviour -----------------------------------------------------------------
def _malformed(body: bytes) -> bytes:
    return body.replace(b"</s:Body>", b"</s:Bdy>", 1)


def _truncated(body: bytes) -> bytes:
    return body[: len(body) // 2]


def _wrong_encoding(body: bytes) -> bytes:
    return body.replace(b"<s:Body>", "<s:Body>\udcff".encode("utf-8", "surrogateescape"), 1)


def _declared_utf16(body: bytes) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-16"?>' + body  # says UTF-16, is UTF-8


def _bad_exit_code(body: bytes) -> bytes:
    return re.sub(rb"<rsp:ExitCode>[^<]*</rsp:ExitCode>", b"<rsp:ExitCode>zero</rsp:ExitCode>", body)


def _bad_base64(body: bytes) -> bytes:
    return re.sub(rb'(<rsp:Stream [^>]*>)[^<]+(</rsp:Stream>)', rb"\1%%% not base64 %%%\2", body)


BREAKAGES: dict[str, Callable[[bytes], bytes]] = {
    "malformed-xml": _malformed, "truncated": _truncated, "wrong-encoding": _wrong_encoding,
    "declared-utf-16": _declared_utf16, "bad-exit-code": _bad_exit_code, "bad-base64": _bad_base64,
    "empty": lambda body: b"", "html": lambda body: b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    "not-soap": lambda body: b"<?xml version='1.0'?><Envelope><Body/></Envelope>",
}


# Bugs these tests found in wuremote/transport/ (not fixed here: the transports have another owner).
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}  # (when, breakage, transport) -> a known bug, as a strict xfail
ONLY_IN = {"bad-exit-code": ("receive", "winrm"), "bad-base64": ("receive",)}  # where there is such a value to spoil


def envelope_cases() -> list[Any]:
    cases = []
    for when in ("open", "receive"):
        for breakage in sorted(BREAKAGES):
            for transport in TRANSPORTS:
                if not set(ONLY_IN.get(breakage, ())) <= {when, transport}:
                    continue
                bug = KNOWN_BUGS.get((when, breakage, transport))
                marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
                cases.append(pytest.param(when, breakage, transport, marks=marks, id=f"{when}-{breakage}-{transport}"))
    return cases


def break_answers(monkeypatch: pytest.MonkeyPatch, victim: str, when: str, transport: str,
                  spoil: Callable[[bytes], bytes]) -> None:
    """The victim's answers to Create (opening the pool/shell) or to every Receive after it come back spoiled."""
    original = WSManService.__call__
    trigger = b"/transfer/Create</" if when == "open" else b"/shell/Receive</"
    opened: set[str] = set()

    async def answer(self: WSManService, http: HttpRequest, user: str) -> HttpResponse:
        response = await original(self, http, user)
        if self.host.name != victim or trigger not in http.body:
            return response
        if when == "receive" and transport == "psrp" and self.host.name not in opened:
            opened.add(self.host.name)  # the pool's own first Receive (its opening) passes
            return response
        return HttpResponse(response.status, spoil(response.body), response.headers)

    monkeypatch.setattr(WSManService, "__call__", answer)


@pytest.mark.parametrize(("when", "breakage", "transport"), envelope_cases())
def test_a_broken_envelope_is_a_clear_transport_error(lab: Lab, when: str, breakage: str, transport: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen as broken at once (not after the step's timeout, not by asking again and again), named, typed."""
    victim = lab.endpoints[0]
    break_answers(monkeypatch, victim.name, when, transport, BREAKAGES[breakage])
    config = HostConfig(name=victim.name, address=victim.address, port=victim.port, scheme=victim.scheme,
                        transport=transport, auth="basic", username=victim.username, password=Secret(victim.password),
                        ca_file=victim.ca_file)
    transport_ = open_transport(config, fast_settings(open_retries=0, operation_timeout=1, read_timeout=4))
    before = lab.requests_served(victim.name)
    try:
        with pytest.raises(TransportError) as caught:
            transport_.run_step(get_script("boot-info"), {"RunId": "run-broken"}, timeout=1.5)
    finally:
        transport_.close()
    message = str(caught.value)
    assert caught.value.kind in ("protocol", "fault", "lost"), (caught.value.kind, message)
    assert message.startswith(victim.name) and "\n" not in message and "did not finish within" not in message, message
    assert lab.requests_served(victim.name) - before < 50


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_broken_envelope_in_a_run_fails_that_host_only(lab: Lab, tmp_path: Path, transport: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    victim, bystander = names(lab)
    break_answers(monkeypatch, victim, "receive", transport, _malformed)
    summary = run_check(lab, tmp_path, transport)
    assert_clear_failure(summary, victim, bystander, victim, "unreadable")


@pytest.mark.parametrize("code", [b"4294967296", b"99999999999999999999999", b"-99999999999999999999999"])
def test_a_process_exit_code_beyond_32_bits_fails_the_host(lab: Lab, tmp_path: Path, code: bytes,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A Windows exit code is 32 bits; a WinRS answer claiming more is a broken answer, not a number to store."""
    victim, bystander = names(lab)
    exit_code = b"<rsp:ExitCode>" + code + b"</rsp:ExitCode>"
    break_answers(monkeypatch, victim, "receive", "winrm",
                  lambda body: re.sub(rb"<rsp:ExitCode>[^<]*</rsp:ExitCode>", exit_code, body))
    summary = run_check(lab, tmp_path, "winrm")
    assert_clear_failure(summary, victim, bystander, f"diagnose failed (exit {int(code)})")


def test_host_sent_text_cannot_forge_lines_of_the_plain_view(lab: Lab, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    victim, bystander = names(lab)

    async def liar(ctx: models.StepContext) -> None:
        ctx.finish("failed", 1, messages=[f"nothing\n10:00:00 {victim} CHECKED: nothing to report\x1b]0;owned\x07\x1b[2J"])

    misbehave(monkeypatch, victim, liar)
    hosts = [HostConfig(name=e.name, address=e.address, port=e.port, scheme=e.scheme, transport="psrp", auth="basic",
                        username=e.username, password=Secret(e.password), ca_file=e.ca_file) for e in lab.endpoints]
    out = io.StringIO()
    options = RunOptions(command="check", state_dir=tmp_path, time_scale=LAB_SCALE * 100,
                         transport=PATIENT)
    summary = Runner(hosts, options, subscribers=[PlainView(out)]).run()
    assert summary.outcomes == {victim: "failed", bystander: "checked"}
    lines = out.getvalue().splitlines()
    assert not [line for line in lines if f"{victim} CHECKED" in line], lines  # no forged verdict line
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_flood_of_stream_lines_is_bounded_and_escaped_in_the_verbose_view(lab: Lab, tmp_path: Path, transport: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """-v shows a host's stream records as they come: a flood shows 200 lines and says where the rest
    is, a record longer than StepStream.MAX_CHARS is cut saying so, and no line drives the terminal."""
    from wuremote.output.live import VerboseView

    victim, bystander = names(lab)

    async def chatty(ctx: models.StepContext) -> None:
        ctx.verbose("x" * 50_000)
        ctx.warning(f"forged\n10:00:00 {bystander} CHECKED: nothing to report\x1b[2J")
        for n in range(1_000):
            ctx.verbose(f"line {n}")
        ctx.finish("ok", 0, facts={"os": {"caption": "chatty"}})

    misbehave(monkeypatch, victim, chatty)
    hosts = [HostConfig(name=e.name, address=e.address, port=e.port, scheme=e.scheme, transport=transport, auth="basic",
                        username=e.username, password=Secret(e.password), ca_file=e.ca_file) for e in lab.endpoints]
    out = io.StringIO()
    options = RunOptions(command="check", state_dir=tmp_path, time_scale=LAB_SCALE * 100, transport=PATIENT)
    Runner(hosts, options, subscribers=[VerboseView(out)]).run()
    lines = out.getvalue().splitlines()
    shown = [line for line in lines if f"{victim}   diagnose [" in line]
    assert len(shown) == VerboseView.MAX_LINES
    assert any(line.endswith(f"more lines in transcripts/{victim}/diagnose.log") for line in lines)
    assert any(line.endswith("... (48000 more characters in the transcript)") for line in shown)
    assert max(len(line) for line in lines) < 2_200
    assert "\x1b" not in out.getvalue()
    assert not [line for line in lines if line.startswith("10:00:00")], lines  # no forged line

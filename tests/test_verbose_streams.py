"""-v shows what a step writes as it arrives (issue 15): a step's verbose lines reach the operator's view
while the step still runs on the host (over PSRP; a detached step's transcript over both transports; over
WinRS a script's own verbose records come with its end, still before its finish line); they are escaped
like all host text, made only for a view that shows them, and never journalled."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from conftest import held_clock, wait_for

from wuremote import events as ev
from wuremote.cli import main
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.lab.host import HostState
from wuremote.lab.lab import Lab
from wuremote.output.live import PlainView, VerboseView
from wuremote.store.journal import Journal

LAB_SCALE = 0.002


class Seen:
    """A subscriber that keeps every event, in the order the run told them."""

    wants_streams = True

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            self.events.append(event)

    def streamed(self, step: str, text: str) -> bool:
        with self._lock:
            return any(isinstance(e, ev.StepStream) and e.step == step and text in e.text for e in self.events)

    def finished(self, step: str) -> bool:
        with self._lock:
            return any(isinstance(e, ev.StepFinished) and e.step == step for e in self.events)


def resyncing(state: HostState):  # noqa: ANN201 - a held_clock `when`
    """sync-time has started w32time and is about to wait for `w32tm /resync`: hold the host there."""
    def now() -> bool:
        w32time = state.services.get("w32time")
        return state.scripts_run[-1:] == ["sync-time"] and w32time is not None and w32time.status == "Running"
    return now


def dism_running(state: HostState):  # noqa: ANN201 - a held_clock `when`
    """DISM's body runs on the host (its status file says so): hold the host's time there."""
    def now() -> bool:
        return any(path.endswith("\\dism\\status.json") and b'"running"' in data for path, data in state.files.items())
    return now


def run_held(lab: Lab, tmp_path: Path, transport: str, when, step: str, text: str) -> tuple[Seen, str]:  # noqa: ANN001
    """A repair of the lab's one host, held on the host while `when()`; returns once the run is over,
    having checked that `text` of `step` reached both the subscriber and a -v view while the step ran."""
    host = lab.host(lab.endpoints[0].name)
    seen, out = Seen(), io.StringIO()
    runner = Runner(demo_hosts(lab, transport), demo_options(tmp_path / "state"), subscribers=[seen, VerboseView(out)])
    result: list[object] = []
    with held_clock(lab, host, when=when(host.state)) as clock:
        thread = threading.Thread(target=lambda: result.append(runner.run()), daemon=True)
        thread.start()
        wait_for(lambda: bool(clock.waits), what=f"{step} held on the host")
        wait_for(lambda: seen.streamed(step, text), what=f"{step}'s line {text!r} shown while the step runs")
        assert not seen.finished(step)  # the host still holds the step: the line came as it was written
        shown = out.getvalue()
    thread.join(timeout=120)
    assert result, "the run did not end"
    return seen, shown


def test_a_steps_verbose_line_is_shown_while_the_step_still_runs(tmp_path: Path) -> None:
    with Lab(scenario="clock-skew", hosts=1, time_scale=LAB_SCALE) as lab:
        seen, shown = run_held(lab, tmp_path, "psrp", resyncing, "sync-time", "w32tm /resync")
    assert f"{lab.endpoints[0].name}   sync-time [verbose] w32tm /resync" in shown
    assert any(isinstance(e, ev.HostFinished) and e.outcome.value == "repaired" for e in seen.events)


def test_over_winrs_a_steps_verbose_lines_come_before_its_end(tmp_path: Path) -> None:
    """powershell.exe writes them to stderr as CLIXML through an XmlWriter it never flushes per record
    (WrappedSerializer in PowerShell/PowerShell src/Microsoft.PowerShell.ConsoleHost/host/msh/Serialization.cs),
    so they arrive in buffer-sized pieces or at the end; the lab sends the document at the end.  Over
    WinRS they are shown with the step's end, still before its finish line."""
    seen = Seen()
    with Lab(scenario="clock-skew", hosts=1, time_scale=LAB_SCALE) as lab:
        Runner(demo_hosts(lab, "winrm"), demo_options(tmp_path / "state"), subscribers=[seen]).run()
    kinds = [(type(e), e.step) for e in seen.events]
    assert kinds.index((ev.StepStream, "sync-time")) < kinds.index((ev.StepFinished, "sync-time"))
    assert seen.streamed("sync-time", "w32tm /resync")


@pytest.mark.parametrize("transport", ["psrp", "winrm"])
def test_a_detached_steps_transcript_is_shown_at_each_poll(tmp_path: Path, transport: str) -> None:
    with Lab(scenario="component-store-corrupt", hosts=1, time_scale=LAB_SCALE) as lab:
        _, shown = run_held(lab, tmp_path, transport, dism_running, "dism", "Deployment Image Servicing")
    assert "   dism [verbose] Deployment Image Servicing and Management tool" in shown  # a transcript's VERBOSE: line
    assert "Windows PowerShell transcript start" not in shown  # Start-Transcript's banner is boilerplate


def test_stream_lines_are_made_only_for_a_view_that_shows_them_and_never_journalled(tmp_path: Path) -> None:
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        plain = Seen()
        plain.wants_streams = False
        Runner(demo_hosts(lab), demo_options(tmp_path / "a", "check"), subscribers=[plain]).run()
        verbose = Seen()
        summary = Runner(demo_hosts(lab), demo_options(tmp_path / "b", "check"), subscribers=[verbose]).run()
    assert not any(isinstance(e, ev.StepStream) for e in plain.events)
    assert any(isinstance(e, ev.StepStream) and e.stream == "verbose" for e in verbose.events)
    assert not any("wuremote_result" in e.text for e in verbose.events if isinstance(e, ev.StepStream))
    with Journal(tmp_path / "b") as journal:
        kinds = {e.kind for e in journal.events(summary.run_id)}
    assert "step-finished" in kinds and "step-stream" not in kinds


def test_host_text_in_a_stream_line_is_escaped() -> None:
    out = io.StringIO()
    view = VerboseView(out)
    view(ev.StepStream("r", "web\u202e01", "diagnose", stream="warning", text="ok\x1b[2J\nforged\u202eline\r\n"))
    text = out.getvalue()
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    assert "web\\u202e01   diagnose [warning] ok\\x1b[2J" in text
    assert text.count("\n") == 2  # two lines of the host's, each under its host and step: none forged
    PlainView(out)(ev.StepStream("r", "web01", "diagnose", stream="verbose", text="not for the plain view"))
    assert "not for the plain view" not in out.getvalue()


@pytest.fixture(scope="module")
def lab_inventory(tmp_path_factory) -> tuple[Lab, Path]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("lab")
    with Lab(hosts=1, scenario="healthy", time_scale=LAB_SCALE) as lab:
        inventory = root / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        yield lab, inventory


def test_verbose_cli_shows_the_lines_before_the_step_ends(lab_inventory, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    _, inventory = lab_inventory
    assert main(["check", "-i", str(inventory), "-v", "--state-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    streamed = next(i for i, line in enumerate(out) if "   diagnose [verbose] " in line)
    assert streamed < next(i for i, line in enumerate(out) if " diagnose ok " in line)
    assert not any("wuremote_result" in line for line in out)  # the result object stays in report.json


def test_json_shows_stream_lines_only_with_verbose(lab_inventory, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    _, inventory = lab_inventory
    assert main(["check", "-i", str(inventory), "--json", "--state-dir", str(tmp_path / "a")]) == 0
    quiet = [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()]
    assert main(["check", "-i", str(inventory), "--json", "-v", "--state-dir", str(tmp_path / "b")]) == 0
    loud = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "step-stream" not in quiet
    streams = [e for e in loud if e["kind"] == "step-stream"]
    assert streams and streams[0]["step"] == "diagnose" and streams[0]["data"]["stream"] == "verbose"


def test_a_detached_step_run_again_shows_only_its_own_transcript(tmp_path: Path) -> None:
    """verify runs twice (baseline, then after dism) and its transcript file on the host grows by one
    run each time (Start-Transcript -Append): the second run shows and keeps only what it wrote."""
    out = io.StringIO()
    with Lab(scenario="component-store-corrupt", hosts=1, time_scale=LAB_SCALE) as lab:
        summary = Runner(demo_hosts(lab), demo_options(tmp_path / "state"), subscribers=[VerboseView(out)]).run()
    name = lab.endpoints[0].name
    transcripts = summary.report_json.parent / "transcripts" / name
    assert (transcripts / "verify-2.log").read_text(encoding="utf-8").count("Windows PowerShell transcript start") == 1
    shown = out.getvalue().splitlines()
    assert not any("transcript start" in line or "[transcript] Start time" in line for line in shown)

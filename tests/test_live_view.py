"""What a person sees at 80 columns (issue 15): host names told apart, the outcome and the last event
readable; a live run ends with the per-host table and names report.html; piped output is not wrapped."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from rich.console import Console

from wuremote import events as ev
from wuremote.cli import main
from wuremote.contract import Outcome
from wuremote.lab.lab import Lab
from wuremote.output.live import LiveView

RUN = "20261126-093700-ab12"
LONG = ["web-paris-frontend-0017", "web-paris-frontend-0018", "db-berlin-primary-01"]


def screen(width: int) -> list[str]:
    console = Console(width=width, height=30, file=io.StringIO(), force_terminal=False, color_system=None)
    view = LiveView(console, LONG)
    now = time.time()
    for name in LONG[:2]:
        view(ev.HostStarted(RUN, name, time=now, address=name, transport="psrp"))
        view(ev.StepStarted(RUN, name, "reset-components", time=now, reason="verify failed"))
        view(ev.StepProgress(RUN, name, "reset-components", time=now, percent=40, message="stopping services"))
    view(ev.HostStarted(RUN, LONG[2], time=now, address=LONG[2], transport="psrp"))
    view(ev.HostFinished(RUN, LONG[2], time=now, outcome=Outcome.NEEDS_OPERATOR,
                         cause="DISM needs a repair source (0x800F081F): set dism_source"))
    console.print(view._render())
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def test_the_live_view_at_80_columns() -> None:
    lines = screen(80)
    # under 80: a full-width last line would let the ^C a terminal echoes wrap, and the view erased on
    # exit would leave a stale header behind (seen under tmux)
    assert all(len(line) < 80 for line in lines), lines
    rows = {line.split()[0]: line for line in lines[2:] if line.strip()}
    firsts = list(rows)
    assert len(firsts) == 3 and firsts[0] != firsts[1]  # the two web hosts stay distinguishable
    assert firsts[0].endswith("0017") or firsts[0].endswith("0018")
    failed = next(line for line in lines[2:] if "needs-operator" in line)  # the outcome, whole
    assert "DISM needs a repair" in failed  # the last event: its start readable
    running = next(line for line in lines if "0017" in line)
    assert "reset-components" in running and "stopping services" in running


def test_a_wide_terminal_keeps_the_progress_bar_and_whole_names() -> None:
    lines = screen(140)
    assert any("web-paris-frontend-0017" in line for line in lines)
    assert "progress" in lines[1] and "boots" in lines[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_live_run_ends_with_the_per_host_table_and_names_every_artifact(tmp_path: Path, monkeypatch) -> None:
    with Lab(hosts=2, scenario="healthy", time_scale=0.002) as lab:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        terminal = Terminal()
        monkeypatch.setattr("sys.stdout", terminal)
        assert main(["check", "-i", str(inventory), "--state-dir", str(tmp_path / "s")]) == 0
    lines = terminal.getvalue().splitlines()
    table = [line for line in lines if line.startswith("  WULAB")]
    assert len(table) == 2 and all(" checked " in line for line in table)
    assert "report.json" in lines[-1] and "junit.xml" in lines[-1] and "report.html" in lines[-1]


@pytest.mark.slow
def test_the_demo_piped_says_its_own_exit_and_never_wraps(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--plain", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(exit 1)" not in out and out.rstrip().endswith("(exit 0)")
    summary = [line for line in out.splitlines() if line.startswith("  WULAB")]
    assert len(summary) == 13  # one whole line per host, however long its cause
    assert any(len(line) > 80 for line in summary)


def test_a_step_that_never_answered_says_why_not_exit_none() -> None:
    out = io.StringIO()
    from wuremote.output.live import PlainView

    PlainView(out)(ev.StepFinished(RUN, "web01", "dism", exit_code=None, status="error", error_kind="interrupted",
                                   messages=["interrupted by the operator; a detached step keeps running"]))
    line = out.getvalue()
    assert "exit None" not in line and "0.0s" not in line
    assert line.rstrip().endswith("web01 dism ended without a result (interrupted): interrupted by the operator; "
                                  "a detached step keeps running")


def test_the_last_event_stays_readable_while_a_step_only_reports_its_percent() -> None:
    console = Console(width=80, height=30, file=io.StringIO(), force_terminal=False, color_system=None)
    view = LiveView(console, ["web01", "web02"])
    now = time.time()
    for name in ("web01", "web02"):
        view(ev.HostStarted(RUN, name, time=now, address=name, transport="psrp"))
    view(ev.StepStarted(RUN, "web01", "verify", time=now, reason="baseline"))
    view(ev.StepProgress(RUN, "web01", "verify", time=now, percent=30))
    view(ev.RebootRequested(RUN, "web02", time=now))
    console.print(view._render())
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    web01 = next(line for line in lines if line.startswith("web01"))
    web02 = next(line for line in lines if line.startswith("web02"))
    assert "verify 30%" in web01 and web01.rstrip().endswith(" baseline")  # why it runs: the step column names it
    assert "reboot-requested" not in web02 and "restart sent" in web02

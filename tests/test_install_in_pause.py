"""Installing with --install on a host whose antivirus blocks the update agent (issue 16): the
pause av-pause made for the repair is kept until the install is over, so the updates download;
the antivirus is on again at the end, and on a path out that ends the host early as well."""

from __future__ import annotations

import io
import json
import re
import signal
from contextlib import ExitStack

import pytest
from conftest import held_clock, wait_for
from test_interrupt_resume import av_lab, paused, realtime_on, run_id_of, start, wait_until  # noqa: F401 - av_lab: the fixture, used by name

from wuremote import events as ev
from wuremote.contract.updates import DEFAULT_CATEGORIES
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.progress import progress_of
from wuremote.engine.runner import Runner
from wuremote.lab.host import HostState
from wuremote.lab.lab import Lab
from wuremote.output.live import PlainView
from wuremote.store.journal import Journal

LAB_SCALE = 0.002
FLEET = """
[[hosts]]
scenario = "av-interference"
name = "PAUSED"

[[hosts]]
scenario = "av-interference"
name = "BYHAND"          # the .NET update installs only by hand: the install ends needs-operator
[hosts.state]
manual_kb = "KB5068794"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("pause")
    (folder / "fleet.toml").write_text(FLEET, encoding="utf-8")
    with Lab(scenario=folder / "fleet.toml", time_scale=LAB_SCALE) as lab:
        seen: list[ev.Event] = []
        plain = io.StringIO()
        summary = Runner(demo_hosts(lab, "psrp", DEFAULT_CATEGORIES), demo_options(folder / "state"),
                         subscribers=[seen.append, PlainView(plain)]).run()
        antivirus = {e.name: lab.call(lambda n=e.name: (lab.host(n).state.antivirus.realtime_enabled,
                                                        sorted(lab.host(n).state.scheduled_tasks)))
                     for e in lab.endpoints}
        installed = {e.name: lab.call(lambda n=e.name: dict(lab.host(n).state.install_counts)) for e in lab.endpoints}
        yield summary, seen, antivirus, installed, plain.getvalue()


def _installing(state: HostState) -> bool:
    """install-updates' body runs on the host (its status file says so); read on the lab's loop."""
    return any(key.endswith("\\install-updates\\status.json")
               and json.loads(data.decode("utf-8-sig")).get("state") == "running" for key, data in list(state.files.items()))


def _steps(seen: list[ev.Event], host: str) -> list[str]:
    return [e.step for e in seen if isinstance(e, ev.StepStarted) and e.host == host]


def test_the_updates_install_inside_the_pause_and_the_antivirus_is_resumed_after(run) -> None:  # type: ignore[no-untyped-def]
    summary, seen, antivirus, installed, _ = run
    assert summary.outcomes["PAUSED01"] == "patched", summary.causes["PAUSED01"]
    assert installed["PAUSED01"] == {"KB5068787": 1, "KB5068862": 1, "KB5068794": 1}  # the .NET update too
    steps = _steps(seen, "PAUSED01")
    last_install = max(i for i, step in enumerate(steps) if step == "install-updates")
    assert steps.index("av-pause") < steps.index("install-updates")
    assert steps.count("av-resume") == 1 and steps.index("av-resume") > last_install
    realtime, tasks = antivirus["PAUSED01"]
    assert realtime and not any("failsafe-av" in task for task in tasks)  # resumed, fail-safe removed


def test_an_install_that_ends_the_host_early_still_resumes_the_antivirus(run) -> None:  # type: ignore[no-untyped-def]
    summary, seen, antivirus, _, _ = run
    assert summary.outcomes["BYHAND01"] == "needs-operator"
    assert "KB5068794 failed to install with 0x8024200B" in summary.causes["BYHAND01"]
    assert "owed" not in summary.causes["BYHAND01"]
    realtime, tasks = antivirus["BYHAND01"]
    assert realtime and not any("failsafe-av" in task for task in tasks)
    steps = _steps(seen, "BYHAND01")
    assert steps.index("av-resume") > steps.index("install-updates")


def test_the_pause_line_names_its_deadline_once_in_utc(run) -> None:  # type: ignore[no-untyped-def]
    """The line the operator reads: "paused until 2026-11-29 15:43:21 UTC", not "15:43:21Z UTC"."""
    *_, plain = run
    lines = [line for line in plain.splitlines() if "PAUSED01" in line and "antivirus paused until" in line]
    assert lines
    for line in lines:
        assert re.search(r"antivirus paused until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC at the latest", line), line


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_while_installing_inside_the_pause_resumes_the_antivirus(av_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The pause kept for the install is owed like any other: Ctrl-C mid-install pays it before exit."""
    lab, inventory, env = av_lab
    state = tmp_path / "state"
    with ExitStack() as held:
        # Each host's install, once its body runs, waits for the test: the Ctrl-C lands mid-install.
        for endpoint in lab.endpoints:
            host = lab.host(endpoint.name)
            held.enter_context(held_clock(lab, host, lambda s=host.state: _installing(s)))
        process = start(["repair", "-i", str(inventory), "--install", "--plain", "--state-dir", str(state)], env)
        wait_until(state, lambda rows: paused(rows) and any(
            kind == "step-started" and step == "install-updates" for kind, _, step, _ in rows))
        wait_for(lambda: any(lab.call(lambda n=e.name: _installing(lab.host(n).state)) for e in lab.endpoints),
                 what="an install running")
        assert realtime_on(lab) != [True, True]  # the install runs with the antivirus paused
        process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    assert realtime_on(lab) == [True, True]
    with Journal(state) as journal:
        progress = progress_of(journal.events(run_id_of(state)))
    assert all(not p.owed for p in progress.values())

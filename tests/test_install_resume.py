"""A kill -9 of a real `wuremote repair --install` while an update installs, then `wuremote resume`:
the resumed run re-attaches to the install the killed one started and ends with each update
installed once (issue 16, "Done when")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import held_clock, wait_for
from test_interrupt_resume import run_id_of, start, wait_until
from test_recovery import outcomes

from wuremote.lab.host import HostState
from wuremote.lab.lab import Lab

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
LAB_SCALE = 0.0005


def installing(state: HostState):  # noqa: ANN201 - a held_clock `when`
    """install-updates' body is installing its first update (status.json says so): hold the host's time there."""
    def now() -> bool:
        return any(path.endswith("\\install-updates\\status.json") and b"1/2 KB5068787" in data
                   for path, data in state.files.items())
    return now


def started_install(rows) -> bool:  # noqa: ANN001
    return any(kind == "step-started" and step == "install-updates" for kind, _, step, _ in rows)


def test_kill_during_an_install_then_resume_installs_each_update_once(tmp_path: Path) -> None:
    with Lab(scenario="healthy", hosts=1, time_scale=LAB_SCALE) as lab:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        env = {**os.environ, "WUREMOTE_PASSWORD": lab.endpoints[0].password}
        name = lab.endpoints[0].name
        host = lab.host(name)
        state = tmp_path / "state"
        with held_clock(lab, host, when=installing(host.state)) as clock:
            process = start(["repair", "-i", str(inventory), "--install", "--plain", "--state-dir", str(state)], env)
            wait_until(state, started_install)
            wait_for(lambda: bool(clock.waits), what="the first update held mid-install on the host")
            process.kill()
            process.communicate(timeout=10)
            assert lab.call(lambda: dict(host.state.install_counts)) == {}
        resumed = start(["resume", run_id_of(state), "--plain", "--state-dir", str(state)], env)
        out, _ = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, out
        assert outcomes(state) == {name: "patched"}
        assert lab.call(lambda: dict(host.state.install_counts)) == {"KB5068787": 1, "KB5068862": 1, "KB5068794": 1}
        # one body per round: the killed run's first round, collected by the resume, then the second wave's
        assert lab.call(lambda: host.state.scripts_run.count("install-updates")) == 2

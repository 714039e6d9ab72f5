"""The engine's promises that are not about one scenario: resume runs as the run began, and a
broken subscriber is said once without stopping the repair."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from wuremote import events as ev
from wuremote.cli import main
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.reboot import RebootSettings
from wuremote.engine.runner import Runner
from wuremote.lab.lab import Lab
from wuremote.store.journal import Journal
from wuremote.transport import TransportSettings

LAB_SCALE = 0.002


def test_resume_runs_with_the_options_the_run_began_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    options = replace(demo_options(state), forks=3, poll_interval=0.07, time_scale=0.05, host_timeout=250.0,
                      max_fail_percent=40.0,
                      transport=TransportSettings(connect_timeout=4.0, operation_timeout=6, read_timeout=16,
                                                  open_retries=2, backoff=0.2),
                      reboot=RebootSettings(poll_interval=0.2, shutdown_timeout=31, boot_timeout=32,
                                            readiness_timeout=33, stability_window=0.3, probe_timeout=11))
    with Lab(scenario="healthy", hosts=2, time_scale=LAB_SCALE) as lab:
        monkeypatch.setenv("WUREMOTE_PASSWORD", lab.endpoints[0].password)
        hosts = demo_hosts(lab)
        runner: Runner

        def stop_at_the_first_host(event: ev.Event) -> None:
            if isinstance(event, ev.HostStarted):
                runner.cancel()

        runner = Runner(hosts, options, subscribers=[stop_at_the_first_host])
        first = runner.run()
        assert first.interrupted
        assert main(["resume", first.run_id, "--plain", "--state-dir", str(state)]) in (0, 1)
    with Journal(state) as journal:
        starts = [e for e in journal.events(first.run_id) if isinstance(e, ev.RunStarted)]
    assert len(starts) == 2
    assert starts[1].options == starts[0].options  # executor, scheduler, time scale, reboot and transport settings


def test_a_subscriber_that_raises_is_logged_once_and_the_run_goes_on(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    lock = threading.Lock()

    def broken(event: ev.Event) -> None:
        nonlocal calls
        with lock:
            calls += 1
        raise RuntimeError("the view broke")

    with Lab(scenario="healthy", hosts=2, time_scale=LAB_SCALE) as lab, caplog.at_level(logging.ERROR, "wuremote"):
        summary = Runner(demo_hosts(lab), demo_options(tmp_path), subscribers=[broken]).run()
    assert set(summary.outcomes.values()) == {"healthy"}
    said = [r for r in caplog.records if "subscriber" in r.getMessage()]
    assert calls > 10 and len(said) == 1
    assert said[0].exc_info is not None and "the view broke" in str(said[0].exc_info[1])

"""Beyond one controller: CI shards merged into one report, and site-routed Dask workers.

The Dask tests start a real scheduler and two worker processes (nannies), tagged as two
sites, and run the repair against the lab from those processes; one test kills the worker
of a site mid-DISM and checks that the host still ends repaired with DISM run once.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import replace

import pytest

from wuremote.cli import main
from wuremote.demo import demo_hosts, demo_options
from wuremote.engine.runner import Runner
from wuremote.events import Event
from wuremote.inventory import HostConfig
from wuremote.lab.lab import Lab
from wuremote.shard import shard, shard_of

LAB_SCALE = 0.002


def test_every_host_is_in_exactly_one_shard_and_stays_there() -> None:
    names = [f"web{i:03d}" for i in range(200)]
    hosts = [HostConfig(name=n, address=n) for n in names]
    slices = [shard(hosts, k, 4) for k in range(1, 5)]
    assert sorted(h.name for s in slices for h in s) == sorted(names)
    assert all(len(s) > 20 for s in slices)  # spread, not all in one
    grown = hosts + [HostConfig(name="new01", address="new01")]
    assert [h.name for h in shard(grown, 2, 4) if h.name != "new01"] == [h.name for h in slices[1]]
    assert shard_of("WEB001", 4) == shard_of("web001", 4)


def test_bad_shard_flag_is_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "h1", "--shard", "3/2"])
    assert exit_info.value.code == 2
    assert "K/N" in capsys.readouterr().err


@pytest.mark.slow
def test_shard_runs_merge_into_one_report(tmp_path, capsys) -> None:
    spec = tmp_path / "fleet.toml"
    spec.write_text('[[hosts]]\nscenario = "healthy"\ncount = 3\n\n[[hosts]]\nscenario = "corrupt-download-cache"\ncount = 3\n',
                    encoding="utf-8")
    with Lab(scenario=spec, time_scale=LAB_SCALE) as lab:
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        run_dirs = []
        for k in (1, 2):
            state = tmp_path / f"shard{k}"
            assert main(["repair", "-i", str(inventory), "--shard", f"{k}/2", "--plain", "--state-dir", str(state)]) == 0
            run_dirs.append(str(next((state / "runs").iterdir())))
        names = {e.name for e in lab.endpoints}
    capsys.readouterr()
    out = tmp_path / "merged"
    assert main(["report", "merge", *run_dirs, "--out", str(out)]) == 0
    merged = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(merged["hosts"]) == names
    assert sum(merged["run"]["counts"].values()) == 6
    suites = {s.get("name") for s in ET.parse(out / "junit.xml").getroot().iter("testsuite")}
    assert suites == names
    for host in merged["hosts"].values():
        for step in host["steps"]:
            assert (out / step["transcript"]).is_file()
    assert (out / "report.html").is_file()
    assert main(["report", "merge", run_dirs[0], run_dirs[0], "--out", str(tmp_path / "twice")]) == 2
    assert "also in" in capsys.readouterr().err


@contextmanager
def sites_cluster(scenario: str, hosts: int):
    """A lab, a real scheduler and two worker processes (nannies) tagged as the sites paris and berlin."""
    distributed = pytest.importorskip("distributed")
    with Lab(scenario=scenario, hosts=hosts, time_scale=LAB_SCALE) as lab:
        env = {"WUREMOTE_PASSWORD": lab.endpoints[0].password}
        workers = {
            site: {"cls": distributed.Nanny, "options": {"nthreads": 8, "resources": {f"site-{site}": 100},
                                                          "env": env, "host": "127.0.0.1", "dashboard_address": None}}
            for site in ("paris", "berlin")
        }
        scheduler = {"cls": distributed.Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
        with distributed.SpecCluster(scheduler=scheduler, workers=workers, asynchronous=False) as cluster:
            with distributed.Client(cluster) as client:
                client.wait_for_workers(2)
                yield lab, cluster, client


@pytest.fixture
def two_sites():
    with sites_cluster("component-store-corrupt", 4) as running:
        yield running


def site_hosts(lab: Lab) -> list[HostConfig]:
    hosts = demo_hosts(lab)
    return [replace(h, password=None, password_env=None, site="paris" if i % 2 == 0 else "berlin")
            for i, h in enumerate(hosts)]


@pytest.mark.slow
def test_hosts_run_only_on_their_sites_workers(two_sites, tmp_path) -> None:
    lab, cluster, client = two_sites
    site_of_worker = {w.worker_address: name for name, w in cluster.workers.items()}
    seen: list[Event] = []
    options = replace(demo_options(tmp_path), executor="dask", scheduler=cluster.scheduler_address)
    hosts = site_hosts(lab)
    summary = Runner(hosts, options, subscribers=[seen.append]).run()
    assert set(summary.outcomes.values()) == {"repaired"}, summary.causes
    for host in hosts:
        started = [e for e in seen if e.kind == "host-started" and e.host == host.name]
        assert started and site_of_worker[started[0].worker] == host.site
    report = json.loads(summary.report_json.read_text(encoding="utf-8"))
    for host in report["hosts"].values():  # transcripts came back to the controller
        assert all((summary.run_dir / s["transcript"]).is_file() for s in host["steps"])


@pytest.mark.slow
def test_a_worker_killed_mid_dism_does_not_run_dism_twice(two_sites, tmp_path) -> None:
    lab, cluster, client = two_sites
    options = replace(demo_options(tmp_path), executor="dask", scheduler=cluster.scheduler_address)
    hosts = site_hosts(lab)
    victim = hosts[0]  # a paris host
    paris = cluster.workers["paris"].worker_address
    killed = threading.Event()

    def kill_paris_worker_once(event: Event) -> None:
        if event.kind == "step-started" and event.host == victim.name and event.step == "dism" and not killed.is_set():
            killed.set()
            pid = client.run(os.getpid, workers=[paris])[paris]
            os.kill(pid, signal.SIGKILL)

    summary = Runner(hosts, options, subscribers=[kill_paris_worker_once]).run()
    assert killed.is_set()
    assert summary.outcomes[victim.name] == "repaired", summary.causes[victim.name]
    assert set(summary.outcomes.values()) == {"repaired"}
    bodies = lab.call(lambda: lab.host(victim.name).state.scripts_run.count("dism"))
    assert bodies == 1  # re-attached to the running DISM, never started a second one


@pytest.mark.slow
def test_a_reboot_group_cap_holds_across_dask_workers(tmp_path) -> None:
    """reboot_group_cap on Dask: a cluster-wide semaphore per group (it once raised TypeError, failing every host)."""
    with sites_cluster("servicing-in-progress", 3) as (lab, cluster, _):
        options = replace(demo_options(tmp_path), executor="dask", scheduler=cluster.scheduler_address)
        hosts = [replace(h, groups=("web",), reboot_group_cap=1) for h in site_hosts(lab)]
        rebooting: set[str] = set()
        most = 0
        guard = threading.Lock()

        def count(event: Event) -> None:
            nonlocal most
            with guard:
                if event.kind == "reboot-started":
                    rebooting.add(str(event.host))
                    most = max(most, len(rebooting))
                elif event.kind == "reboot-finished":
                    rebooting.discard(str(event.host))

        summary = Runner(hosts, options, subscribers=[count]).run()
    assert set(summary.outcomes.values()) == {"repaired"}, summary.causes
    assert most == 1

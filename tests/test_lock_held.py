"""A per-host lock held by another run: the host ends skipped (not failed, no log collection), and the
message says who holds it, since when, and how to clear a stale lock (issue 15)."""

from __future__ import annotations

import json

from wuremote.cli import main
from wuremote.lab.lab import Lab


def test_a_lock_held_by_another_run_skips_the_host_and_says_who_and_how(tmp_path, capsys) -> None:
    with Lab(hosts=1, scenario="corrupt-download-cache", time_scale=0.002) as lab:
        name = lab.endpoints[0].name
        held = {"run_id": "20261128-220000-beef", "taken_utc": "2026-11-28T22:00:00.0000000Z",
                "expires_utc": "2099-01-01T00:00:00.0000000Z", "host": name}

        def hold() -> None:
            lab.host(name).state.lock = dict(held)

        lab.call(hold)
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(lab.inventory_toml(), encoding="utf-8")
        code = main(["repair", "-i", str(inventory), "--plain", "--state-dir", str(tmp_path / "s")])
        sent = lab.call(lambda: list(lab.host(name).state.scripts_run))
    out = capsys.readouterr().out
    assert code == 1, out
    line = next(line for line in out.splitlines() if f"{name} SKIPPED" in line)
    assert "run 20261128-220000-beef holds the host lock since 2026-11-28T22:00:00" in line
    assert "lock.json" in line and "expires at 2099-01-01" in line
    assert "collect-logs" not in sent and "reset-components" not in sent
    report = json.loads(next((tmp_path / "s" / "runs").glob("*/report.json")).read_text(encoding="utf-8"))
    assert report["hosts"][name]["outcome"] == "skipped"

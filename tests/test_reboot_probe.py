"""A reboot wait's probe opens the pool once and leaves the pacing to the wait: on the real
transport, and through bench/reboot.py's wrapper, which measures it.

A probe that still went through the transport's open retries (3 more tries, 1 -> 2 -> 4 s
apart) would see a host that is back seconds late: the reboot bench's maximum said so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_settings

from wuremote.demo import demo_hosts
from wuremote.engine.reboot import RebootSettings, _probe
from wuremote.lab.lab import Lab
from wuremote.transport import TransportError, open_transport

QUOTA = 2150859173  # a transient fault (the shells quota): the transport's open would try again


def _stamped() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        from reboot import Stamped  # bench/reboot.py
    finally:
        sys.path.pop(0)
    return Stamped


@pytest.mark.parametrize("wrapped", [False, True], ids=["transport", "bench-wrapper"])
def test_a_reboot_probe_opens_once_on_the_real_transport(tmp_path: Path, wrapped: bool) -> None:
    scenario = tmp_path / "busy.toml"
    scenario.write_text('[[hosts]]\nscenario = "healthy"\nname = "busy"\n'
                        f"[hosts.faults]\nhttp500_every = 1\nhttp500_code = {QUOTA}\n", encoding="utf-8")
    with Lab(scenario=scenario, time_scale=0.01) as lab:
        host = demo_hosts(lab)[0]
        transport = open_transport(host, fast_settings(open_retries=3, backoff=0.01))
        if wrapped:
            transport = _stamped()(transport)
        try:
            with pytest.raises(TransportError):
                _probe(transport, "probe-test", RebootSettings(probe_timeout=5))
        finally:
            transport.close()
        served = lab.requests_served(host.name)
    assert served == 1  # one Create; open_retries=3 would have sent four

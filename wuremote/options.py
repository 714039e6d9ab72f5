"""How a run behaves: one record, sent as-is to wherever hosts are worked on (threads or Dask workers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .reboot import RebootSettings
from .transport.common import TransportSettings


@dataclass
class RunOptions:
    """How a run behaves; every field has a default a user can rely on."""

    command: str = "repair"  # repair | check | plan
    forks: int = 20
    max_fail_percent: float = 100.0
    state_dir: Path = Path(".wuremote")
    host_timeout: float = 6 * 3600.0
    poll_interval: float = 5.0  # longest wait between detached-poll calls (they start at 0.25 s and back off)
    time_scale: float = 1.0  # multiplies script timeouts (the lab's scaled hosts finish sooner)
    reboot: RebootSettings = field(default_factory=RebootSettings)
    transport: TransportSettings = field(default_factory=TransportSettings)
    executor: str = "local"  # local (controller threads) | dask (site-routed workers)
    scheduler: str | None = None  # the Dask scheduler's address, for executor "dask"

    def snapshot(self) -> dict[str, Any]:
        return {"command": self.command, "forks": self.forks, "max_fail_percent": self.max_fail_percent,
                "host_timeout": self.host_timeout, "poll_interval": self.poll_interval, "time_scale": self.time_scale}

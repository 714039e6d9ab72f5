"""How a run behaves: one record, sent as-is to wherever hosts are worked on (threads or Dask workers).

The journal keeps its snapshot, so ``wuremote resume`` runs the remaining work exactly as the
run began it: same executor, scheduler, time scale, poll interval, reboot and transport settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..transport import TransportSettings
from .reboot import RebootSettings


@dataclass
class RunOptions:
    """How a run behaves; every field has a default a user can rely on."""

    command: str = "repair"  # repair | check | plan
    forks: int = 20
    max_fail_percent: float = 100.0
    state_dir: Path = Path(".wuremote")
    host_timeout: float = 6 * 3600.0
    # Shortest time between two polls of a detached step (real seconds).  Each poll waits on the
    # host until the step's state or percent moves (at most 3/4 of the transport's OperationTimeout),
    # so DISM and sfc cost a request per change; changes closer together than this are read together.
    poll_interval: float = 2.0
    time_scale: float = 1.0  # multiplies script timeouts (the lab's scaled hosts finish sooner)
    reboot: RebootSettings = field(default_factory=RebootSettings)
    transport: TransportSettings = field(default_factory=TransportSettings)
    no_answer_timeout: float = 600.0  # a host silent this long ends unreachable, its owed work recorded for resume
    stop_timeout: float = 30.0  # after Ctrl-C/SIGTERM: seconds hosts get for owed restores before they are left for resume
    executor: str = "local"  # local (controller threads) | dask (site-routed workers)
    scheduler: str | None = None  # the Dask scheduler's address, for executor "dask"
    kb_dir: str | None = None  # .msu files named as the Update Catalog names them: install-kb pushes the one that fits

    def snapshot(self) -> dict[str, Any]:
        """Everything but where the state lives (resume is told that), as JSON values."""
        values = dataclasses.asdict(self)
        del values["state_dir"]
        return values

    @classmethod
    def from_snapshot(cls, stored: dict[str, Any], **overrides: Any) -> RunOptions:
        """The options a run was started with (what an older journal lacks keeps its default)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in stored.items() if k in known}
        if isinstance(values.get("reboot"), dict):
            values["reboot"] = RebootSettings(**values["reboot"])
        if isinstance(values.get("transport"), dict):
            values["transport"] = TransportSettings(**values["transport"])
        values.update(overrides)
        return cls(**values)

"""The one event stream: the journal, the live view, the report and API subscribers all read it.

Events are plain records; a subscriber is any callable taking one.  None of the consumers
reads another's state (design.md section 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# Event kinds, in the order a host's life produces them.
RUN_STARTED = "run-started"
HOST_STARTED = "host-started"
STEP_STARTED = "step-started"
STEP_PROGRESS = "step-progress"  # percent of a long step (DISM)
STEP_FINISHED = "step-finished"
REBOOT_STARTED = "reboot-started"
REBOOT_FINISHED = "reboot-finished"
HOST_MESSAGE = "host-message"
HOST_FINISHED = "host-finished"
RUN_FINISHED = "run-finished"
KINDS = (RUN_STARTED, HOST_STARTED, STEP_STARTED, STEP_PROGRESS, STEP_FINISHED, REBOOT_STARTED,
         REBOOT_FINISHED, HOST_MESSAGE, HOST_FINISHED, RUN_FINISHED)


@dataclass(frozen=True)
class Event:
    kind: str
    run_id: str
    host: str | None = None
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Subscriber = Callable[[Event], None]

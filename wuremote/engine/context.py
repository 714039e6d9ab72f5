"""What a host's walk needs from the run it belongs to, and the two ways a walk stops early.

A walk talks to its host through one transport and to the rest of the run only through a
``HostContext``: typed events out, artifacts out, cancellation and reboot slots in.  That is
what lets the same walk run on a controller thread or on a Dask worker in another site.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from ..contract import Outcome
from ..events import Event
from ..inventory import HostConfig
from .options import RunOptions
from .progress import HostProgress


class HostContext(Protocol):
    run_id: str
    options: RunOptions
    wants_streams: bool  # a view shows each line a step writes (-v): only then are StepStream events made
    controller: str  # this controller instance, as the host lock names it (store.lock.controller_identity)

    def emit(self, event: Event) -> None:
        """Journal the event (before the walk acts on it) and tell the subscribers."""
        ...

    def write_artifact(self, relative: str, text: str) -> None:
        """A file under the run dir (a transcript, a log tail), wherever the controller keeps it."""
        ...

    @property
    def cancelled(self) -> bool: ...

    def take_orphans(self, host: str) -> list[str]:
        """Pools/shells a stopped controller left open on this host (each handed out once)."""
        ...

    def reboot_slots(self, host: HostConfig) -> AbstractContextManager[None]:
        """Held while the host restarts: at most reboot_group_cap hosts of a group at once."""
        ...


class RunContext(HostContext, Protocol):
    """What an executor that runs walks elsewhere (Dask) needs from the run: the HostContext, and resume state."""

    resume: dict[str, HostProgress]


class Cancelled(Exception):
    """The run was interrupted: stop starting work, run owed restores, leave detached steps running."""


class HostFailed(Exception):
    """The walk ends here with this outcome and cause."""

    def __init__(self, outcome: Outcome, cause: str) -> None:
        super().__init__(cause)
        self.outcome = outcome
        self.cause = cause

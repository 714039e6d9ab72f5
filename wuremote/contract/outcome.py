"""How a host's run ends, and the rule that turns a run's outcomes into the CLI's exit code."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum, IntEnum


class Outcome(str, Enum):
    """A host's outcome as report.json, JUnit, the live view and the exit code name it."""

    HEALTHY = "healthy"
    REPAIRED = "repaired"
    PATCHED = "patched"  # healthy or repaired, and every update the run was asked to install is installed
    PLANNED = "planned"
    CHECKED = "checked"
    NEEDS_OPERATOR = "needs-operator"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value

    @property
    def ended_well(self) -> bool:
        """What a CI job counts as success."""
        return self in ENDED_WELL

    @property
    def counts_as_failure(self) -> bool:
        """What --max-fail-percent counts."""
        return self in (Outcome.FAILED, Outcome.UNREACHABLE)


ENDED_WELL = frozenset({Outcome.HEALTHY, Outcome.REPAIRED, Outcome.PATCHED, Outcome.PLANNED, Outcome.CHECKED})


class RunExit(IntEnum):
    """The CLI's documented exit codes (README, "Exit codes")."""

    OK = 0
    NOT_ALL_WELL = 1
    USAGE = 2
    INTERRUPTED = 130


def run_exit_code(outcomes: Iterable[Outcome | str], interrupted: bool) -> RunExit:
    """130 interrupted, 0 when every host ended well, else 1."""
    if interrupted:
        return RunExit.INTERRUPTED
    return RunExit.OK if all(Outcome(o).ended_well for o in outcomes) else RunExit.NOT_ALL_WELL

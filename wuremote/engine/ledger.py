"""The owed restores of one host: one fold, used by the walk, by resume and by the Dask executor.

A pausing step (av-pause, clean-boot) that succeeded, or that was interrupted and so may have
paused, owes its restore until the restore has run.  Owed restores run on every path out of
a host's walk, Ctrl-C and failures included; a resumed run pays them before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..contract import ExitCode
from ..contract.steps import RESTORES


@dataclass
class Ledger:
    owed: list[str] = field(default_factory=list)  # restore step names, in pause order
    running: str | None = None  # the step started and not yet finished

    def started(self, step: str) -> None:
        self.running = step

    def finished(self, step: str, exit_code: int | None) -> None:
        """A pause that worked owes its restore; a restore that ran (or had nothing to do) settles it."""
        self.running = None
        restore = RESTORES.get(step)
        if restore and ExitCode.is_ok(exit_code):
            self.owe(restore)
        if step in self.owed and (ExitCode.is_ok(exit_code) or exit_code == ExitCode.NOT_APPLICABLE):
            self.owed.remove(step)

    def stopped(self) -> None:
        """The controller stopped with a step under way: a pause cut short may have paused the host."""
        if self.running is not None:
            self.assume_paused([self.running])

    def assume_paused(self, steps: tuple[str, ...] | list[str]) -> None:
        """Owe the restore of each pausing step named (restores are no-ops when nothing is paused)."""
        for step in steps:
            restore = RESTORES.get(step)
            if restore:
                self.owe(restore)

    def owe(self, restore: str) -> None:
        if restore not in self.owed:
            self.owed.append(restore)

    def __bool__(self) -> bool:
        return bool(self.owed)

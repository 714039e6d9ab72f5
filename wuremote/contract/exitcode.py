"""The step scripts' exit codes: the one place that says what each number means.

The scripts and the lab speak these numbers (ps_scripts/README.md, "Exit codes"); the
controller reads them only through this enum, so "ok means 0 or 3010" is written once.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    NOT_APPLICABLE = 2  # troubleshooter retired, KB not applicable, nothing to pause, no such detached step
    REFUSED = 4  # the host is busy: servicing, another DISM/sfc, the lock held by another run
    NOT_ELEVATED = 5
    NEEDS_REPAIR_FIRST = 6  # dism needs a source; sfc could not repair; install-kb: run dism first
    UNREACHABLE_UPDATE_SERVER = 7  # verify: network, proxy or WSUS; not a repair step
    REBOOT_NEEDED = 3010  # ERROR_SUCCESS_REBOOT_REQUIRED: done, a restart completes it

    @classmethod
    def is_ok(cls, code: int | None) -> bool:
        """Did the step do what it was asked (0, or 3010 with a restart to follow)?"""
        return code in (cls.OK, cls.REBOOT_NEEDED)

"""The contract between the controller and the hosts: what both sides depend on.

The step scripts' header and payload, their exit codes, the result record a script run
gives back, how a host's run ends, and the HRESULT table.  This package imports nothing
else of wuremote, so the lab (wuremote.lab) can depend on it alone.
"""

from __future__ import annotations

from .exitcode import ExitCode
from .outcome import ENDED_WELL, Outcome, RunExit, run_exit_code
from .result import StepResult, StreamRecord

__all__ = ["ENDED_WELL", "ExitCode", "Outcome", "RunExit", "StepResult", "StreamRecord", "run_exit_code"]

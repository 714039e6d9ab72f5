"""An emulated lab of Windows hosts speaking real WS-Management (WinRS and PSRP) on loopback.

Names load lazily: `wuremote --help` builds the `lab` subcommand's options without starting
to import the lab's servers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Endpoint", "Lab", "LabError", "SCENARIOS", "ScenarioError"]


def __getattr__(name: str) -> Any:
    if name in ("Endpoint", "Lab", "LabError"):
        from . import lab

        return getattr(lab, name)
    if name == "SCENARIOS":
        from .scenarios import BUILTIN

        return BUILTIN
    if name == "ScenarioError":
        from .scenarios import ScenarioError

        return ScenarioError
    raise AttributeError(f"module 'wuremote.lab' has no attribute {name!r}")

"""An emulated lab of Windows hosts speaking real WS-Management (WinRS and PSRP) on loopback."""

from .lab import Endpoint, Lab, LabError
from .scenarios import BUILTIN as SCENARIOS, ScenarioError

__all__ = ["Endpoint", "Lab", "LabError", "SCENARIOS", "ScenarioError"]

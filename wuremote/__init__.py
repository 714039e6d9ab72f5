"""wuremote: repair Windows Update on remote Windows hosts over WinRM/PSRP.

The Python API (the CLI is a thin layer over it)::

    from wuremote import Runner, RunOptions, load_inventory

    inventory = load_inventory("hosts.toml")
    runner = Runner(inventory.hosts, RunOptions(command="repair", forks=10),
                    subscribers=[lambda event: print(event.kind, event.host, event.step)])
    summary = runner.run()          # blocks; events arrive on worker threads
    print(summary.exit_code, summary.report_json)

Names load lazily so `import wuremote` (and `wuremote --help`) stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads each name on first use
    from .contract import ExitCode, Outcome, StepResult
    from .engine.reboot import RebootSettings
    from .engine.runner import Runner, RunOptions, RunSummary
    from .events import Event
    from .inventory import HostConfig, Inventory, InventoryError, load_inventory
    from .secret import Secret
    from .transport.base import TransportError

# name -> the module (under wuremote.) it is loaded from; keep in step with the TYPE_CHECKING block.
_EXPORTS = {
    "Runner": "engine.runner", "RunOptions": "engine.runner", "RunSummary": "engine.runner",
    "HostConfig": "inventory", "Inventory": "inventory", "InventoryError": "inventory", "load_inventory": "inventory",
    "Event": "events", "Secret": "secret", "RebootSettings": "engine.reboot",
    "StepResult": "contract", "Outcome": "contract", "ExitCode": "contract", "TransportError": "transport.base",
}
__all__ = [  # written out so tools see it; tests/test_packaging.py checks it matches _EXPORTS
    "Event", "ExitCode", "HostConfig", "Inventory", "InventoryError", "Outcome", "RebootSettings", "RunOptions",
    "RunSummary", "Runner", "Secret", "StepResult", "TransportError", "__version__", "load_inventory",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wuremote' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"wuremote.{module}"), name)

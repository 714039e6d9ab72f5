"""Transports: run a step script on a host over PSRP (pypsrp, the default) or WinRS (pywinrm).

Modules, from the bottom up:
- base.py: the protocol (Transport), TransportError and the WSManFault codes;
- connection.py: how to reach a host (Connection) and the one set of rules refusing unsafe settings;
- common.py: settings, the step's deadline, the capped transcript, the script contract's fields;
- session.py: what both transports run (open with retries, the deadline loop, the quota retry,
  fault translation, orphan close), with small per-transport hooks;
- psrp.py, winrm.py: the two transports, each on its client library.

Importing this package (or transport.connection) loads neither pypsrp nor pywinrm: the
transports are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..contract import StepResult, StreamRecord
from .base import OUTPUT_CAP_BYTES, StreamCallback, Transport, TransportError
from .common import TransportSettings
from .connection import Connection, Reachable

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ loads them on first use
    from .psrp import PSRPTransport
    from .winrm import WinRSTransport

__all__ = [
    "OUTPUT_CAP_BYTES",
    "Connection",
    "PSRPTransport",
    "StepResult",
    "StreamCallback",
    "StreamRecord",
    "Transport",
    "TransportError",
    "TransportSettings",
    "WinRSTransport",
    "open_transport",
]

# name -> the module (under wuremote.transport) it is loaded from; keep in step with TYPE_CHECKING.
_LAZY = {"PSRPTransport": "psrp", "WinRSTransport": "winrm"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)


def open_transport(host: Reachable | Connection, settings: TransportSettings | None = None) -> Transport:
    """The transport the inventory names for this host; nothing is sent until the first call.

    ``host`` is an inventory HostConfig (the transport gets its ``connection``) or a Connection.
    Raises TransportError(kind="config") for settings refused before connecting (Basic over
    plain HTTP without allow_unencrypted_basic, certificate auth without its files...).
    """
    connection = host if isinstance(host, Connection) else host.connection
    if connection.transport == "winrm":
        from .winrm import WinRSTransport

        return WinRSTransport(connection, settings)
    from .psrp import PSRPTransport

    return PSRPTransport(connection, settings)  # which refuses a transport that is neither

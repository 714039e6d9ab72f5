"""Transports: run a step script on a host over PSRP (pypsrp, the default) or WinRS (pywinrm)."""

from __future__ import annotations

from ..inventory import HostConfig
from ..contract import StepResult, StreamRecord
from .base import OUTPUT_CAP_BYTES, StreamCallback, Transport, TransportError
from .common import TransportSettings
from .psrp import PSRPTransport
from .winrm import WinRSTransport

__all__ = [
    "OUTPUT_CAP_BYTES",
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


def open_transport(host: HostConfig, settings: TransportSettings | None = None) -> Transport:
    """The transport the inventory names for this host; nothing is sent until the first call.

    Raises TransportError(kind="config") for settings refused before connecting (Basic over
    plain HTTP without allow_unencrypted_basic, certificate auth without its files...).
    """
    if host.transport == "psrp":
        return PSRPTransport(host, settings)
    if host.transport == "winrm":
        return WinRSTransport(host, settings)
    raise TransportError("config", f"{host.name}: transport must be psrp or winrm, got {host.transport!r}")

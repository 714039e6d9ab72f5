"""Reboot a host and wait until it is back, as Ansible's win_reboot does.

Read the boot time; ask for a restart with a reason; wait until the boot time changes,
tolerating refused and reset connections; run a readiness command; hold a short stability
window and check the boot time again.  Each phase has its own timeout, and the boot-time
comparison (not "the port answers again") is what says the host really restarted.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tenacity import Retrying, wait_random_exponential

from ..contract import ExitCode, Outcome
from ..contract.scripts import get_script
from ..inventory import RepairPolicy
from ..transport.base import Transport, TransportError
from .retry import retrying
from .window import in_window


@dataclass(frozen=True)
class RebootSettings:
    """Seconds for each phase; ``poll_interval`` caps the backoff between probes."""

    poll_interval: float = 1.0
    shutdown_timeout: float = 600.0
    boot_timeout: float = 1200.0
    readiness_timeout: float = 300.0
    stability_window: float = 10.0
    probe_timeout: float = 30.0  # one boot-info call while the host comes back

    def within(self, seconds: float) -> RebootSettings:
        """The same phases cut to fit in ``seconds`` (--host-timeout's rest, or how long a silent host is waited for)."""
        left = max(1.0, seconds)
        if self.shutdown_timeout + self.boot_timeout + self.readiness_timeout <= left:
            return self
        shutdown = min(self.shutdown_timeout, left)
        boot = min(self.boot_timeout, max(1.0, left - shutdown))
        return replace(self, shutdown_timeout=shutdown, boot_timeout=boot,
                       readiness_timeout=min(self.readiness_timeout, max(1.0, left - shutdown - boot)))


class RebootError(RuntimeError):
    """The host did not come back as expected; ``phase`` says where it stopped."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


@dataclass(frozen=True)
class RebootOutcome:
    boot_before: str
    boot_after: str
    duration: float
    back_after: float  # seconds from the restart request until the new boot answered


def reboot_refusal(policy: RepairPolicy, reason: str, *, roles: set[str], reboots: int,
                   now: dt.datetime) -> tuple[Outcome, str] | None:
    """The gate before a restart: the host's reboot policy, its window, its roles, its restart budget."""
    if policy.reboot == "never":
        return Outcome.NEEDS_OPERATOR, f"a restart is needed ({reason}) but the inventory says reboot = never"
    if policy.reboot == "window" and not in_window(policy.maintenance_window, now):
        return (Outcome.NEEDS_OPERATOR,
                f"a restart is needed ({reason}) outside the maintenance window {policy.maintenance_window}")
    blocked = sorted(roles - set(policy.allow_reboot_roles))
    if blocked:
        return (Outcome.NEEDS_OPERATOR, f"a restart is needed ({reason}) but this host is a {blocked[0]}; "
                f"add it to allow_reboot_roles to let wuremote restart it")
    if reboots >= policy.max_reboots:
        return (Outcome.FAILED, f"a restart is needed ({reason}) but the host already restarted "
                f"{reboots} times (max_reboots)")
    return None


class _NotYet(Exception):
    pass


def read_boot(transport: Transport, run_id: str, timeout: float) -> tuple[str, list[str]]:
    """The host's last boot time and its pending-reboot signals (boot-info, read-only)."""
    result = transport.run_step(get_script("boot-info"), {"RunId": run_id}, timeout=timeout)
    boot = result.facts.get("last_boot_utc")
    if result.exit_code != 0 or not isinstance(boot, str):
        raise TransportError("protocol", f"{transport.host}: boot-info gave no boot time (exit {result.exit_code})")
    pending = result.facts.get("pending_reboot") or []
    return boot, [str(p) for p in pending] if isinstance(pending, list) else []


def _retrying(timeout: float, settings: RebootSettings) -> Retrying:
    """Probe until ``timeout``: a host on its way back refuses, resets and answers with its old boot."""
    return retrying(within=timeout, when=lambda error: isinstance(error, (_NotYet, TransportError)),
                    wait=wait_random_exponential(multiplier=max(settings.poll_interval / 8, 0.01),
                                                 max=settings.poll_interval))


def _probe(transport: Transport, run_id: str, settings: RebootSettings) -> str:
    try:
        # Each probe opens once: the wait's own backoff paces the tries, so a host that is back
        # is seen at the next probe, not after the transport's retry sleeps.
        with transport.probe():
            return read_boot(transport, run_id, settings.probe_timeout)[0]
    except TransportError as exc:
        if exc.kind in ("auth", "tls"):
            raise RebootError("boot", str(exc)) from None
        transport.reset()
        raise


def reboot(transport: Transport, *, run_id: str, reason: str, settings: RebootSettings,
           boot_before: str | None = None, on_requested: Callable[[], None] | None = None) -> RebootOutcome:
    """Restart the host and return once it has booted again, is ready and stayed up.

    ``on_requested`` runs once the restart has gone out (the journal's "reboot-requested"):
    a controller stopped before it knows the restart never happened.
    """
    started = time.monotonic()
    if boot_before is None:
        boot_before = read_boot(transport, run_id, settings.probe_timeout)[0]
    params: dict[str, Any] = {"RunId": run_id, "Reason": reason[:500], "DelaySeconds": 2}
    try:
        result = transport.run_step(get_script("restart"), params, timeout=settings.probe_timeout)
        if not ExitCode.is_ok(result.exit_code):
            raise RebootError("restart", f"{transport.host}: restart refused (exit {result.exit_code}): "
                              + "; ".join(result.messages or result.errors)[:300])
    except TransportError as exc:
        if exc.kind not in ("lost", "unreachable", "timeout"):
            raise RebootError("restart", str(exc)) from None
        # The host went down before the answer came back: the boot time below tells.
    if on_requested is not None:
        on_requested()
    transport.reset()
    boot_after = _wait_for_new_boot(transport, run_id, boot_before, settings, started)
    back_after = time.monotonic() - started
    _wait_ready(transport, settings)
    time.sleep(settings.stability_window)
    try:
        again = _probe(transport, run_id, settings)
    except TransportError:
        again = _wait_for_new_boot(transport, run_id, boot_before, settings, time.monotonic())
    if again != boot_after:  # restarted again (an update finishing its work): wait it out once more
        boot_after = _wait_for_new_boot(transport, run_id, boot_after, settings, time.monotonic())
        _wait_ready(transport, settings)
    return RebootOutcome(boot_before, boot_after, time.monotonic() - started, back_after)


def wait_until_back(transport: Transport, *, run_id: str, boot_before: str, settings: RebootSettings) -> str:
    """A restart already asked for (by a controller that died since): wait for the new boot."""
    boot = _wait_for_new_boot(transport, run_id, boot_before, settings, time.monotonic())
    _wait_ready(transport, settings)
    return boot


def _wait_for_new_boot(transport: Transport, run_id: str, before: str, settings: RebootSettings,
                       started: float) -> str:
    budget = settings.shutdown_timeout + settings.boot_timeout - (time.monotonic() - started)
    try:
        for attempt in _retrying(max(budget, settings.poll_interval), settings):
            with attempt:
                boot = _probe(transport, run_id, settings)
                if boot == before:
                    raise _NotYet()
                return boot
    except (_NotYet, TransportError):
        pass  # the last probe still said "not yet" or did not answer
    raise RebootError("boot", f"{transport.host}: did not come back from the restart within "
                      f"{settings.shutdown_timeout + settings.boot_timeout:.0f} s (boot time still {before} or host unreachable)")
    # (unreachable: the loop either returns or raises)


def _wait_ready(transport: Transport, settings: RebootSettings) -> None:
    try:
        for attempt in _retrying(settings.readiness_timeout, settings):
            with attempt:
                code, _ = transport.run_command("hostname", timeout=settings.probe_timeout)
                if code != 0:
                    raise _NotYet()
                return
    except (_NotYet, TransportError):
        pass  # the last probe still said "not yet" or did not answer
    raise RebootError("ready", f"{transport.host}: booted but not ready for commands within {settings.readiness_timeout:.0f} s")

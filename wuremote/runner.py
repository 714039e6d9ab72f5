"""Fleet execution: one HostJob per host, bounded parallelism, cancellation and resume.

Each host walks diagnose -> gates -> verify -> the ladder (wuremote/hostjob.py), stopping as
soon as verify passes and nothing its findings demand is left; owed restores run on every
path out.  Every fact the runner learns becomes an event: the journal records it *before*
the runner acts on it, so a controller killed at any point leaves a run that ``resume``
completes.  Hosts run on controller threads, or on Dask workers in their sites
(wuremote/dask_executor.py) with their events streamed back here.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import events as ev
from .events import Event, Subscriber
from .hostjob import HostJob
from .inventory import HostConfig
from .journal import HostProgress, Journal
from .options import RunOptions
from .report import ENDED_WELL, RunDir, write_report

__all__ = ["Runner", "RunOptions", "RunSummary", "host_snapshot", "orphan_sessions"]


@dataclass
class RunSummary:
    run_id: str
    outcomes: dict[str, str]
    causes: dict[str, str]
    run_dir: Path
    report_json: Path
    junit_xml: Path
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return run_exit_code(self.outcomes, self.interrupted)


def run_exit_code(outcomes: dict[str, str], interrupted: bool) -> int:
    """130 interrupted, 0 when every host ended well, else 1 (the CLI's documented codes)."""
    if interrupted:
        return 130
    return 0 if all(o in ENDED_WELL for o in outcomes.values()) else 1


class Runner:
    """Run one command over many hosts and publish what happens as events."""

    def __init__(self, hosts: list[HostConfig], options: RunOptions | None = None, *,
                 subscribers: Iterable[Subscriber] = (), run_id: str | None = None,
                 resume: dict[str, HostProgress] | None = None) -> None:
        self.hosts = hosts
        self.options = options or RunOptions()
        self.journal = Journal(Path(self.options.state_dir))
        self.run_id = run_id or self.journal.new_run_id()
        self.run_dir = RunDir(Path(self.options.state_dir), self.run_id)
        self.subscribers = list(subscribers)
        self.resume = resume or {}
        self._cancel = threading.Event()
        self._stop_new = threading.Event()
        self._lock = threading.Lock()
        self._reboot_slots: dict[str, threading.BoundedSemaphore] = {}
        self.orphans: dict[str, list[str]] = {}  # host -> pools/shells a stopped controller left open
        for host in hosts:
            if host.reboot_group_cap:
                for group in host.groups:
                    self._reboot_slots.setdefault(group, threading.BoundedSemaphore(host.reboot_group_cap))

    # --- events -------------------------------------------------------------------------
    def emit(self, kind: str, host: str | None = None, step: str | None = None, **data: Any) -> None:
        event = Event(kind, self.run_id, host, step, data)
        self.journal.record(event)  # committed before anyone acts on it (group commit across hosts)
        for subscriber in self.subscribers:
            try:
                subscriber(event)
            except Exception:  # noqa: BLE001 - a broken view must never stop a repair
                pass

    def write_artifact(self, relative: str, text: str) -> None:
        path = self.run_dir.path / relative
        if not path.resolve().is_relative_to(self.run_dir.path.resolve()):
            raise ValueError(f"artifact path {relative!r} leaves the run dir")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
        tmp.replace(path)

    def take_orphans(self, host: str) -> list[str]:
        with self._lock:
            return self.orphans.pop(host, [])

    @contextmanager
    def reboot_slots(self, host: HostConfig) -> Iterator[None]:
        with ExitStack() as stack:
            for group in sorted(host.groups):
                slot = self._reboot_slots.get(group)
                if slot is not None:
                    stack.enter_context(slot)
            yield

    def cancel(self) -> None:
        """Ctrl-C: no new host or step starts; owed restores still run."""
        self._cancel.set()
        self._stop_new.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # --- the run ------------------------------------------------------------------------
    def run(self) -> RunSummary:
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        # Events live in the journal only (a thousand hosts' facts stay out of memory); the
        # report is built from it at the end.
        self.orphans = orphan_sessions(self.journal.events(self.run_id)) if self.resume else {}
        self.emit(ev.RUN_STARTED, command="resume" if self.resume else self.options.command,
                  hosts=[h.name for h in self.hosts], inventory=[host_snapshot(h) for h in self.hosts],
                  options=self.options.snapshot(), version=_version())
        outcomes: dict[str, str] = {}
        causes: dict[str, str] = {}
        for name, progress in self.resume.items():
            if progress.outcome is not None:
                outcomes[name], causes[name] = progress.outcome, progress.cause or ""
        todo = [h for h in self.hosts if h.name not in outcomes]
        failed = 0
        with self._executor() as pool:
            pending: dict[Future[tuple[str, str]], HostConfig] = {}
            queue = list(todo)
            try:
                while queue or pending:
                    while queue and len(pending) < self.options.forks and not self._stop_new.is_set():
                        host = queue.pop(0)
                        pending[pool.submit(self._host, host)] = host
                    if not pending:
                        break
                    done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for future in done:
                        host = pending.pop(future)
                        outcome, cause = future.result()
                        outcomes[host.name], causes[host.name] = outcome, cause
                        if outcome in ("failed", "unreachable"):
                            failed += 1
                            if 100.0 * failed / max(1, len(self.hosts)) > self.options.max_fail_percent:
                                self._stop_new.set()
            except KeyboardInterrupt:
                self.cancel()
                for future, host in list(pending.items()):
                    outcome, cause = future.result()  # workers finish their owed restores
                    outcomes[host.name], causes[host.name] = outcome, cause
                pending.clear()
        for host in self.hosts:
            if host.name not in outcomes:
                reason = "interrupted before it started" if self.cancelled else "not started: --max-fail-percent reached"
                outcomes[host.name], causes[host.name] = ("interrupted" if self.cancelled else "skipped"), reason
                self.emit(ev.HOST_FINISHED, host.name, outcome=outcomes[host.name], cause=reason, steps_run=0, reboots=0)
        interrupted = self.cancelled
        self.emit(ev.RUN_FINISHED, exit_code=run_exit_code(outcomes, interrupted),
                  counts=dict(Counter(outcomes.values())), interrupted=interrupted)
        report_json, junit_xml = write_report(self.run_dir, self.journal.events(self.run_id))
        self.journal.close()
        return RunSummary(self.run_id, outcomes, causes, self.run_dir.path, report_json, junit_xml, interrupted)

    def _executor(self) -> Any:
        """Where hosts run: controller threads, or a site-routing Dask executor (same submit/wait shape)."""
        if self.options.executor == "dask":
            from .dask_executor import DaskExecutor

            return DaskExecutor(self)
        return ThreadPoolExecutor(max_workers=max(1, self.options.forks), thread_name_prefix="wuremote-host")

    def _host(self, host: HostConfig) -> tuple[str, str]:
        try:
            return HostJob(self, host, self.resume.get(host.name)).run()
        except Exception as exc:  # noqa: BLE001 - a bug in one host's cleanup must not end the run for the others
            cause = f"internal error: {type(exc).__name__}: {exc}"
            self.emit(ev.HOST_FINISHED, host.name, outcome="failed", cause=cause, steps_run=0, reboots=0)
            return "failed", cause


def orphan_sessions(events: list[Event]) -> dict[str, list[str]]:
    """Pools/shells each host opened in a run and that were never closed (the controller died)."""
    open_by_host: dict[str, list[str]] = {}
    for event in events:
        if event.kind != ev.HOST_MESSAGE or event.host is None:
            continue
        sessions = open_by_host.setdefault(event.host, [])
        if event.data.get("session") and event.data["session"] not in sessions:
            sessions.append(str(event.data["session"]))
        if event.data.get("session_closed") in sessions:
            sessions.remove(event.data["session_closed"])
    return {host: ids for host, ids in open_by_host.items() if ids}


def host_snapshot(host: HostConfig) -> dict[str, Any]:
    """A host's settings for the journal, so `resume` reconnects without the inventory: no password."""
    return {f.name: (list(v) if isinstance(v, tuple) else v)
            for f in fields(host) if f.name != "password" for v in [getattr(host, f.name)]}


def _version() -> str:
    from . import __version__

    return __version__




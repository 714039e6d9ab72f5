"""Fleet execution: scheduling only. One HostWalk per host, bounded parallelism, cancellation, resume.

Each host walks diagnose -> gates -> verify -> the ladder (wuremote/engine/walk.py), stopping
as soon as verify passes and nothing its findings demand is left; owed restores run on every
path out.  Every fact the runner learns becomes a typed event: the journal records it
*before* the runner acts on it, so a controller killed at any point leaves a run that
``resume`` completes.  Hosts run on controller threads, or on Dask workers in their sites
(wuremote/engine/dask.py) with their events streamed back here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import events as ev
from .._version import __version__
from ..contract import Outcome, RunExit, run_exit_code
from ..inventory import HostConfig, host_snapshot
from ..output.report import write_report
from ..store.journal import Journal, JournalError
from ..store.lock import ControllerLock, controller_identity
from ..store.rundir import RunDir
from .memory import limit_malloc_arenas
from .options import RunOptions
from .progress import HostProgress, progress_of
from .walk import HostWalk

__all__ = ["Runner", "RunOptions", "RunSummary", "orphan_sessions"]

log = logging.getLogger("wuremote")


@dataclass
class RunSummary:
    run_id: str
    outcomes: dict[str, Outcome]
    causes: dict[str, str]
    run_dir: Path
    report_json: Path
    junit_xml: Path
    interrupted: bool = False
    journal_error: str | None = None  # the journal could not be written from some point on
    abandoned: list[str] = field(default_factory=list)  # hosts still working when the stop's time ran out

    @property
    def exit_code(self) -> RunExit:
        code = run_exit_code(self.outcomes.values(), self.interrupted)
        return RunExit.NOT_ALL_WELL if code is RunExit.OK and self.journal_error else code


# A host's walk runs on a controller thread named after it: log records (the -vv WS-Man trace, whose
# client libraries do not name the host) say whose they are by the thread's name.
HOST_THREAD = "wuremote-host "


class Runner:
    """Run one command over many hosts and publish what happens as events."""

    def __init__(self, hosts: list[HostConfig], options: RunOptions | None = None, *,
                 subscribers: Iterable[ev.Subscriber] = (), run_id: str | None = None,
                 resume: dict[str, HostProgress] | None = None) -> None:
        self.hosts = hosts
        self.options = options or RunOptions()
        self.journal = Journal(Path(self.options.state_dir))
        self.run_id = run_id or self.journal.new_run_id()
        self.run_dir = RunDir(Path(self.options.state_dir), self.run_id)
        self.controller = controller_identity(Path(self.options.state_dir))
        self.subscribers = list(subscribers)
        # a view that shows each line a step writes (-v) says so; only then are StepStream events made
        self.wants_streams = any(getattr(s, "wants_streams", False) for s in self.subscribers)
        self._broken: set[int] = set()  # subscribers whose failure was logged once already
        self.resume = resume or {}
        self._cancel = threading.Event()
        self._stop_new = threading.Event()
        self._lock = threading.Lock()
        self._reboot_slots: dict[str, threading.BoundedSemaphore] = {}
        self.orphans: dict[str, list[str]] = {}  # host -> pools/shells a stopped controller left open
        self.journal_error: str | None = None  # the journal's own words, once it could not be written
        self._events_in_memory: list[ev.Event] = []  # the run's events from then on (and before)
        self._abandoned: set[str] = set()  # hosts recorded as interrupted while their walk still ran
        for host in hosts:
            if host.policy.reboot_group_cap:
                for group in host.groups:
                    self._reboot_slots.setdefault(group, threading.BoundedSemaphore(host.policy.reboot_group_cap))

    # --- the HostContext a walk sees ------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        if event.host is not None and event.host in self._abandoned:
            return  # the run already recorded this host as interrupted and moved on
        self._record(event)

    def _record(self, event: ev.Event) -> None:
        """Journal the event (committed before anyone acts on it), then tell the subscribers.

        A journal that cannot be written (a full disk) stops new work, but never the owed
        restores: the events go on in memory, the report is built from them, and the run ends
        non-zero with the journal's own error.  An event that is not journalled (a step's stream
        line) goes to the subscribers only.
        """
        if not event.journalled:
            self._tell(event)
            return
        if self.journal_error is None:
            try:
                self.journal.record(event)
            except JournalError as exc:
                with self._lock:  # several hosts may meet the full disk at once: the first one switches
                    if self.journal_error is None:
                        self.journal_error = str(exc)
                        log.error("%s; no new work starts, owed restores still run, events are kept in memory", exc)
                        self._events_in_memory = self._safe_journal_events()
                self.cancel()
        if self.journal_error is not None:
            with self._lock:
                self._events_in_memory.append(event)
        self._tell(event)

    def _tell(self, event: ev.Event) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber(event)
            except Exception:  # noqa: BLE001 - a broken view must never stop a repair; said once, not per event
                if id(subscriber) not in self._broken:
                    self._broken.add(id(subscriber))
                    log.exception("event subscriber %r failed on a %s event; its later failures are not logged",
                                  subscriber, event.kind)

    def _events(self) -> list[ev.Event]:
        """The run's events: from the journal, or from memory once the journal failed."""
        return self._events_in_memory if self.journal_error is not None else self.journal.events(self.run_id)

    def _safe_journal_events(self) -> list[ev.Event]:
        try:
            return self.journal.events(self.run_id)
        except JournalError:
            return []

    def write_artifact(self, relative: str, text: str) -> None:
        self.run_dir.write(relative, text)

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
        with ControllerLock(self.run_dir.path):  # one live controller per run: refused while another works it
            return self._run()

    def _run(self) -> RunSummary:
        # Events live in the journal only (a thousand hosts' facts stay out of memory); the
        # report is built from it at the end.
        self.orphans = orphan_sessions(self.journal.events(self.run_id)) if self.resume else {}
        self.emit(ev.RunStarted(self.run_id, command="resume" if self.resume else self.options.command,
                                hosts=[h.name for h in self.hosts], inventory=[host_snapshot(h) for h in self.hosts],
                                options=self.options.snapshot(), version=__version__))
        outcomes: dict[str, Outcome] = {}
        causes: dict[str, str] = {}
        for name, progress in self.resume.items():
            # A host the operator interrupted is resumable by definition; the others keep their end.
            if progress.outcome is not None and progress.outcome is not Outcome.INTERRUPTED:
                outcomes[name], causes[name] = progress.outcome, progress.cause
        queue = [h for h in self.hosts if h.name not in outcomes]
        pending: dict[Future[tuple[Outcome, str]], HostConfig] = {}
        failed = 0
        pool = self._executor()
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
                    outcomes[host.name], causes[host.name] = Outcome(outcome), cause
                    if Outcome(outcome).counts_as_failure:
                        failed += 1
                        if 100.0 * failed / max(1, len(self.hosts)) > self.options.max_fail_percent:
                            self._stop_new.set()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP (the CLI raises it for them too)
            self.cancel()
            self._wind_down(pending, outcomes, causes)
        finally:
            pool.shutdown(wait=not self._abandoned, cancel_futures=True)
        for host in self.hosts:
            if host.name not in outcomes:
                reason = "interrupted before it started" if self.cancelled else "not started: --max-fail-percent reached"
                outcomes[host.name] = Outcome.INTERRUPTED if self.cancelled else Outcome.SKIPPED
                causes[host.name] = reason
                self.emit(ev.HostFinished(self.run_id, host.name, outcome=outcomes[host.name], cause=reason))
        interrupted = self.cancelled
        self.emit(ev.RunFinished(self.run_id, exit_code=int(run_exit_code(outcomes.values(), interrupted)),
                                 counts={str(k): v for k, v in Counter(outcomes.values()).items()},
                                 interrupted=interrupted))
        report_json, junit_xml = write_report(self.run_dir, self._events())
        self.journal.close()
        return RunSummary(self.run_id, outcomes, causes, self.run_dir.path, report_json, junit_xml, interrupted,
                          journal_error=self.journal_error, abandoned=sorted(self._abandoned))

    def _wind_down(self, pending: dict[Future[tuple[Outcome, str]], HostConfig], outcomes: dict[str, Outcome],
                   causes: dict[str, str]) -> None:
        """After a stop, hosts get ``stop_timeout`` seconds to run their owed restores and finish;
        a host that has not answered by then (or at a second Ctrl-C) is recorded as interrupted
        with its owed work, for ``resume``, and its thread is left behind."""
        deadline = time.monotonic() + self.options.stop_timeout
        while pending:
            try:
                done, _ = wait(pending, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                break  # a second Ctrl-C: stop waiting now; journal and report are still written
            for future in done:
                host = pending.pop(future)
                outcome, cause = future.result()
                outcomes[host.name], causes[host.name] = Outcome(outcome), cause
            if time.monotonic() >= deadline:
                break
        if not pending:
            return
        with self._lock:
            self._abandoned.update(host.name for host in pending.values())
        owed = progress_of(self._events())
        for host in pending.values():
            left = owed[host.name].owed if host.name in owed else []
            cause = (f"still working {self.options.stop_timeout:.0f} s after the stop; recorded for resume"
                     + (f" (owed: {', '.join(left)})" if left else ""))
            outcomes[host.name], causes[host.name] = Outcome.INTERRUPTED, cause
            self._record(ev.HostFinished(self.run_id, host.name, outcome=Outcome.INTERRUPTED, cause=cause))
        pending.clear()

    def _executor(self) -> Executor:
        """Where hosts run: controller threads, or a site-routing Dask executor (same submit/wait shape)."""
        if self.options.executor == "dask":
            from .dask import DaskExecutor

            return DaskExecutor(self)
        limit_malloc_arenas()  # before the host threads exist: each would take an arena of its own
        return ThreadPoolExecutor(max_workers=max(1, self.options.forks), thread_name_prefix="wuremote-host")

    def _host(self, host: HostConfig) -> tuple[Outcome, str]:
        thread = threading.current_thread()
        before, thread.name = thread.name, HOST_THREAD + host.name  # whose messages a -vv trace shows
        try:
            return HostWalk(self, host, self.resume.get(host.name)).run()
        except Exception as exc:  # noqa: BLE001 - a bug in one host's cleanup must not end the run for the others
            cause = f"internal error: {type(exc).__name__}: {exc}"
            self.emit(ev.HostFinished(self.run_id, host.name, outcome=Outcome.FAILED, cause=cause))
            return Outcome.FAILED, cause
        finally:
            thread.name = before


def orphan_sessions(events: list[ev.Event]) -> dict[str, list[str]]:
    """Pools/shells each host opened in a run and that were never closed (the controller died)."""
    open_by_host: dict[str, list[str]] = {}
    for event in events:
        if event.host is None:
            continue
        sessions = open_by_host.setdefault(event.host, [])
        if isinstance(event, ev.SessionOpened) and event.session not in sessions:
            sessions.append(event.session)
        elif isinstance(event, ev.SessionClosed) and event.session in sessions:
            sessions.remove(event.session)
    return {host: ids for host, ids in open_by_host.items() if ids}


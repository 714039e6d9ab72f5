"""Site-routed execution on Dask distributed: each host's walk runs on a worker in its site.

Workers are started in each site with a resource naming it (``dask worker ADDRESS
--resources site-paris=1000``); a host whose inventory sets ``site = "paris"`` is submitted
with ``resources={"site-paris": 1}``, so only that site's workers run it.  Hosts without a
site run on any worker.  The controller keeps the journal, the live view and the report:
workers stream events and artifacts (transcripts, log tails) back through a Dask queue.

Passwords never travel: a worker reads them from its own environment (``password_env`` or
``WUREMOTE_PASSWORD``), from the host settings the journal also keeps.

A worker that dies mid-step is replaced by Dask: the scheduler's ``allowed-failures`` (3 unless
the scheduler is started with ``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES``) bounds how often
one host's unit is started again.
The unit it was running is safe to start again: detached steps are re-attached by run id
and never started twice on the host, the lock belongs to the run id, and a re-run first
runs the restores the host itself records as owed (av-resume, clean-boot-restore: no-ops
when nothing is paused) before it diagnoses afresh.  Events of the dead attempt that had
not reached the controller are lost with it; the host's own records are what the re-run
trusts.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import ExitStack, contextmanager
from typing import Any

from .. import events as ev
from ..contract import Outcome
from ..inventory import HostConfig, host_snapshot, hosts_from_snapshot
from .context import RunContext
from .options import RunOptions
from .progress import HostProgress, InterruptedStep

_CANCEL_CHECK_SECONDS = 1.0


def site_resource(site: str) -> str:
    """The worker resource that names a site: start site workers with ``--resources site-NAME=1000``."""
    return f"site-{site}"


class DaskExecutor(Executor):
    """The runner's executor for ``--executor dask``: submit/shutdown like a ThreadPoolExecutor."""

    def __init__(self, runner: RunContext) -> None:
        from distributed import Client, Queue, Variable

        if not runner.options.scheduler:
            raise ValueError("--executor dask needs --scheduler ADDRESS (tcp://host:8786)")
        self.runner = runner
        self.client = Client(runner.options.scheduler, set_as_default=False)
        tag = f"wuremote-{runner.run_id}-{uuid.uuid4().hex[:8]}"
        self.queue_name, self.cancel_name = f"{tag}-events", f"{tag}-cancel"
        self.queue = Queue(self.queue_name, client=self.client)
        self.cancel_var = Variable(self.cancel_name, client=self.client)
        self.cancel_var.set(False)
        self._waiting: dict[str, Future[tuple[Outcome, str]]] = {}
        self._dask_futures: list[Any] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._pump = threading.Thread(target=self._pump_events, name="wuremote-dask-events", daemon=True)
        self._pump.start()

    # --- the executor shape the runner uses ----------------------------------------------
    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run a host's walk (``fn(host)`` on the controller's side) on a worker of its site.

        The future resolves when the host's last event is in.
        """
        host: HostConfig = args[0]
        done: Future[tuple[Outcome, str]] = Future()
        with self._lock:
            self._waiting[host.name] = done
        unit = {
            "run_id": self.runner.run_id,
            "controller": self.runner.controller,
            "options": self.runner.options,
            "host": host_snapshot(host),
            "progress": self.runner.resume.get(host.name),
            "orphans": self.runner.take_orphans(host.name),
            "queue": self.queue_name,
            "cancel": self.cancel_name,
            "reboot_cap": host.policy.reboot_group_cap,
            "streams": self.runner.wants_streams,
        }
        resources = {site_resource(host.site): 1} if host.site else None
        future = self.client.submit(run_unit, unit, key=f"wuremote-{self.runner.run_id}-{host.name}-{uuid.uuid4().hex[:6]}",
                                    resources=resources, pure=False)
        future.add_done_callback(lambda f, name=host.name: self._unit_ended(name, f))
        self._dask_futures.append(future)
        return done

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closing.set()
        self._pump.join(timeout=10)
        self.client.close()

    # --- events back from the workers ---------------------------------------------------
    def _pump_events(self) -> None:
        while not self._closing.is_set() or self._waiting:
            if self.runner.cancelled:
                self.cancel_var.set(True)
            try:
                batch = self.queue.get(timeout=0.2, batch=True)
            except Exception:  # noqa: BLE001 - the queue's own timeout; a closed client ends the loop below
                if self._closing.is_set() and not self._waiting:
                    return
                continue
            for message in batch:
                self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "event":
            self.runner.emit(message[1])
        elif kind == "artifact":
            self.runner.write_artifact(message[1], message[2])
        elif kind == "done":
            _, host, outcome, cause = message
            with self._lock:
                future = self._waiting.pop(host, None)
            if future is not None and not future.done():
                future.set_result((Outcome(outcome), cause))

    def _unit_ended(self, host: str, future: Any) -> None:
        """A unit that failed for good (an error, or its workers kept dying) still ends its host."""
        if future.status == "finished":
            return  # its "done" message carries the outcome
        with self._lock:
            waiting = self._waiting.pop(host, None)
        if waiting is not None and not waiting.done():
            why = future.exception() if future.status == "error" else "cancelled"
            reason = f"the Dask unit ended without finishing ({future.status}: {why})"
            self.runner.emit(ev.HostFinished(self.runner.run_id, host, outcome=Outcome.FAILED, cause=reason))
            waiting.set_result((Outcome.FAILED, reason))


class WorkerContext:
    """A HostWalk's run, seen from a Dask worker: everything goes back to the controller by queue."""

    def __init__(self, unit: dict[str, Any]) -> None:
        from distributed import Queue, Variable, get_client

        self.client = get_client()
        self.run_id: str = unit["run_id"]
        self.controller: str = unit["controller"]
        self.options: RunOptions = unit["options"]
        self.queue = Queue(unit["queue"], client=self.client)
        self.cancel_var = Variable(unit["cancel"], client=self.client)
        self._orphans: list[str] = list(unit["orphans"])
        self.inflight = Variable(f"{unit['queue']}-inflight-{unit['host']['name']}", client=self.client)
        self._inflight: str | None = None
        self._reboot_cap: int | None = unit["reboot_cap"]
        self.wants_streams: bool = bool(unit.get("streams"))  # each line crosses the queue only for a -v view
        self._cancelled = False
        self._checked = 0.0

    def emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.HostStarted):
            from distributed import get_worker

            event = dataclasses.replace(event, worker=get_worker().address)
        if isinstance(event, ev.StepStarted) and event.detached:
            self.inflight.set(event.step)  # a re-run after this worker dies re-attaches to it
            self._inflight = event.step
        self.queue.put(("event", event))
        if isinstance(event, ev.StepFinished) and event.step is not None and event.step == self._inflight:
            self.inflight.set(None)
            self._inflight = None

    def write_artifact(self, relative: str, text: str) -> None:
        self.queue.put(("artifact", relative, text))

    @property
    def cancelled(self) -> bool:
        if not self._cancelled and time.monotonic() - self._checked > _CANCEL_CHECK_SECONDS:
            self._checked = time.monotonic()
            try:
                self._cancelled = bool(self.cancel_var.get(timeout=5))
            except Exception:  # noqa: BLE001 - a scheduler hiccup is not a cancellation
                pass
        return self._cancelled

    def take_orphans(self, host: str) -> list[str]:
        orphans, self._orphans = self._orphans, []
        return orphans

    @contextmanager
    def reboot_slots(self, host: HostConfig) -> Iterator[None]:
        from distributed import Semaphore

        with ExitStack() as stack:
            if self._reboot_cap:
                for group in sorted(host.groups):
                    name = f"wuremote-{self.run_id}-reboot-{group}"
                    # The semaphore finds the scheduler through the worker's client (there is no client parameter).
                    stack.enter_context(Semaphore(max_leases=self._reboot_cap, name=name))
            yield


def run_unit(unit: dict[str, Any]) -> tuple[Outcome, str]:
    """What a worker runs for one host: safe to start again after the worker running it died."""
    from distributed import Variable, get_client

    from .walk import HostWalk

    context = WorkerContext(unit)
    host = hosts_from_snapshot([unit["host"]], environ=os.environ)[0]
    progress: HostProgress | None = unit["progress"]
    started = Variable(f"{unit['queue']}-started-{host.name}", client=get_client())
    try:
        again = bool(started.get(timeout=0.5))
    except Exception:  # noqa: BLE001 - not set yet: the first attempt
        again = False
    started.set(True)
    if again:
        context.emit(ev.HostMessage(context.run_id, host.name, level="warning",
                                    text="the worker running this host died; starting again (detached steps are re-attached)"))
        progress = progress or HostProgress(host.name)
        progress.ledger.assume_paused(host.policy.opt_in)
        try:
            inflight = context.inflight.get(timeout=0.5)
        except Exception:  # noqa: BLE001 - never set: no detached step was under way
            inflight = None
        if inflight:
            step = InterruptedStep(str(inflight), 1, idempotent=True, detached=True, started=time.time())
            progress.detached_open[step.name] = step
    outcome, cause = HostWalk(context, host, progress).run()
    context.queue.put(("done", host.name, outcome, cause))
    return outcome, cause

"""The plain pieces both transports use, none of which talks to a host: the settings, the
step's deadline, the capped transcript (Collector) and the script contract's result fields.

This module imports neither a client library nor requests, so the settings can be read (by
the run options, the inventory) without loading pypsrp or pywinrm; what talks to the host and
is shared by both transports lives in session.py.

Deadline budget (why no step outlives its timeout by more than one read timeout):
- a step's deadline counts from when the host took it (its Command answered, ``Deadline.start``):
  time the controller spent before (a request slot, opening the pool) is not the step's;
- every long poll (Receive) asks the host to answer within
  ``min(operation_timeout, time left)`` seconds, so the host ends the poll itself before
  the deadline (with output, or with the OperationTimeout fault, which is polled again quietly);
- every HTTP read is bounded by ``read_timeout`` (> operation_timeout), every connect by
  ``connect_timeout``; the clients' own retries of a Receive are switched off;
- when the deadline has passed, one more poll (of 1 s) asks the host; if the step still runs,
  it is stopped (best effort, bounded by the same timeouts) and TransportError(kind="timeout")
  is raised.  A controller starved between two polls thus never fails a step the host finished.
So the worst case is the step's timeout plus one read timeout plus one 1 s poll and one stop request (plus,
when the pool/shell must be opened first, ``open_retries`` bounded attempts with backoff).
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..contract import StepResult, StreamRecord
from .base import OUTPUT_CAP_BYTES, StreamCallback, now

MAX_ERRORS = 1000  # error texts kept in StepResult.errors; the transcript has them all (up to the cap)


@dataclass(frozen=True)
class TransportSettings:
    """Timeouts and retry policy for one transport (seconds).

    ``operation_timeout`` is the long-poll length: the host answers a Receive within it, with
    output or the OperationTimeout fault.  ``read_timeout`` must exceed it (an HTTP read waits
    for the long poll); ``connect_timeout`` bounds the TCP/TLS connect.  ``open_retries`` and
    ``backoff`` govern reopening the pool/shell only: a step is never re-sent here.
    """

    connect_timeout: float = 10.0
    operation_timeout: int = 20
    read_timeout: int = 30
    open_retries: int = 3
    backoff: float = 1.0  # first wait between open attempts; doubles, with jitter, up to 8x
    output_cap: int = OUTPUT_CAP_BYTES
    commands_per_session: int | None = None  # recycle the pool/shell after this many operations (None: the transport's own)
    send_busy_wait: float = 5.0  # between tries of a WinRS Send the host answered ERROR_BUSY (170), as Ansible waits
    max_requests: int | None = None  # requests in flight at once from this controller (None: sized from its cores)

    def __post_init__(self) -> None:
        if self.operation_timeout < 1:
            raise ValueError("TransportSettings.operation_timeout must be at least 1 second")
        if self.read_timeout <= self.operation_timeout:
            raise ValueError("TransportSettings.read_timeout must exceed operation_timeout (a read waits for the long poll)")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("TransportSettings.max_requests must be at least 1")
        if self.commands_per_session is not None and self.commands_per_session < 1:
            raise ValueError("TransportSettings.commands_per_session must be at least 1")
        if self.connect_timeout <= 0 or self.send_busy_wait < 0 or self.open_retries < 0 or self.backoff < 0 or self.output_cap < 0:
            raise ValueError("TransportSettings: connect_timeout must be > 0; open_retries, backoff and output_cap >= 0")


REQUESTS_PER_CORE = 4  # requests in flight per controller core when --max-requests is not given
MIN_REQUESTS = 4


def default_max_requests() -> int:
    """Sized from the controller's cores: pypsrp's serialisation and TLS are CPU work under one GIL, and
    more requests at once than the cores can serve only add context switches (issue 17's profile:
    12.5 ms of CPU per call with 1 or 10 threads, 28.7 ms with 300)."""
    return max(MIN_REQUESTS, REQUESTS_PER_CORE * (os.cpu_count() or 1))


class RequestSlots:
    """At most ``limit`` requests in flight at once from this controller, whatever the number of hosts.

    A host's thread holds a slot from building a request until its answer is read; a host
    waiting for a slot is parked (no CPU, no socket).  One instance per limit and process
    (``request_slots``), shared by every transport the process opens.

    The slots are tokens in a SimpleQueue, whose get() blocks in C: threading's semaphore waits
    and wakes through a Condition written in Python, which cost 10 % of the controller's CPU
    with 1,000 host threads taking turns at 8 slots (bench/README.md's profile).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(limit):
            self._free.put(None)

    def held(self) -> RequestSlots:
        """``with slots.held():`` one slot for the block."""
        return self

    def __enter__(self) -> None:
        self._free.get()

    def __exit__(self, *exc: object) -> None:
        self._free.put(None)


_SLOTS: dict[int, RequestSlots] = {}
_SLOTS_LOCK = threading.Lock()


def request_slots(limit: int | None) -> RequestSlots:
    """The process's shared slots for this limit (None: sized from the cores)."""
    size = limit or default_max_requests()
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(size, RequestSlots(size))


class Deadline:
    """The step's time budget, counted from when the host took the step (its Command was answered).

    Time the controller spends before that (waiting for a request slot, opening the pool,
    a starved thread) is not the host's: it does not count.  And a deadline found passed is
    acted on only after one more poll sent after it passed still finds the step running
    (``confirmed``), so a controller that was blocked between two polls asks the host
    before calling a finished step late.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._end = time.monotonic() + timeout
        self._asked_after = False  # a poll was sent after the deadline passed

    def start(self) -> None:
        """The host has the step: its time starts now."""
        self._end = time.monotonic() + self.timeout

    def polling(self) -> None:
        """A poll is about to be sent: if the deadline has passed, its answer is the one that decides."""
        if self.passed:
            self._asked_after = True

    @property
    def confirmed(self) -> bool:
        """Passed, and a poll sent after it passed found the step still running."""
        return self.passed and self._asked_after

    @property
    def remaining(self) -> float:
        return self._end - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining <= 0

    def poll_seconds(self, operation_timeout: int) -> int:
        """How long the next long poll may last: whole seconds, at least 1, never past the deadline by more than 1 s."""
        return max(1, min(operation_timeout, math.ceil(self.remaining)))


# The result fields every script's Complete-WuStep writes, with their JSON types.
RESULT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "step": str, "status": str, "exit_code": int, "reboot_required": bool,
    "changes": list, "facts": dict, "messages": list,
}


def contract_problem(result: dict[str, Any]) -> str | None:
    """Why a result object breaks the script contract (a field missing or of the wrong type), or None."""
    for name, kind in RESULT_FIELDS.items():
        if name not in result:
            return f"its result has no {name!r}"
        value = result[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"its result's {name!r} is a {type(value).__name__}, not a {getattr(kind, '__name__', kind)}"
    return None


@dataclass
class Collector:
    """Streams of one step kept as the controller-side transcript, up to a byte cap."""

    host: str
    step: str
    cap: int
    on_stream: StreamCallback | None = None
    started: float = field(default_factory=now)
    streams: list[StreamRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stored: int = 0
    dropped: int = 0

    def add(self, stream: str, text: str) -> None:
        """Keep one record (while under the cap) and tell the live view.

        Past the cap, progress still reaches the live view (DISM's percent after a chatty
        start), but nothing more is kept."""
        data = text.encode("utf-8", errors="replace")
        room = self.cap - self.stored
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            if room <= 0:
                if stream == "progress" and self.on_stream is not None:
                    self.on_stream(StreamRecord(now(), stream, text))
                return
            text = data[:room].decode("utf-8", errors="ignore")  # the head that fits, cut on a character
            data = text.encode("utf-8")
        self.stored += len(data)
        record = StreamRecord(now(), stream, text)
        self.streams.append(record)
        if self.on_stream is not None:
            self.on_stream(record)

    def error(self, text: str, stream: str = "error") -> None:
        """An error the host reported: kept in ``errors`` (for the report) and in the transcript."""
        if len(self.errors) < MAX_ERRORS:  # the transcript holds the rest
            self.errors.append(text)
        self.add(stream, text)

    def text(self, stream: str) -> str:
        """What was kept of one stream, a line a record (a command's answer)."""
        return "\n".join(r.text for r in self.streams if r.stream == stream)

    def result(self, exit_code: int, result: dict[str, Any] | None) -> StepResult:
        return StepResult(
            host=self.host,
            step=self.step,
            exit_code=exit_code,
            result=result,
            streams=self.streams,
            errors=self.errors,
            started=self.started,
            duration=now() - self.started,
            truncated_bytes=self.dropped,
        )


def one_line(text: Any) -> str:
    """A server's wording squeezed onto one short line for a message."""
    return " ".join(str(text or "").split())[:300]


def to_json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)

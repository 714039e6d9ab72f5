"""A long step (DISM, sfc, verify...) run as a scheduled task on the host: start -> poll -> clean up.

As ansible.windows' win_updates starts its task, polls it and cleans up in ``finally``: the
step survives the WinRM connection, a controller restart (``resume`` re-attaches by run id and
step, never starting a second one) and a host restart (the task is started once more).
A task still running when the walk stops (Ctrl-C, a timeout) is left running and said so:
stopping DISM half-way is worse than letting it finish.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from .. import events as ev
from ..contract import ExitCode, Outcome, StepResult, StreamRecord
from ..contract.scripts import StepScript, get_script, prelude_sha256
from ..transport.base import TransportError
from .context import Cancelled, HostFailed
from .retry import retrying

if TYPE_CHECKING:
    from .steps import StepRunner

FINISHED, INTERRUPTED, MISSING = "finished", "interrupted", "missing"  # the task states the poll reports
# The shortest gap between two polls starts here and grows to RunOptions.poll_interval: a short
# step (a verify that finds nothing) is read as soon as it moves, while the changes of a long one
# (DISM's percent) are read together at most every poll_interval.  Each poll waits on the host
# for a change either way, so the gap never adds requests.
_FIRST_GAP = 0.25
# Polls in a row that may find status.json missing or unreadable before the step is given up on.
# After detached-start succeeded the file exists, but Windows can leave a gap: ReplaceFile
# without a backup file that fails with ERROR_UNABLE_TO_MOVE_REPLACEMENT (1176) leaves "the
# replaced file no longer exists" until the writer's next attempt (Microsoft, ReplaceFileW,
# learn.microsoft.com/windows/win32/api/winbase/nf-winbase-replacefilew), and a scanner holding the
# file without sharing makes the poll's read fail.  DISM runs on meanwhile: read again, bounded.
STATUS_UNREADABLE_POLLS = 12
# A host-side wait stays this share of the WS-Man OperationTimeout the Receive carries, so the host
# answers the Receive itself (a busy Windows host answers up to 5 s late: NetworkDelayms = 5000;
# pypsrp's WSMan operation_timeout defaults to 20 s, MS-WSMV 2.2.4.22 OperationTimeout).
WAIT_SHARE_OF_OPERATION_TIMEOUT = 0.75
MAX_WAIT_SECONDS = 3600  # detached-poll's [ValidateRange(0, 3600)] WaitSeconds


def host_wait_seconds(operation_timeout: int, time_scale: float) -> int:
    """How long one detached-poll waits on the host for a change, in the host's seconds: a little
    under the Receive's OperationTimeout, which a time-scaled host (the lab) runs in its scaled time."""
    real = WAIT_SHARE_OF_OPERATION_TIMEOUT * operation_timeout
    return max(1, min(MAX_WAIT_SECONDS, int(real / max(time_scale, 1e-9))))


def _percent_text(percent: Any) -> str:
    """The percent as detached-poll's SeenPercent takes it ('' for none)."""
    return str(percent) if isinstance(percent, int) and not isinstance(percent, bool) and 0 <= percent <= 999 else ""


class _RestartedUnder(Exception):
    """The host restarted while the task ran: it is started once more."""


class DetachedStep:
    def __init__(self, runner: StepRunner, script: StepScript, params: dict[str, Any], label: str) -> None:
        self.runner = runner
        self.script = script
        self.label = label
        self.run_id = str(params["RunId"])
        self.body_params = {k: v for k, v in params.items() if k != "RunId"}
        self.streams: list[StreamRecord] = []
        self._started_state, self._started_percent = "", ""  # what detached-start saw: the first wait's baseline

    def run(self, *, reattach: bool) -> StepResult:
        """Start (or re-attach to) the task, poll it until it ends, then remove it from the host."""
        started = time.time()
        restart = not reattach
        state, poll = MISSING, None

        def once_more(_: BaseException) -> None:
            nonlocal restart
            restart = True
            self.runner.message("warning", f"{self.label} was interrupted (the host restarted); starting it once more")

        try:
            for tries in retrying(tries=2, when=lambda e: isinstance(e, _RestartedUnder), between=once_more):
                with tries:
                    start = self._start(restart)
                    if start.exit_code != ExitCode.OK:
                        return StepResult(self.runner.name, self.script.meta.name, start.exit_code, start.result,
                                          self.streams, start.errors, started, time.time() - started)
                    state, poll = self._poll_until_done()
                    if state == INTERRUPTED:
                        raise _RestartedUnder()
        except _RestartedUnder:
            pass  # interrupted twice: reported below, not retried again
        facts = poll.facts if poll else {}
        exit_code = facts.get("exit_code")
        body = facts.get("result") if isinstance(facts.get("result"), dict) else None
        if state != FINISHED or not isinstance(exit_code, int):
            exit_code = int(ExitCode.FAILED)
            body = {"status": "interrupted", "messages": [f"{self.label} was interrupted twice; not retried again"]}
        self._clean_up()
        return StepResult(self.runner.name, self.script.meta.name, exit_code, body, self.streams, [], started,
                          time.time() - started)

    def _start(self, restart: bool) -> StepResult:
        """Stage and start the task.  Where the session holds the prelude (PSRP), the step's body goes
        alone and the host composes the payload (33-53 KB sent per start, and most of the controller's
        CPU for it, was the prelude again); the payload's SHA-256 still decides what is staged."""
        params: dict[str, Any] = {"RunId": self.run_id, "Step": self.script.meta.name,
                                  "PayloadSha256": self.script.payload_sha256(), "ParametersJson": json.dumps(self.body_params),
                                  "Restart": restart}
        if getattr(self.runner.connected, "prelude_in_session", False):
            params.update(Body=self.script.text, PreludeSha256=prelude_sha256())
        else:
            params["Payload"] = self.script.payload()
        start = self.runner.run_script(get_script("detached-start"), params, self.label)
        self.streams.extend(start.streams)
        status = start.facts.get("status")
        self._started_state = str(start.facts.get("state") or "")
        self._started_percent = _percent_text(status.get("percent") if isinstance(status, dict) else None)
        return start

    def _poll_until_done(self) -> tuple[str, StepResult | None]:
        """Poll until the task ends: each poll waits on the host for the state or percent to move
        (detached-poll's WaitSeconds), so requests follow what happens on the host, not the clock.

        The step's timeout (and --host-timeout) is judged on an answer asked for after it passed: a
        controller that fell behind asks once more (with one more wait) before calling a step late.
        """
        options = self.runner.options
        step_deadline = time.monotonic() + max(30.0, self.script.meta.timeout * options.time_scale)
        deadline = min(step_deadline, self.runner.deadline)  # --host-timeout holds while the step runs
        wait = host_wait_seconds(options.transport.operation_timeout, options.time_scale)
        offset = self.runner.transcript_read.get(self.script.meta.name, 0)  # not what an earlier attempt showed
        last: StepResult | None = None
        seen_state, seen_percent = self._started_state, self._started_percent
        last_percent: tuple[int, str] = (-1, "")
        silence = Silence(self.runner, self.script.meta.name)
        unreadable = 0
        sent: float | None = None  # when the last poll went out
        gap = min(_FIRST_GAP, options.poll_interval)
        while True:
            if self.runner.ctx.cancelled:
                raise Cancelled()
            if sent is not None:  # changes closer together than the gap are read together
                time.sleep(max(0.0, gap - (time.monotonic() - sent)))
                gap = min(gap * 1.5, options.poll_interval)
            sent = time.monotonic()
            late = sent > deadline  # this answer decides the timeout
            try:
                with self.runner.connected.waiting():
                    poll = self.runner.run_script(get_script("detached-poll"), {
                        "RunId": self.run_id, "Step": self.script.meta.name, "TranscriptOffset": offset,
                        "WaitSeconds": wait, "SeenState": seen_state, "SeenPercent": seen_percent}, None)
            except TransportError as exc:
                if exc.kind in ("auth", "tls"):
                    raise
                silence.no_answer(exc, task=f"wuremote-{self.run_id}-{self.script.meta.name}")
                self.runner.connected.reset()  # re-attach on a fresh connection; the task runs on
                continue
            silence.answered()
            if poll.exit_code != ExitCode.OK or not poll.facts.get("state"):
                unreadable = self._status_unreadable(poll, unreadable)
                continue
            unreadable = 0
            last = poll
            facts = poll.facts
            text = facts.get("transcript")
            if isinstance(text, str) and text:
                self.streams.append(StreamRecord(time.time(), "host-transcript", text))
                self.runner.stream_line(self.label, "host-transcript", text)  # -v: what the task wrote since the last poll
            next_offset = facts.get("transcript_next_offset")
            if isinstance(next_offset, int) and next_offset >= offset:
                offset = next_offset
            elif isinstance(next_offset, int):
                offset = 0  # the file is shorter than what was read: a new one (removed meanwhile), read it whole
            self.runner.transcript_read[self.script.meta.name] = offset
            state = str(facts.get("state") or "")
            percent = facts.get("percent")
            # What the step says it does now (install-updates: "3/7 KB5034441"), else its state.
            said = str(facts.get("message") or ("" if state == "running" else state))  # "running" says nothing
            if isinstance(percent, int) and (percent, said) != last_percent:
                last_percent = (percent, said)
                self.runner.emit(ev.StepProgress(self.runner.ctx.run_id, self.runner.name, self.script.meta.name,
                                                 percent=percent, message=said))
            seen_state = state if state in ("queued", "running", FINISHED, INTERRUPTED) else ""
            seen_percent = _percent_text(percent)
            if state in (FINISHED, INTERRUPTED):
                return state, last
            if late:  # asked after the deadline (and given one more wait): still running
                what = (f"{self.script.meta.name} still running after its timeout" if deadline == step_deadline
                        else self.runner.host_timeout_cause(self.script.meta.name))
                raise HostFailed(Outcome.FAILED, f"{what}; left running on the host "
                                 f"(task wuremote-{self.run_id}-{self.script.meta.name}); nothing was stopped")

    def _status_unreadable(self, poll: StepResult, polls_before: int) -> int:
        """A poll that found no status.json or could not read it: "try again", up to STATUS_UNREADABLE_POLLS.

        Never a failed step while the task may still run: past the bound the host fails with the
        task left as it is (nothing stopped, nothing removed) and `wuremote resume` re-attaches.
        """
        polls = polls_before + 1
        what = "no status.json" if poll.exit_code == ExitCode.NOT_APPLICABLE else f"status.json unreadable (exit {poll.exit_code})"
        if polls == 1:
            self.runner.message("warning", f"{self.label}: {what}; reading it again")
        if polls >= STATUS_UNREADABLE_POLLS:
            detail = "; ".join(poll.messages or poll.errors)[:200]
            raise HostFailed(Outcome.FAILED, f"{self.label}: {what} at {polls} polls in a row ({detail}); the task "
                             f"wuremote-{self.run_id}-{self.script.meta.name} is left on the host as it is, nothing "
                             "was stopped; `wuremote resume` re-attaches")
        return polls

    def _clean_up(self) -> None:
        try:
            self.runner.run_script(get_script("detached-cleanup"), {"RunId": self.run_id, "Step": self.script.meta.name},
                                   None)
        except TransportError:
            self.runner.message("warning", f"could not remove the finished {self.label} task; it is removed on the next run")


class Silence:
    """How long a host has not answered, said while it lasts and bounded by --no-answer-timeout.

    A dead host or a flaky link used to read as forty silent minutes (polls retried until the
    step's own timeout); now the operator sees "no answer since 08:13:29, retrying (attempt 3)"
    and the host ends unreachable, its step left running and recorded for resume.
    """

    SAY_EVERY = 30.0  # seconds between two "no answer since" lines for one host

    def __init__(self, runner: StepRunner, during: str) -> None:
        self.runner = runner
        self.during = during
        self.attempts = 0
        self.answered()

    def answered(self) -> None:
        self.attempts, self._said = 0, 0.0
        self._last, self._last_wall = time.monotonic(), time.time()

    def no_answer(self, error: TransportError, *, task: str) -> None:
        now = time.monotonic()
        self.attempts += 1
        if self.attempts == 1:
            # Silence counts from the first request that went unanswered, not from the last answer:
            # a controller that was busy elsewhere in between has not heard the host's silence.
            self._last = now
        stamp = time.strftime("%H:%M:%S", time.localtime(self._last_wall))
        if self.attempts == 1 or now - self._said >= self.SAY_EVERY:
            self._said = now
            self.runner.message("warning", f"no answer since {stamp}, retrying (attempt {self.attempts}): {error}")
        limit = self.runner.options.no_answer_timeout
        if now - self._last > limit:
            raise HostFailed(Outcome.UNREACHABLE, f"no answer since {stamp} ({limit:.0f} s, {self.attempts} attempts) "
                             f"during {self.during}; {task} left running on the host, `wuremote resume` re-attaches "
                             f"({error})")

"""The one retry helper: every retry loop of the engine is a tenacity policy built here.

A policy reads as a sentence (tenacity's style): how many tries, which errors earn another
one, what to do between tries (reset the connection, find out whether the host restarted),
and how long to wait.  The last error is re-raised as itself, never wrapped.
"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_none
from tenacity.wait import wait_base


def retrying(*, when: Callable[[BaseException], bool], tries: int | None = None, within: float | None = None,
             between: Callable[[BaseException], None] | None = None, wait: wait_base | None = None) -> Retrying:
    """Up to ``tries`` attempts (or for ``within`` seconds) while ``when(error)`` holds; ``between(error)``
    runs before the next one.

    ``between`` may raise to stop retrying with another error (a host that is gone for good).
    """
    if (tries is None) == (within is None):
        raise ValueError("retrying: give tries or within, not both")

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if between is not None and error is not None:
            between(error)

    stop = stop_after_attempt(tries) if tries is not None else stop_after_delay(within or 0.0)
    return Retrying(stop=stop, retry=retry_if_exception(when), before_sleep=before_sleep,
                    wait=wait or wait_none(), reraise=True)

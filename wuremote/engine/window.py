"""Maintenance windows: "Sat 01:00-05:00", "Mon-Fri 22:00-02:00", "Sat,Sun 00:00-06:00".

Times are the controller's local time.  The days name the day a window *opens*, so an
overnight window "Fri 22:00-02:00" still holds at 01:00 on Saturday.
"""

from __future__ import annotations

import datetime as dt
import re

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(r"\s*(?:(?P<days>[A-Za-z,\-]+)\s+)?(?P<h1>\d{1,2}):(?P<m1>\d{2})-(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*")


def _days(text: str | None) -> set[int]:
    if not text:
        return set(range(7))
    chosen: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        start = DAYS.index(first)
        end = DAYS.index(last) if last else start
        day = start
        while True:
            chosen.add(day)
            if day == end:
                break
            day = (day + 1) % 7
    return chosen


def in_window(spec: str | None, now: dt.datetime) -> bool:
    """True when ``now`` falls inside the window; no window or one that does not parse: False."""
    match = _SPEC.fullmatch(spec or "")
    if not match:
        return False
    try:
        days = _days(match.group("days"))
    except ValueError:
        return False
    start = int(match.group("h1")) * 60 + int(match.group("m1"))
    end = int(match.group("h2")) * 60 + int(match.group("m2"))
    minute = now.hour * 60 + now.minute
    today, yesterday = now.weekday(), (now.weekday() - 1) % 7
    if start <= end:
        return today in days and start <= minute < end
    return (today in days and minute >= start) or (yesterday in days and minute < end)

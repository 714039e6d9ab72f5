"""Maintenance windows as the inventory documents them (controller local time)."""

from __future__ import annotations

import datetime as dt

import pytest

from wuremote.engine.window import in_window

SAT = dt.datetime(2026, 11, 28)  # a Saturday


@pytest.mark.parametrize(("spec", "when", "inside"), [
    ("Sat 01:00-05:00", SAT.replace(hour=1), True),
    ("Sat 01:00-05:00", SAT.replace(hour=5), False),
    ("Sat 01:00-05:00", SAT.replace(hour=3) + dt.timedelta(days=1), False),
    ("01:00-05:00", SAT.replace(hour=4, minute=59) + dt.timedelta(days=3), True),
    ("Mon-Fri 22:00-02:00", SAT.replace(hour=1), True),  # opened Friday 22:00
    ("Mon-Fri 22:00-02:00", SAT.replace(hour=23), False),
    ("Mon-Fri 22:00-02:00", SAT.replace(hour=23) - dt.timedelta(days=1), True),
    ("Sat,Sun 00:00-06:00", SAT.replace(hour=2) + dt.timedelta(days=1), True),
    ("Fri-Mon 10:00-11:00", SAT.replace(hour=10, minute=30) + dt.timedelta(days=2), True),
    ("Fri-Mon 10:00-11:00", SAT.replace(hour=10, minute=30) + dt.timedelta(days=3), False),
    (None, SAT, False),
    ("whenever", SAT, False),
])
def test_window(spec, when, inside) -> None:
    assert in_window(spec, when) is inside

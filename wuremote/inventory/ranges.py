"""Host-name ranges, as Ansible writes them: web[01:20], db-[a:c], node[0:10:2].

Several ranges in one name multiply (r[1:2]-[a:b] is r1-a, r1-b, r2-a, r2-b), so the limit
counts the product, and it is checked before any name is made.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from collections.abc import Callable

from .model import InventoryError

MAX_RANGE = 100_000  # host names one pattern may expand to; a typo like [1:1000000000] fails fast

_RANGE = re.compile(r"\[([^\]]*:[^\]]*)\]")
_NUMBER = re.compile(r"[0-9]{1,18}")


def expand(pattern: str, where: str) -> list[str]:
    """The host names ``pattern`` stands for, in order; itself when it holds no range."""
    ranges = list(_RANGE.finditer(pattern))
    if not ranges:
        return [pattern]
    parsed = [_parse(pattern, match.group(1), where) for match in ranges]
    if math.prod(len(values) for values, _ in parsed) > MAX_RANGE:
        raise InventoryError(f"{where}: host range {pattern!r} expands to more than {MAX_RANGE:,} host names; "
                             "narrow its bounds or split it into smaller ranges")
    texts = [pattern[:ranges[0].start()]]
    texts += [pattern[match.end():after.start()] for match, after in itertools.pairwise(ranges)]
    tail = pattern[ranges[-1].end():]
    choices = [[show(value) for value in values] for values, show in parsed]
    return ["".join(itertools.chain.from_iterable(zip(texts, parts))) + tail for parts in itertools.product(*choices)]


def _parse(pattern: str, bounds_text: str, where: str) -> tuple[range, Callable[[int], str]]:
    """One [START:END(:STEP)] as the values it runs through and how each is written."""

    def bad(problem: str) -> InventoryError:
        return InventoryError(f"{where}: host range {pattern!r}: {problem}; write NAME[START:END] or "
                              "NAME[START:END:STEP], e.g. web[01:20] or db-[a:c]")

    bounds = bounds_text.split(":")
    if len(bounds) not in (2, 3) or not bounds[1]:
        raise bad("needs a start and an end")
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
        raise bad("the step must be a whole number above 0")
    step = int(step_text)
    if _NUMBER.fullmatch(begin) and _NUMBER.fullmatch(end):
        width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
        if width and len(end) != width:
            raise bad("a zero-padded start and its end need the same number of digits")
        if int(begin) > int(end):
            raise bad("the start is after the end")
        return range(int(begin), int(end) + 1, step), lambda value: str(value).zfill(width)
    if len(begin) == 1 and len(end) == 1 and begin in string.ascii_letters and end in string.ascii_letters:
        first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        if first > last:
            raise bad("the start is after the end")
        return range(first, last + 1, step), string.ascii_letters.__getitem__
    raise bad("the bounds must be both numbers or both single letters")

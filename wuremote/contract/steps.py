"""What the controller must know about particular steps beyond their headers.

Opt-in steps are also marked in their script headers (``opt-in: yes``); a test checks the
two agree.  The restores are the scripts' promise: a pausing step that succeeded owes its
restore until the restore has run, on every path out of a host's walk.
"""

from __future__ import annotations

from types import MappingProxyType

OPT_IN_STEPS = ("av-pause", "clean-boot")
RESTORES = MappingProxyType({"av-pause": "av-resume", "clean-boot": "clean-boot-restore"})

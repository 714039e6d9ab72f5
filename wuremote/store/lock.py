"""One live controller per run: a lock file in the run's folder, held while the run is worked.

Two controllers on the same run (``wuremote resume RUN_ID`` while the run's controller still
works it) would walk the same hosts twice: reset-components four times, clean boot twice.
The lock is an OS file lock (``flock``): the kernel releases it when its process dies, however
it dies, so a killed controller never leaves a stale lock behind.  The file says who holds it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import IO

try:
    import fcntl
except ImportError:  # pragma: no cover - a Windows controller: no lock (documented in the README)
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "controller.lock"
CONTROLLER_ID_FILE = "controller-id"  # in the state dir: this controller's random half of its identity


class RunLockedError(RuntimeError):
    """Another live controller works this run; the message says which and what to do."""


class ControllerLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._handle: IO[str] | None = None

    def __enter__(self) -> ControllerLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = _holder(handle.read())
                handle.close()
                raise RunLockedError(f"run {self.path.parent.name} is being worked by a live controller ({holder}); "
                                     "wait for it to end, or stop it (Ctrl-C or kill -TERM its pid), then resume") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {int(info['pid'])} on {str(info['host'])[:100]}, since {str(info['since'])[:40]}"
    except (ValueError, KeyError, TypeError):
        return "its lock file names no holder"


def controller_identity(state_dir: Path) -> str:
    """This controller instance as the host lock names it: ``<random id of the state dir>@<machine>``.

    A resume from the same state dir on the same machine is the same controller and reclaims its
    host locks; the same run resumed from a copy of the state dir on another machine is another
    controller, and is told who holds the host.  The id is created once (two processes starting
    together agree on one) and holds only [0-9a-f]; the machine name is cut to the characters
    lock.ps1 accepts.
    """
    path = Path(state_dir) / CONTROLLER_ID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole beside it, then linked into place: the link fails if another process won,
        # and no reader ever sees the file empty.
        token = secrets.token_hex(6)
        staged = path.with_name(f"{CONTROLLER_ID_FILE}.{token}.tmp")
        staged.write_text(token, encoding="ascii")
        try:
            os.link(staged, path)
        except FileExistsError:
            pass
        finally:
            staged.unlink(missing_ok=True)
    token = re.sub(r"[^0-9a-f]", "", path.read_text(encoding="ascii", errors="replace"))[:32] or "0"
    machine = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:80].strip(".-") or "controller"
    return f"{token}@{machine}"

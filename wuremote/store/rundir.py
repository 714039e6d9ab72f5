"""A run's folder on disk: where each artifact goes, names that cannot climb out, one atomic writer.

Every file of a run (report.json, junit.xml, report.html, transcripts, log tails) is written
through ``RunDir.write``: the path is checked to stay inside ``runs/<run id>/`` and the bytes
land whole (temporary file, fsync, rename), so a reader sees the old file or the new one.
Host and step names come from hosts: ``safe_name`` turns any of them into one readable
path component.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]")
_WINDOWS_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$", re.IGNORECASE)
_MAX_NAME = 100


@dataclass(frozen=True)
class RunDir:
    """``<state dir>/runs/<run id>/``: the one place a run's files go."""

    state_dir: Path
    run_id: str

    def __post_init__(self) -> None:
        if not _RUN_ID_RE.match(self.run_id):
            raise ValueError(f"run id {self.run_id!r} is not a run id (letters, digits, '.', '_', '-'); "
                             "take it from the list of runs")

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / "runs" / self.run_id

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def junit_xml(self) -> Path:
        return self.path / "junit.xml"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    def write(self, relative: str, content: str | bytes) -> Path:
        """Write one artifact atomically; a path that would leave the run dir is refused."""
        path = self.path / relative
        if path.name in ("", ".", "..") or not _inside(path.parent, self.path):
            raise ValueError(f"artifact path {relative!r} leaves the run dir")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, content.encode("utf-8", errors="backslashreplace") if isinstance(content, str) else content)
        return path


@lru_cache(maxsize=4096)
def _inside(folder: Path, root: Path) -> bool:
    """Whether ``folder`` resolves to ``root`` or below it; once per folder for the process: a run's
    artifacts go to a few folders, and each resolve costs a system call per path component (1.6 %
    of the controller's CPU at 1,000 hosts, one per transcript).  The file itself is not resolved:
    atomic_write replaces a link in its place instead of following it."""
    return folder.resolve().is_relative_to(root.resolve())


def atomic_write(target: Path, content: bytes) -> None:
    """The one writer of files a reader may open at any moment: temporary file, fsync, rename."""
    with tempfile.NamedTemporaryFile("wb", dir=target.parent, prefix=f".{target.name}-", delete=False) as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, target)


def transcript_name(host: str, step: str, attempt: int = 1) -> str:
    """The transcript's path relative to the run dir, as step-finished events carry it."""
    suffix = "" if attempt == 1 else f"-{attempt}"
    return f"transcripts/{safe_name(host)}/{safe_name(step)}{suffix}.log"


def logs_name(host: str, log: str) -> str:
    """Where a collected log tail goes, relative to the run dir (hosts that did not end well)."""
    return f"logs/{safe_name(host)}/{safe_name(log)}"


def safe_name(name: str) -> str:
    """A single, readable path component for any host or step name.

    Letters, digits, '_', '-' and inner dots stay; anything else (slashes, backslashes,
    colons, controls, non-ASCII) becomes %XX of its UTF-8 bytes, as do leading and
    trailing dots, so "../../etc/passwd" is "%2E.%2F..%2Fetc%2Fpasswd" and never climbs.
    Windows device names get their first letter encoded; long names keep a hash tail.
    """
    if not name:
        raise ValueError("an empty host or step name has no file name; give every host a name in the inventory")
    encoded = "".join(ch if _NAME_CHARS.match(ch) else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
                      for ch in name)
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if encoded.endswith("."):
        encoded = encoded[:-1] + "%2E"
    if _WINDOWS_RESERVED.match(encoded):
        encoded = f"%{ord(encoded[0]):02X}" + encoded[1:]
    if len(encoded) > _MAX_NAME:
        encoded = encoded[:_MAX_NAME - 9] + "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return encoded

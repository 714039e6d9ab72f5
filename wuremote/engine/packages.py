"""A KB's .msu on the controller: which file fits a host, and pushing it there in chunks.

Which file: an .msu is named ``<windows version>-kb<number>-[v<n>-]<platform>[-ndp<n>][_<sha1>].msu``:
the form Microsoft describes for Windows Update Standalone Installer packages ("Windows6.1-KB961367-x86.msu",
support.microsoft.com/kb/934307), with the SHA-1 the Update Catalog appends to what it serves
(catalog.s.download.windowsupdate.com/.../windows10.0-kb5033372-x64_822cb06e298fd32637584b623f2cdaa3468f42a1.msu).
The windows version comes from the host's build (diagnose's os.build), the platform from its
architecture (os.architecture, %PROCESSOR_ARCHITECTURE%).

Pushing: push-kb asked what the host holds (the partial file's length is the truth), then the rest
sent in runs of the transport's size (PSRP: one pipeline fed with input chunks; WinRS: the chunks on
the command's stdin), each run's answer journalled as a step-progress event with the bytes the host
holds; after a dropped connection or a controller restart the push continues from there.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import events as ev
from ..contract import ExitCode, Outcome, StepResult
from ..contract.scripts import StepScript
from .context import HostFailed
from .steps import StepRunner

PUSH_STEP = "push-kb"
_SAFE_NAME = re.compile(r"^[\w.\-]+\.msu$", re.IGNORECASE)  # push-kb's and install-kb's [ValidatePattern]
_NAME = re.compile(r"^(?P<os>windows[0-9.]+(?:-rt)?)-(?P<kb>kb\d{6,8})-(?:v\d+-)?(?P<arch>x64|x86|arm64)"
                   r"(?:-ndp\d+)?(?:_[0-9a-f]{40})?\.msu$", re.IGNORECASE)
# %PROCESSOR_ARCHITECTURE% -> the platform a package names.
PLATFORMS = {"amd64": "x64", "arm64": "arm64", "x86": "x86"}
# First build of each Windows version as packages name it (Windows Server shares its client's
# packages: 2008 R2 = 6.1, 2012 = 8-rt, 2012 R2 = 8.1, 2016 to 2022 (build 20348) = 10.0, 2025 = 11.0).
OS_TOKENS = ((22000, "windows11.0"), (10240, "windows10.0"), (9600, "windows8.1"), (9200, "windows8-rt"),
             (7600, "windows6.1"))


@dataclass(frozen=True)
class Package:
    """One .msu on the controller: its size and SHA-256, read once while it stays the same file."""

    path: Path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name.lower()  # what install-kb and push-kb take: ^[\w.\-]+\.msu$


@dataclass(frozen=True)
class CatalogName:
    os: str
    kb: str
    platform: str


def catalog_name(file_name: str) -> CatalogName | None:
    """The windows version, KB and platform a file's name says, or None for a name of another form."""
    match = _NAME.match(file_name)
    if match is None:
        return None
    return CatalogName(match["os"].lower(), match["kb"].upper(), match["arch"].lower())


def os_token(build: int) -> str | None:
    return next((token for first, token in OS_TOKENS if build >= first), None)


def host_fit(facts: dict[str, Any]) -> tuple[str | None, str | None, str]:
    """The windows version and platform a host's packages name, and how to say so ("build 20348, AMD64")."""
    os_facts = facts.get("os") or {}
    build = os_facts.get("build")
    arch = str(os_facts.get("architecture") or "")
    token = os_token(build) if isinstance(build, int) else None
    return token, PLATFORMS.get(arch.lower()), f"build {build}, {arch or 'architecture unknown'}"


def pick(host: str, kb: str, facts: dict[str, Any], *, kb_file: str | None, kb_dir: str | None) -> Path:
    """The file to push to this host; ValueError with one line naming the host when none fits.

    ``kb_file`` is taken as given when its name is not of the Catalog's form, and refused when it
    names another KB, version or platform; ``kb_dir`` offers every .msu in it."""
    token, platform, described = host_fit(facts)
    offered = [Path(kb_file)] if kb_file else sorted(Path(kb_dir or ".").glob("*.msu"), key=lambda p: p.name.lower())
    fitting = []
    for path in offered:
        parsed = catalog_name(path.name)
        if parsed is None:
            if kb_file and re.search(rf"kb{kb[2:]}(\D|$)", path.name, re.IGNORECASE):
                if not _SAFE_NAME.match(path.name):
                    raise ValueError(f"{host}: {path.name}: push-kb takes file names of letters, digits, '.', '-' "
                                     "and '_' only; rename it as the Update Catalog names it")
                fitting.append(path)  # named by the operator, not by the Catalog: install-kb checks it names the KB
            continue
        if parsed.kb == kb.upper() and parsed.os == token and parsed.platform == platform:
            fitting.append(path)
    if not fitting:
        where = kb_file or f"{kb_dir} ({len(offered)} .msu)"
        wanted = f"{token or '?'}-{kb.lower()}-{platform or '?'}"
        raise ValueError(f"{host}: no package for {kb} fits this host ({described}): {where} has no {wanted}*.msu; "
                         "download it from the Microsoft Update Catalog")
    return fitting[0]


def size_text(size: int) -> str:
    """A file size as people read it: 48.2 MB, 310 KB, 12 bytes."""
    if size >= 2**20:
        return f"{size / 2**20:.1f} MB"
    return f"{size / 2**10:.0f} KB" if size >= 2**10 else f"{size} bytes"


@lru_cache(maxsize=64)
def _hashed(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def package(path: Path) -> Package:
    """The file's size and SHA-256 (hashed once while it stays the same file, however many hosts take it)."""
    stat = path.stat()
    return Package(path, stat.st_size, _hashed(str(path), stat.st_size, stat.st_mtime_ns))


@dataclass(frozen=True)
class Chunks:
    """Base64 of the file from ``start`` to ``end`` in items of ``item_bytes``, read from disk as they are
    sent; iterated afresh from ``start`` each time (a transport that sends an operation again on a fresh
    pool or shell iterates it again)."""

    pkg: Package
    start: int
    end: int
    item_bytes: int

    def __iter__(self) -> Iterator[str]:
        with open(self.pkg.path, "rb") as source:
            source.seek(self.start)
            offset = self.start
            while offset < self.end:
                data = source.read(min(self.item_bytes, self.end - offset))
                if not data:
                    raise ValueError(f"{self.pkg.path} is shorter than the {self.pkg.size} bytes it had when hashed")
                offset += len(data)
                yield base64.b64encode(data).decode("ascii")


def push_params(pkg: Package, offset: int = -1) -> dict[str, Any]:
    return {"FileName": pkg.name, "Sha256": pkg.sha256, "Size": pkg.size, "Offset": offset}


def held(result: StepResult) -> tuple[bool, int]:
    """What push-kb says the host holds: (staged with the right hash, bytes of the partial file)."""
    facts = result.facts
    have = facts.get("have")
    return bool(facts.get("staged")), have if isinstance(have, int) and not isinstance(have, bool) else 0


def push(steps: StepRunner, pkg: Package, *, reason: str) -> StepResult:
    """push-kb as one step: ask what the host holds, send the rest run by run, until it is staged.

    Each run's answer (the bytes the host holds) is journalled before the next run starts; a lost
    connection runs the whole body again on a fresh one, which starts by asking the host."""

    def body(script: StepScript, params: dict[str, Any], label: str) -> StepResult:
        result = steps.run_script(script, {**params, **push_params(pkg)}, label)
        staged, have = held(result)
        while result.exit_code == ExitCode.OK and not staged:
            steps.check_time(label)
            transport = steps.connected
            end = min(pkg.size, have + transport.input_run_bytes)
            items = Chunks(pkg, have, end, transport.input_item_bytes)
            result = steps.run_script(script, {**params, **push_params(pkg, have)}, label, input=items)
            before, (staged, have) = have, held(result)
            if result.exit_code != ExitCode.OK:
                break
            steps.emit(ev.StepProgress(steps.ctx.run_id, steps.name, label, percent=have * 100 // max(pkg.size, 1),
                                       message=f"{have / 1e6:.1f} of {pkg.size / 1e6:.1f} MB on the host",
                                       bytes_held=have))
            if not staged and have <= before:
                raise HostFailed(Outcome.FAILED, f"{label}: the host holds {have} bytes of {pkg.name} after a run "
                                                 f"that sent {end - before}; not pushing further")
        return result

    return steps.step(PUSH_STEP, {}, reason=reason, body=body)

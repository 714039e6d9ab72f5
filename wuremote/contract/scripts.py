"""The shipped PowerShell step scripts: their metadata header, payload assembly and hashes.

A step script starts with a header that both the controller and the lab read:

    # wuremote-script
    # name: diagnose
    # version: 1
    # reboot: never          (never | maybe | recommended | usually | always)
    # timeout: 300           (seconds)
    # idempotent: yes
    # detached: no
    # opt-in: no
    # end-wuremote-script

After its ``param()`` block it has the line ``# wuremote-prelude``.  The prelude goes to a host
once per session, not with every step (issue 17): a step's payload is the script with that
line replaced by a reference (a marker naming the prelude's sha256, then a line that
dot-sources the script block ``$global:WuremotePrelude_<sha256>``), so the prelude runs in the
step's own scope exactly as if it were inlined.  The transports define that variable: PSRP
in the pool's runspace (``_psrp_prelude.ps1``, once per pool), WinRS in each powershell.exe
from a copy staged on the host and checked by hash (``_winrs_bootstrap.ps1``).  A detached
step's body still carries the prelude inlined between two marker lines, since a scheduled
task has no session.  Parameters never enter the text: they travel as PowerShell parameters.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable
else:  # pragma: no cover - Python 3.10
    from importlib.abc import Traversable

HEADER_START = "# wuremote-script"
HEADER_END = "# end-wuremote-script"
PRELUDE_PLACEHOLDER = "# wuremote-prelude"
PRELUDE_BEGIN = "# >>> wuremote-prelude"
PRELUDE_END = "# <<< wuremote-prelude"
PRELUDE_FILE = "_prelude.ps1"
PRELUDE_REF = "# wuremote-prelude-ref"  # followed by the prelude's sha256; the next line dot-sources it
PRELUDE_VARIABLE = "WuremotePrelude_"  # + sha256: the global variable holding the prelude's script block
PSRP_PRELUDE_FILE = "_psrp_prelude.ps1"  # defines that variable in a runspace pool's runspace
PSRP_CHAIN_FILE = "_psrp_chain.ps1"  # runs several steps one after another in one PSRP pipeline
# The WinRS bootstrap's exit code when the prelude copy staged on the host is missing or does not
# match its sha256: nothing of the step ran, and the controller sends it again with the prelude.
# One place for the number: _winrs_bootstrap.ps1 writes the same literal.
PRELUDE_NOT_STAGED_EXIT = 22357

REBOOT_VALUES = ("never", "maybe", "recommended", "usually", "always")
_YES_NO = {"yes": True, "no": False}
_REQUIRED_KEYS = ("name", "version", "reboot", "timeout", "idempotent", "detached", "opt-in")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class ScriptHeaderError(ValueError):
    """A step script's metadata header is missing or malformed (names the script and line)."""


@dataclass(frozen=True)
class ScriptMeta:
    name: str
    version: int
    reboot: str
    timeout: int
    idempotent: bool
    detached: bool
    opt_in: bool


@dataclass(frozen=True)
class StepScript:
    meta: ScriptMeta
    text: str  # the script exactly as shipped, placeholder included

    @property
    def sha256(self) -> str:
        return sha256_text(self.text)

    def payload(self) -> str:
        """The text sent to a host: the script with the prelude inlined after its param() block.

        One string per script for the whole process: a thousand hosts polling hold one copy of
        detached-poll's 33 KB payload, not one each (issue 17's tracemalloc: 176 copies, 9.4 MB,
        were the largest Python holder at 150 hosts)."""
        return _payload(self.text)

    def payload_sha256(self) -> str:
        """SHA-256 of payload(), once per script for the process (detached-start checks it per start)."""
        return _payload_sha256(self.text)

    def session_payload(self) -> str:
        """The text a transport sends once the prelude is defined in its session: the script with
        a reference to the prelude (by sha256) after its param() block.  One string per script for the
        process, like payload(): a fleet's hosts each held a copy per pipeline (2.1 MB at 300 hosts)."""
        return _session_payload(self.text, prelude_sha256())


@lru_cache(maxsize=64)
def _payload(text: str) -> str:
    return inline_prelude(text, prelude_text())


@lru_cache(maxsize=64)
def _session_payload(text: str, sha256: str) -> str:
    return reference_prelude(text, sha256)


@lru_cache(maxsize=64)
def _payload_sha256(text: str) -> str:
    return sha256_text(_payload(text))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_header(text: str, source: str = "<script>") -> ScriptMeta:
    """Parse the metadata header; errors name ``source:line`` and what to write instead."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER_START:
        raise ScriptHeaderError(f"{source}:1: a step script must start with '{HEADER_START}'")
    values: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if stripped == HEADER_END:
            break
        if not stripped.startswith("#") or ":" not in stripped:
            raise ScriptHeaderError(f"{source}:{number}: header lines look like '# key: value', got {stripped[:60]!r}")
        key, _, value = stripped[1:].partition(":")
        key, value = key.strip(), value.strip()
        if key not in _REQUIRED_KEYS:
            raise ScriptHeaderError(f"{source}:{number}: unknown header key {key!r}; known: {', '.join(_REQUIRED_KEYS)}")
        if key in values:
            raise ScriptHeaderError(f"{source}:{number}: header key {key!r} given twice")
        values[key] = value
    else:
        raise ScriptHeaderError(f"{source}: header not closed with '{HEADER_END}'")
    missing = [k for k in _REQUIRED_KEYS if k not in values]
    if missing:
        raise ScriptHeaderError(f"{source}: header lacks {', '.join(missing)}")
    if not _NAME_RE.match(values["name"]):
        raise ScriptHeaderError(f"{source}: name {values['name']!r} must be lower-case letters, digits and dashes")
    if values["reboot"] not in REBOOT_VALUES:
        raise ScriptHeaderError(f"{source}: reboot must be one of {', '.join(REBOOT_VALUES)}, got {values['reboot']!r}")
    for key in ("version", "timeout"):
        if not values[key].isdigit() or int(values[key]) <= 0:
            raise ScriptHeaderError(f"{source}: {key} must be a positive whole number, got {values[key]!r}")
    for key in ("idempotent", "detached", "opt-in"):
        if values[key] not in _YES_NO:
            raise ScriptHeaderError(f"{source}: {key} must be yes or no, got {values[key]!r}")
    return ScriptMeta(
        name=values["name"],
        version=int(values["version"]),
        reboot=values["reboot"],
        timeout=int(values["timeout"]),
        idempotent=_YES_NO[values["idempotent"]],
        detached=_YES_NO[values["detached"]],
        opt_in=_YES_NO[values["opt-in"]],
    )


def _in_place_of_placeholder(script: str, block: list[str]) -> str:
    """The script with its first placeholder line (after the param() block) replaced by ``block``'s lines."""
    lines = script.split("\n")
    try:
        index = [line.strip() for line in lines].index(PRELUDE_PLACEHOLDER)
    except ValueError:
        raise ScriptHeaderError(f"step script has no '{PRELUDE_PLACEHOLDER}' line after its param() block") from None
    return "\n".join(lines[:index] + block + lines[index + 1 :])


def inline_prelude(script: str, prelude: str) -> str:
    return _in_place_of_placeholder(script, [PRELUDE_BEGIN, prelude, PRELUDE_END])  # verbatim: the lab hashes it back


def prelude_loader(sha256: str) -> str:
    """The line that runs the prelude defined in the session, in the step's own scope (dot-sourced)."""
    return f". $global:{PRELUDE_VARIABLE}{sha256}"


def reference_prelude(script: str, sha256: str) -> str:
    """The script with its placeholder replaced by the reference marker and the loader line."""
    return _in_place_of_placeholder(script, [f"{PRELUDE_REF} {sha256}", prelude_loader(sha256)])


def split_reference(payload: str) -> tuple[str, str] | None:
    """Undo :func:`reference_prelude`: (script as shipped, the prelude's sha256), or None when the
    payload holds no reference (or one whose loader line is not the expected one)."""
    lines = payload.split("\n")
    for index, line in enumerate(lines[:-1]):
        if line.startswith(PRELUDE_REF + " "):
            sha256 = line[len(PRELUDE_REF) + 1 :].strip()
            if lines[index + 1] != prelude_loader(sha256):
                return None
            return "\n".join(lines[:index] + [PRELUDE_PLACEHOLDER] + lines[index + 2 :]), sha256
    return None


def split_payload(payload: str) -> tuple[str, str | None]:
    """Undo :func:`inline_prelude`: (script as shipped, prelude) or (payload, None) if no prelude block."""
    begin = payload.find(PRELUDE_BEGIN + "\n")
    end = payload.find("\n" + PRELUDE_END, begin + 1)
    if begin < 0 or end < 0:
        return payload, None
    prelude = payload[begin + len(PRELUDE_BEGIN) + 1 : end]
    script = payload[:begin] + PRELUDE_PLACEHOLDER + payload[end + len(PRELUDE_END) + 1 :]
    return script, prelude


def scripts_dir() -> Traversable:
    """Where the scripts are: inside the installed wheel, or ps_scripts/ of a source checkout
    (a checkout on sys.path shadows the installed package and its mapped sub-package)."""
    try:
        return resources.files("wuremote.ps_scripts")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "ps_scripts"


def _read(name: str) -> str:
    return str(scripts_dir().joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def prelude_text() -> str:
    return _read(PRELUDE_FILE)


@lru_cache(maxsize=1)
def prelude_sha256() -> str:
    return sha256_text(prelude_text())


@lru_cache(maxsize=1)
def psrp_prelude_text() -> str:
    return _read(PSRP_PRELUDE_FILE)


@lru_cache(maxsize=1)
def psrp_chain_text() -> str:
    return _read(PSRP_CHAIN_FILE)


@lru_cache(maxsize=1)
def load_scripts() -> dict[str, StepScript]:
    """Every shipped step script by name."""
    scripts: dict[str, StepScript] = {}
    for entry in sorted(scripts_dir().iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".ps1") or entry.name.startswith("_"):
            continue
        text = entry.read_text(encoding="utf-8")
        meta = parse_header(text, source=f"ps_scripts/{entry.name}")
        if meta.name in scripts:
            raise ScriptHeaderError(f"ps_scripts/{entry.name}: script name {meta.name!r} used twice")
        scripts[meta.name] = StepScript(meta=meta, text=text)
    return scripts


def get_script(name: str) -> StepScript:
    scripts = load_scripts()
    if name not in scripts:
        raise KeyError(f"no step script named {name!r}; known: {', '.join(sorted(scripts))}")
    return scripts[name]

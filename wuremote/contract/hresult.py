"""Windows Update HRESULTs: what each means, what fixes it, and whether a repair step can.

A network, proxy, WSUS or policy failure climbs no repair ladder: resetting components
cannot make a proxy resolve.  ``category`` says which kind a code is; ``step`` names the
repair step that fixes a repairable one.

    >>> lookup(-2147024894).name
    'ERROR_FILE_NOT_FOUND'
    >>> lookup("0x8024402C").category
    'network'

``verify.ps1`` keeps the host-side list of codes that mean "cannot reach the update
server" (categories network and policy); a test keeps the two equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

#: category -> what the report says about it
CATEGORIES = MappingProxyType(
    {
        "repairable": "a repair step fixes this",
        "needs-source": "component repair needs a repair source (install media of the same build)",
        "network": "network/proxy/WSUS: not a repair step",
        "policy": "Group Policy or configuration: not a repair step",
        "reboot": "a restart is owed first",
        "busy": "another operation was running or the service was stopping: retry",
        "not-applicable": "the update does not apply to this host",
        "environment": "host resources or firmware: fix outside Windows Update",
        "prerequisite": "an update this one needs is missing (a servicing stack update): install it first",
        "unknown": "not in wuremote's table",
    }
)

#: categories for which no repair step is run (the report names what to fix instead)
NOT_A_REPAIR_STEP = frozenset({"network", "policy"})


@dataclass(frozen=True)
class HResult:
    code: int  # unsigned 32-bit
    name: str
    meaning: str
    fix: str
    category: str
    step: str | None = None  # the wuremote step that fixes it, if any

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFFFFFFFF:
            raise ValueError(f"HRESULT {self.code} is not a 32-bit value")
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r} for {self.hex}")

    @property
    def hex(self) -> str:
        return f"0x{self.code:08X}"

    @property
    def signed(self) -> int:
        """The value as Windows tools print it in decimal ($LASTEXITCODE, event data)."""
        return self.code - (1 << 32) if self.code & 0x80000000 else self.code

    @property
    def repairable(self) -> bool:
        return self.category == "repairable"

    @property
    def category_text(self) -> str:
        return CATEGORIES[self.category]

    def __str__(self) -> str:
        return f"{self.hex} {self.name}: {self.meaning} -> {self.fix}"


def _h(code: int, name: str, meaning: str, fix: str, category: str, step: str | None = None) -> HResult:
    return HResult(code, name, meaning, fix, category, step)


_NET_FIX = "check DNS, proxy (netsh winhttp show proxy) and firewall towards the update server or WSUS"

KNOWN: tuple[HResult, ...] = (
    # --- the agent's stores and caches: reset-components ---
    _h(0x80070002, "ERROR_FILE_NOT_FOUND", "a file the update agent expects is missing (damaged download cache or data store)",
       "reset-components (moves SoftwareDistribution aside)", "repairable", "reset-components"),
    _h(0x80070003, "ERROR_PATH_NOT_FOUND", "a folder the update agent expects is missing",
       "reset-components", "repairable", "reset-components"),
    _h(0x80240034, "WU_E_DOWNLOAD_FAILED", "the update failed to download",
       "reset-components; if it persists, check the network path to the update source", "repairable", "reset-components"),
    _h(0x80240022, "WU_E_ALL_UPDATES_FAILED", "every update in the operation failed",
       "reset-components, then verify", "repairable", "reset-components"),
    _h(0x80242006, "WU_E_UH_INVALIDMETADATA", "an update's metadata is invalid",
       "reset-components (full level clears catroot2)", "repairable", "reset-components"),
    _h(0x8024200D, "WU_E_UH_NEEDANOTHERDOWNLOAD", "the update handler needs the update downloaded again",
       "reset-components", "repairable", "reset-components"),
    _h(0x80246008, "WU_E_DM_FAILTOCONNECTTOBITS", "the download manager cannot reach BITS",
       "reset-components (restarts BITS, restores its start type)", "repairable", "reset-components"),
    _h(0x80070422, "ERROR_SERVICE_DISABLED", "an update service is disabled",
       "reset-components (restores the Windows default unless Group Policy disables it)", "repairable", "reset-components"),
    _h(0x8024A105, "WU_E_AU_NO_REGISTERED_SERVICE", "Automatic Updates has no registered update service",
       "reset-components", "repairable", "reset-components"),
    _h(0x80240FFF, "WU_E_UNEXPECTED", "the agent failed for an unexpected reason",
       "troubleshooter, then reset-components", "repairable", "troubleshooter"),
    _h(0x80070020, "ERROR_SHARING_VIOLATION", "a file is held open by another process (often a third-party service or filter)",
       "clean-boot (opt-in), restart, update, clean-boot-restore", "repairable", "clean-boot"),
    _h(0x8024200B, "WU_E_UH_INSTALLERFAILURE", "the update's installer failed when run by the agent",
       "install-kb: install the .msu by hand with DISM", "repairable", "install-kb"),
    _h(0x80070643, "ERROR_INSTALL_FAILURE", "a Windows Installer (MSI) based update failed to install",
       "reset-components (restarts msiserver), then install again", "repairable", "reset-components"),
    _h(0x80070005, "E_ACCESSDENIED", "access denied: not elevated, or the agent refused a remote logon token",
       "run elevated; download and install only from a SYSTEM task (verify, install-kb run detached); check antivirus",
       "repairable", "verify"),
    # --- component store: dism, sfc ---
    _h(0x80073712, "ERROR_SXS_COMPONENT_STORE_CORRUPT", "the component store is corrupt",
       "dism (RestoreHealth), then sfc", "repairable", "dism"),
    _h(0x800F081F, "CBS_E_SOURCE_MISSING", "the source files for the repair could not be found",
       "dism with a repair source: wim:<install.wim of the same build>:<index> and /LimitAccess", "needs-source", "dism"),
    _h(0x800F0906, "CBS_E_DOWNLOAD_FAILURE", "the repair content could not be downloaded",
       "give dism a repair source, or allow repair content from Windows Update by policy (WSUS hosts)", "needs-source", "dism"),
    _h(0x800F0907, "CBS_E_GROUPPOLICY_DISALLOWED", "policy forbids downloading repair content",
       "give dism a repair source, or change 'Specify settings for optional component installation and component repair'",
       "needs-source", "dism"),
    _h(0x800F081E, "CBS_E_NOT_APPLICABLE", "the package does not apply to this host",
       "none: wrong OS, architecture or superseded update", "not-applicable"),
    _h(0x800F0823, "CBS_E_NEW_SERVICING_STACK_REQUIRED", "the package needs a newer servicing stack",
       "install the latest servicing stack update (SSU) for this build, then the KB again", "prerequisite"),
    # --- network, proxy, WSUS: not a repair step ---
    _h(0x8024402C, "WU_E_PT_WINHTTP_NAME_NOT_RESOLVED", "the proxy or update server name cannot be resolved", _NET_FIX, "network"),
    _h(0x80244022, "WU_E_PT_HTTP_STATUS_SERVICE_UNAVAIL", "the update server answered HTTP 503 (WSUS application pool stopped?)",
       "check the WSUS server and its IIS application pool", "network"),
    _h(0x80072EE2, "WININET_E_TIMEOUT", "the connection to the update server timed out", _NET_FIX, "network"),
    _h(0x80072EE7, "WININET_E_NAME_NOT_RESOLVED", "the update server name cannot be resolved", _NET_FIX, "network"),
    _h(0x80072EFD, "WININET_E_CANNOT_CONNECT", "the update server cannot be reached", _NET_FIX, "network"),
    _h(0x80072EFE, "WININET_E_CONNECTION_ABORTED", "the connection to the update server was aborted", _NET_FIX, "network"),
    _h(0x800705B4, "ERROR_TIMEOUT", "the operation timed out (update server or time source too slow or unreachable)",
       _NET_FIX, "network"),
    _h(0x8024401B, "WU_E_PT_HTTP_STATUS_PROXY_AUTH_REQ", "the proxy requires authentication (HTTP 407)",
       "let the machine account through the proxy, or set a WinHTTP proxy bypass", "network"),
    _h(0x8024401C, "WU_E_PT_HTTP_STATUS_REQUEST_TIMEOUT", "the update server timed out the request (HTTP 408)", _NET_FIX, "network"),
    _h(0x80244017, "WU_E_PT_HTTP_STATUS_DENIED", "the update server refused access (HTTP 401)", "check WSUS authentication", "network"),
    _h(0x80244018, "WU_E_PT_HTTP_STATUS_FORBIDDEN", "the update server or proxy forbade the request (HTTP 403)",
       "check proxy rules for the update URLs", "network"),
    _h(0x80244019, "WU_E_PT_HTTP_STATUS_NOT_FOUND", "the update server returned HTTP 404 (wrong WSUS URL or missing content)",
       "check the WUServer policy value and the WSUS content", "network"),
    _h(0x8024402F, "WU_E_PT_ECP_SUCCEEDED_WITH_ERRORS", "external cab processing finished with errors (often a proxy or filter altering the files)",
       "exempt the update URLs from content inspection", "network"),
    _h(0x80240438, "WU_E_PT_ENDPOINT_UNREACHABLE", "no route to the update service endpoint", _NET_FIX, "network"),
    _h(0x800B0109, "CERT_E_UNTRUSTEDROOT", "the update server's certificate chains to an untrusted root (TLS inspection?)",
       "trust the inspecting proxy's root or exempt the update URLs", "network"),
    # --- policy ---
    _h(0x8024002E, "WU_E_WU_DISABLED", "access to an unmanaged update server is not allowed by policy",
       "fix the Windows Update policies (WSUS settings, 'Do not connect to any Windows Update Internet locations')", "policy"),
    # --- clock, disk, reboot, busy ---
    _h(0x80072F8F, "WININET_E_DECODING_FAILED", "a secure channel error, most often a wrong system clock",
       "sync-time; if the clock is right, check TLS inspection and root certificates", "repairable", "sync-time"),
    _h(0x80070070, "ERROR_DISK_FULL", "the disk is full", "cleanup; free 15-20 GB on the system drive", "repairable", "cleanup"),
    _h(0x80070BC9, "ERROR_FAIL_REBOOT_REQUIRED", "a previous operation needs a restart first", "restart, then try again", "reboot"),
    _h(0x80070BC2, "ERROR_SUCCESS_REBOOT_REQUIRED", "installed; a restart completes it (3010)", "restart", "reboot"),
    _h(0x80240016, "WU_E_INSTALL_NOT_ALLOWED", "another installation is running or a restart is pending", "restart or wait, then try again", "reboot"),
    _h(0x8024001E, "WU_E_SERVICE_STOP", "the service or system was shutting down", "retry once the host is up", "busy"),
    _h(0x8024000B, "WU_E_CALL_CANCELLED", "the operation was cancelled", "retry", "busy"),
    _h(0x800F0922, "CBS_E_INSTALLERS_FAILED", "an installer failed during servicing (System Reserved/EFI partition full, or a VPN/.NET blocker)",
       "free space on the System Reserved/EFI partition; then install again", "environment"),
    _h(0x8007000E, "E_OUTOFMEMORY", "not enough memory", "free memory or add some; then try again", "environment"),
)

_BY_CODE: MappingProxyType[int, HResult] = MappingProxyType({h.code: h for h in KNOWN})

_HEX_RE = re.compile(r"^(?:0x)?([0-9a-f]{1,8})$", re.IGNORECASE)


def normalize(value: int | str) -> int:
    """An HRESULT as an unsigned 32-bit int, from an int (negative allowed) or a hex/decimal string.

    Strings: '0x80070002', '80070002' (hex, 8 digits), '-2147024894' (decimal).
    """
    if isinstance(value, bool):
        raise TypeError("an HRESULT is not a bool")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-\d+", text) or (re.fullmatch(r"\d+", text) and len(text) != 8):
            number = int(text, 10)
        else:
            match = _HEX_RE.match(text)
            if not match:
                raise ValueError(f"not an HRESULT: {value!r} (write 0x80070002, 80070002 or -2147024894)")
            number = int(match.group(1), 16)
    else:
        raise TypeError(f"an HRESULT is an int or a string, not {type(value).__name__}")
    if not -(1 << 31) <= number <= 0xFFFFFFFF:
        raise ValueError(f"HRESULT {value!r} does not fit in 32 bits")
    return number & 0xFFFFFFFF


def lookup(value: int | str) -> HResult | None:
    """The known record for a code, or None when the code is valid but unknown."""
    return _BY_CODE.get(normalize(value))


def describe(value: int | str) -> HResult:
    """Always a record: the known one, or an 'unknown' record that says where to look."""
    code = normalize(value)
    known = _BY_CODE.get(code)
    if known is not None:
        return known
    return HResult(code, "UNKNOWN", "not in wuremote's table", "look it up in Microsoft's Windows Update error reference",
                   "unknown")


def codes_in(category: str) -> frozenset[int]:
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")
    return frozenset(h.code for h in KNOWN if h.category == category)

"""The host data a transport needs, and the rules that refuse unsafe or unworkable settings.

As pyinfra's connectors declare their own host data, the transports own this record: the
inventory fills it (HostConfig.connection) and checks it with the same rules, so a bad
setting is refused before any host is touched, with the file and line; a transport checks it
again before its first request, for callers of the Python API that build hosts by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..secret import Secret

TRANSPORTS = ("psrp", "winrm")
AUTHS = ("basic", "ntlm", "negotiate", "kerberos", "credssp", "certificate")
SCHEMES = ("https", "http")
DEFAULT_PORTS = {"https": 5986, "http": 5985}


@dataclass(frozen=True)
class Connection:
    """How to reach one host over WS-Man; the repr never shows the password (Secret masks it)."""

    name: str  # the host's inventory name, for messages
    address: str
    port: int | None = None  # None: 5986 for https, 5985 for http
    scheme: str = "https"
    transport: str = "psrp"
    auth: str = "negotiate"
    cert_validation: bool = True
    ca_file: str | None = None
    username: str | None = None
    password: Secret | None = None
    allow_unencrypted_basic: bool = False  # Basic over plain HTTP only when opted in by name
    proxy: str | None = None  # environment proxies are ignored unless set here
    cert_pem: str | None = None  # certificate auth
    cert_key_pem: str | None = None

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme, 5986)

    def problem(self, *, credentials: bool = True, opt_in_hint: str = "allow_unencrypted_basic = true") -> str | None:
        """Why these settings must be refused before any request, or None.

        The one place for these rules: the inventory words the answer with its file and line
        (and its own spelling of the opt-in), a transport with the host's name.
        ``credentials`` is False where passwords are resolved later (an inventory being read).
        """
        if self.scheme not in SCHEMES:
            return f"scheme must be http or https, got {self.scheme!r}"
        if self.transport not in TRANSPORTS:
            return f"transport must be psrp or winrm, got {self.transport!r}"
        if self.auth == "basic" and self.scheme == "http" and not self.allow_unencrypted_basic:
            return ("auth basic over scheme http would send the password unencrypted over plain HTTP; "
                    f"use scheme https, or set {opt_in_hint} if you accept that")
        if self.auth == "certificate":
            if self.scheme != "https" or not self.cert_pem or not self.cert_key_pem:
                return ("auth certificate needs scheme https, cert_pem and cert_key_pem "
                        "(the client certificate and its key files); set them")
            return None
        if credentials and (not self.username or not self.password):
            return f"auth {self.auth} needs username and password (or password_env)"
        if self.auth == "basic" and self.username and self.password is not None:
            try:
                self.username.encode("latin-1")
                self.password.reveal().encode("latin-1")
            except UnicodeEncodeError:
                return ("Basic authentication carries only Latin-1 user names and passwords; "
                        "use auth = \"ntlm\" or \"negotiate\" for this account")
        return None


class Reachable(Protocol):
    """What knows its Connection: an inventory's HostConfig (``host.connection``)."""

    @property
    def connection(self) -> Connection: ...

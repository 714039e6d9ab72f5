"""NTLM (in Negotiate) acceptor and WS-Man message encryption, as a Windows host's WinRM does them.

The handshake rides on HTTP: the client's Negotiate token in ``Authorization: Negotiate``,
the host's challenge on a 401, the client's Authenticate message next; the connection is
then logged on, and over HTTP every body travels sealed with the session's keys as
``multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted"`` (MS-WSMV
2.2.9.1.1).  A client that wraps NTLM in SPNEGO gets the acceptor's final SPNEGO token
(mechListMIC) on the 200 that ends the handshake; raw NTLM has no final token.

pyspnego's NTLM acceptor reads the accepted credential only from the file named by the
``NTLM_USER_FILE`` environment variable, which is process-wide while labs (one loop
thread each) may differ in password.  So each lab writes its own file (the NT hash, not
the password) and every acceptor call sets the variable under one lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import spnego
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1
from spnego.exceptions import SpnegoError

PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
# Kerberos without SPNEGO (the "Kerberos" scheme pywinrm uses) seals under its own name (MS-WSMV 2.2.9.1.1).
KERBEROS_PROTOCOL = "application/HTTP-Kerberos-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"
CONTENT_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'
_ENV_LOCK = threading.Lock()
_LENGTH = re.compile(rb"Length=(\d+)")


class NtlmError(Exception):
    """A token or sealed body the acceptor refuses (answered 401 or 400, never with details)."""


@contextlib.contextmanager
def _credential_file(path: Path) -> Iterator[None]:
    with _ENV_LOCK:
        previous = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = str(path)
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = previous


def write_store(path: Path, username: str, password: str) -> Path:
    """The lab's NTLM credential file (smbpasswd layout: hashes, no password)."""
    path.write_text(f"{username}:1000:{lmowfv1(password).hex().upper()}:{ntowfv1(password).hex().upper()}:[U]:LCT-0\n",
                    encoding="ascii")
    return path


class Acceptor:
    """One connection's logon: steps the client's tokens, then seals and unseals bodies."""

    def __init__(self, store: Path, scheme: str = "negotiate") -> None:
        """``scheme``: "negotiate" (NTLM, or Kerberos when the process has a keytab: KRB5_KTNAME) or
        "kerberos" (Kerberos alone, as the ``Kerberos`` HTTP scheme carries it)."""
        self.store = store
        self.scheme = "kerberos" if scheme.lower() == "kerberos" else "negotiate"
        self.protocol = KERBEROS_PROTOCOL if self.scheme == "kerberos" else PROTOCOL
        with _credential_file(store):
            self._context = spnego.server(protocol=self.scheme)

    @property
    def complete(self) -> bool:
        return bool(self._context.complete)

    @property
    def user(self) -> str:
        principal = self._context.client_principal or ""
        return principal.rpartition("\\")[2].partition("@")[0]  # DOMAIN\user (NTLM) or user@REALM (Kerberos)

    @property
    def negotiated(self) -> str:
        """The mechanism the logon used: "ntlm" or "kerberos"."""
        return str(getattr(self._context, "negotiated_protocol", self.scheme) or self.scheme)

    def step(self, token: bytes) -> bytes | None:
        """The token to send back (challenge, or SPNEGO's final token), or None; NtlmError on a bad logon."""
        try:
            with _credential_file(self.store):
                return self._context.step(token)
        except (SpnegoError, ValueError, struct.error) as exc:
            raise NtlmError(type(exc).__name__) from None

    def seal(self, body: bytes) -> bytes:
        header, data, padding = self._context.wrap_winrm(body)
        return b"\r\n".join([
            BOUNDARY,
            f"\tContent-Type: {self.protocol}".encode(),
            f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(body) + padding}".encode(),
            BOUNDARY,
            b"\tContent-Type: application/octet-stream",
            struct.pack("<i", len(header)) + header + data + BOUNDARY + b"--\r\n",
        ])

    def unseal(self, body: bytes) -> bytes:
        parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
        if len(parts) != 2:
            raise NtlmError("not one encrypted part")
        match = _LENGTH.search(parts[0])
        payload = parts[1]
        if payload.endswith(BOUNDARY + b"--\r\n"):
            payload = payload[: -len(BOUNDARY + b"--\r\n")]
        payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        try:
            (length,) = struct.unpack("<i", payload[:4])
            plain = self._context.unwrap_winrm(payload[4:4 + length], payload[4 + length:])
        except (SpnegoError, ValueError, struct.error) as exc:
            raise NtlmError(type(exc).__name__) from None
        if match is None or int(match.group(1)) != len(plain):
            raise NtlmError("length does not match")
        return plain


def encrypted(content_type: str) -> bool:
    lower = content_type.lower()
    return lower.startswith("multipart/encrypted") and (PROTOCOL.lower() in lower or KERBEROS_PROTOCOL.lower() in lower)


def content_type(protocol: str) -> str:
    return f'multipart/encrypted;protocol="{protocol}";boundary="Encrypted Boundary"'

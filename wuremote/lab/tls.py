"""The lab's own certificate authority: one CA, one leaf for 127.0.0.1/localhost, written out for clients."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class LabCA:
    def __init__(self) -> None:
        self._ca = trustme.CA(organization_name="wuremote lab")
        self._leaf = self._ca.issue_cert("127.0.0.1", "localhost", "::1")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._leaf.configure_cert(context)
        return context

    def write_ca(self, path: Path) -> Path:
        self._ca.cert_pem.write_to_path(str(path))
        return path

"""-vv: the WS-Man exchange, each SOAP message sent and received, on stderr, with every password of the
run masked and each message cut to a readable length: for PSRP pypsrp's own debug log, for WinRS the one
wuremote's pywinrm Protocol writes (pywinrm logs none).  Both log the envelopes in plain text (before
message encryption, after decryption) and never the HTTP headers.

No password travels in these messages (authentication happens in HTTP headers and handshakes that are
not logged), so the mask is a second guard, not the first."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import IO

from .engine.runner import HOST_THREAD
from .output.terminal import printable
from .secret import Secret

WSMAN_LOGGERS = ("pypsrp.wsman", "wuremote.winrs.wsman")  # PSRP's (pypsrp), WinRS' (transport/winrm.py)
MAX_CHARS = 4000  # of one message; a 4 MB output would drown the terminal


class _Masking(logging.Filter):
    """Passwords masked, the message cut, and escaped as all host text is (printable: an envelope's
    line breaks too, so a host can neither drive the terminal nor forge a line for another host);
    ``record.host`` is the host whose walk sent or received it (its thread's name), or "-"."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        super().__init__()
        self.secrets = sorted({s.reveal() for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for secret in self.secrets:
            text = text.replace(secret, "***")
        if len(text) > MAX_CHARS:
            text = text[:MAX_CHARS] + f" ... ({len(text) - MAX_CHARS} more characters)"
        record.msg, record.args = printable(text), None
        thread = record.threadName or ""
        record.host = printable(thread[len(HOST_THREAD):]) if thread.startswith(HOST_THREAD) else "-"
        return True


def trace_wsman(secrets: Iterable[Secret], stream: IO[str] | None = None) -> logging.Handler:
    """Show the WS-Man exchange on ``stream`` (stderr) from now on; returns the handler (to remove it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(host)s wsman %(message)s", "%H:%M:%S"))
    handler.addFilter(_Masking(secrets))
    for name in WSMAN_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    return handler


def stop_trace(handler: logging.Handler) -> None:
    for name in WSMAN_LOGGERS:
        logger = logging.getLogger(name)
        logger.removeHandler(handler)
        if not logger.handlers:
            logger.setLevel(logging.NOTSET)

"""-vv: the WS-Man exchange (pypsrp's own debug log of each SOAP message sent and received), on stderr,
with every password of the run masked and each message cut to a readable length.

No password travels in these messages (authentication happens in HTTP headers and handshakes that are
not logged), so the mask is a second guard, not the first."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import IO

from .secret import Secret

WSMAN_LOGGERS = ("pypsrp.wsman",)  # pywinrm logs no message bodies: -vv shows PSRP traffic only
MAX_CHARS = 4000  # of one message; a 4 MB output would drown the terminal


class _Masking(logging.Filter):
    def __init__(self, secrets: Iterable[Secret]) -> None:
        super().__init__()
        self.secrets = sorted({s.reveal() for s in secrets if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        for secret in self.secrets:
            text = text.replace(secret, "***")
        if len(text) > MAX_CHARS:
            text = text[:MAX_CHARS] + f" ... ({len(text) - MAX_CHARS} more characters)"
        record.msg, record.args = text, None
        return True


def trace_wsman(secrets: Iterable[Secret], stream: IO[str] | None = None) -> logging.Handler:
    """Show the WS-Man exchange on ``stream`` (stderr) from now on; returns the handler (to remove it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s wsman %(message)s", "%H:%M:%S"))
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

"""Structured logging: one line per event, ``key=value`` pairs (logfmt).

Every event has a name (``event=hook.finished``) and, inside a transition,
the transition id (``transition=...``).  Lines go to stderr, which systemd
hands to the journal; the journal adds its own timestamps, so we only add one
when stderr is not the journal.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping

LOGGER_NAME = "liveupd"


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        text = text.replace("\t", "\\t")
        return f'"{text}"'
    return text


def format_fields(fields: Mapping[str, object]) -> str:
    return " ".join(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)


class LogfmtFormatter(logging.Formatter):
    def __init__(self, *, timestamps: bool) -> None:
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {}
        if self.timestamps:
            fields["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        fields["level"] = record.levelname.lower()
        fields["event"] = record.getMessage()
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            fields.update(extra)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return format_fields(fields)


def setup(level: int = logging.INFO) -> None:
    """Configure the ``liveupd`` logger for a program's entry point."""
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter(timestamps="JOURNAL_STREAM" not in os.environ))
    root.handlers[:] = [handler]
    root.propagate = False


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def event(
    logger: logging.Logger, name: str, /, *, level: int = logging.INFO, **fields: object
) -> None:
    """Log one event line: ``event=<name>`` followed by ``fields``."""
    logger.log(level, name, extra={"fields": fields})

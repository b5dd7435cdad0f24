"""A failure of any kind, as a LiveUpdError that names where it happened.

The engine's run loop never lets an exception escape without a rollback:
whatever a step, a journal write or a hook spawn raises (an OSError from a
vanished device, ENOSPC on the state directory, a bug) becomes a
``LiveUpdError`` here, and ``StepFailure`` carries it with the step it came
from, for the journal.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

from liveupd import logs
from liveupd.errors import Failed, LiveUpdError

LOG = logs.get("transition")
DETAIL_CAP = 300  # characters of an exception's text kept in a message


class StepFailure(Exception):
    """``error`` happened in (or around) the step ``step``."""

    def __init__(self, step: str | None, error: LiveUpdError) -> None:
        super().__init__(error.message)
        self.step = step
        self.error = error


def describe(exc: BaseException) -> str:
    """One line about an exception, for a message (capped; errno named)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        text = f"{exc.strerror or exc} ({name})"
        if exc.filename:
            text += f": {exc.filename}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:DETAIL_CAP]


def as_error(exc: BaseException, what: str, *, transition: str = "") -> LiveUpdError:
    """``exc`` as a LiveUpdError saying that ``what`` failed (LiveUpdErrors pass through)."""
    if isinstance(exc, LiveUpdError):
        return exc
    if not isinstance(exc, OSError):
        # Not an expected failure: keep the traceback in the daemon's log.
        LOG.error(
            "transition.unexpected-error",
            exc_info=exc,
            extra={"fields": {"transition": transition or None, "what": what}},
        )
    return Failed(f"{what} failed: {describe(exc)}")


@dataclass(frozen=True)
class StepOutcome:
    """How a step went: ``error`` is None when it succeeded.  ``applied``: the step's
    work was done (its ``apply`` returned), even if recording that failed."""

    key: str
    usec: int
    error: LiveUpdError | None
    applied: bool


def log_write_failure(log: logging.Logger, transition: str, what: str, exc: BaseException) -> None:
    logs.event(
        log,
        "journal.write-failed",
        level=logging.ERROR,
        transition=transition,
        what=what,
        error=describe(exc),
    )

"""The interface boundary: every exception leaves as a named D-Bus error.

A LiveUpdError goes out as its own ``dbus_name`` with its message unchanged
(the message already says what to do).  Anything else is a bug: it is logged
with its traceback and the caller gets ``org.liveupd.LiveUpdate1.Error.Failed``
saying where to look, never a bare Python type name.

Refusals are logged through :mod:`liveupd.service.refusals`: always for root,
a few lines a minute (then a count) for anyone else.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from dbus_fast import DBusError

from liveupd import logs
from liveupd.errors import AccessDenied, Failed, LiveUpdError
from liveupd.service import caller
from liveupd.service.refusals import REFUSALS

LOG = logs.get("service")

P = ParamSpec("P")
R = TypeVar("R")


def to_dbus_error(error: BaseException, *, method: str) -> DBusError:
    if isinstance(error, DBusError):
        return error
    if isinstance(error, LiveUpdError):
        log_refusal(error, method)
        return DBusError(error.dbus_name, error.message)
    LOG.error("method.crashed", exc_info=error, extra={"fields": {"method": method}})
    return DBusError(
        Failed.dbus_name,
        f"liveupd failed unexpectedly in {method} ({type(error).__name__}) and did not "
        "finish the call. See 'journalctl -u liveupd' for details and report it.",
    )


def dbus_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Wrap an async D-Bus method so that every failure is a named D-Bus error."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except Exception as e:
            error = to_dbus_error(e, method=fn.__name__)
        # Raised outside the except clause, with the arguments let go: the error
        # holds no reference to the failed call's frames (an asyncio task keeps
        # its exception in a reference cycle until the garbage collector runs,
        # and those frames hold what the caller sent, 10 MB of it if it wanted).
        del args, kwargs
        raise error

    return wrapper


def refusal_key() -> tuple[str, bool]:
    """Who the current call is, for the refusal log, and whether it is root's."""
    uid = caller.known_uid()
    if uid is not None:
        return f"uid {uid}", uid == 0
    call = caller.current_or_none()
    return (call.sender if call is not None else "unknown"), False


def log_refusal(error: LiveUpdError, method: str) -> None:
    if isinstance(error, AccessDenied) and caller.known_uid() is not None:
        return  # the authorizer logged the denial (auth.denied) already
    who, privileged = refusal_key()
    REFUSALS.note(
        who,
        privileged,
        "method.refused",
        method=method,
        error=error.kind,
        uid=caller.known_uid(),
        message=error.message,
    )

"""The interface boundary: every exception leaves as a named D-Bus error.

A LiveUpdError goes out as its own ``dbus_name`` with its message unchanged
(the message already says what to do).  Anything else is a bug: it is logged
with its traceback and the caller gets ``org.liveupd.LiveUpdate1.Error.Failed``
saying where to look, never a bare Python type name.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from dbus_fast import DBusError

from liveupd import logs
from liveupd.errors import Failed, LiveUpdError

LOG = logs.get("service")

P = ParamSpec("P")
R = TypeVar("R")


def to_dbus_error(error: BaseException, *, method: str) -> DBusError:
    if isinstance(error, DBusError):
        return error
    if isinstance(error, LiveUpdError):
        logs.event(LOG, "method.refused", method=method, error=error.kind, message=error.message)
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
            raise to_dbus_error(e, method=fn.__name__) from e

    return wrapper

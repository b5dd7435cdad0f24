"""D-Bus signatures as ``Annotated`` aliases, and decorators that work on every dbus-fast.

Members are written with typed aliases (``def State(self) -> Str``), which mypy
--strict checks.  dbus-fast reads a member's D-Bus signature from its
annotations, in a form that depends on its version: 4.x and later accept
``Annotated[..., DBusSignature("s")]``; 2.x (Debian 13 ships 2.44) only a
signature string.  Every version accepts the string, so the decorators here
turn each alias into its signature string (``"s"``, ``"a{sv}"``...) and give
dbus-fast a function whose ``__signature__`` carries those strings: one code
path, whichever dbus-fast is installed.

Members that return several values return a tuple; dbus-fast before 5.x sends
a method's or signal's values only from a list, so the decorators hand it one.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from dbus_fast import PropertyAccess, Variant
from dbus_fast import service as _service
from dbus_fast.signature import get_signature_tree

__all__ = [
    "BlockerList",
    "Bool",
    "DBusSignature",
    "HookFinishedArgs",
    "IdAndPath",
    "KernelDetails",
    "KernelList",
    "Nothing",
    "ObjectPath",
    "Options",
    "PhaseChangedArgs",
    "QuarantineList",
    "RecoveredArgs",
    "RefusalList",
    "Str",
    "StrList",
    "TransitionFailedArgs",
    "UInt32",
    "UInt64",
    "dbus_method",
    "dbus_property",
    "dbus_signal",
    "signature_of",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class DBusSignature:
    """The D-Bus signature of an ``Annotated`` type (one complete type, or "")."""

    signature: str


Bool = Annotated[bool, DBusSignature("b")]
Str = Annotated[str, DBusSignature("s")]
UInt32 = Annotated[int, DBusSignature("u")]
UInt64 = Annotated[int, DBusSignature("t")]
ObjectPath = Annotated[str, DBusSignature("o")]
StrList = Annotated[list[str], DBusSignature("as")]
Options = Annotated[dict[str, Variant], DBusSignature("a{sv}")]

# A method without out-arguments (``-> None`` is not a signature to dbus-fast)
Nothing = Annotated[None, DBusSignature("")]
# ListKernels: release, kernel path, initrd path ("" if none), running
KernelList = Annotated[list[tuple[str, str, str, bool]], DBusSignature("a(sssb)")]
# ListKernelDetails: one dictionary per kernel (keys in docs/dbus-api.md)
KernelDetails = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
# ListBlockers: kind, message
BlockerList = Annotated[list[tuple[str, str]], DBusSignature("a(ss)")]
# The Refusals property: reason, message
RefusalList = Annotated[list[tuple[str, str]], DBusSignature("a(ss)")]
# ListQuarantine: (release, kernel path, transition id, reason, since) per quarantined
# kernel, and why the quarantine file cannot be read ("" when it can)
QuarantineList = Annotated[
    tuple[list[tuple[str, str, str, str, float]], str], DBusSignature("a(ssssd)s")
]
# Stage and Execute: the transition's id and object path
IdAndPath = Annotated[tuple[str, str], DBusSignature("so")]
# Signals
PhaseChangedArgs = Annotated[tuple[str, str], DBusSignature("os")]
HookFinishedArgs = Annotated[tuple[str, str, str, str, int], DBusSignature("ossst")]
TransitionFailedArgs = Annotated[tuple[str, str, str], DBusSignature("oss")]
RecoveredArgs = Annotated[tuple[str, bool, str], DBusSignature("obs")]


def signature_of(annotation: object, where: str) -> str:
    """The D-Bus signature an alias above carries; TypeError (naming ``where``) if none."""
    if typing.get_origin(annotation) is Annotated:
        for meta in typing.get_args(annotation)[1:]:
            if isinstance(meta, DBusSignature):
                return meta.signature
    raise TypeError(f"{where}: {annotation!r} is not a D-Bus type from liveupd.service.dbustypes")


def _with_signature_strings(fn: F, *, parameters: bool) -> F:
    """Give ``fn`` a ``__signature__`` whose annotations are D-Bus signature strings.

    ``parameters`` is False for signals, whose parameters are Python values that the
    signal's return value carries (dbus-fast reads only their return annotation).
    """
    name = getattr(fn, "__qualname__", repr(fn))
    hints = typing.get_type_hints(fn, include_extras=True)
    sig = inspect.signature(fn)
    params = []
    for i, p in enumerate(sig.parameters.values()):
        if parameters and i > 0:  # the first is self
            where = f"{name}({p.name})"
            params.append(p.replace(annotation=signature_of(hints.get(p.name), where)))
        else:
            params.append(p)
    ret = signature_of(hints.get("return"), f"{name} (return value)")
    # An empty string is "no value" to every dbus-fast.
    fn.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=params, return_annotation=ret or inspect.Signature.empty
    )
    return fn


def _values_as_list(fn: F) -> F:
    """``fn`` returning a list where it returns a tuple of several D-Bus values."""
    where = f"{getattr(fn, '__qualname__', repr(fn))} (return value)"
    ret = signature_of(typing.get_type_hints(fn, include_extras=True).get("return"), where)
    if len(get_signature_tree(ret).types) < 2:
        return fn
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awaited(*args: Any, **kwargs: Any) -> Any:
            return list(await fn(*args, **kwargs))

        return typing.cast(F, awaited)

    @functools.wraps(fn)
    def called(*args: Any, **kwargs: Any) -> Any:
        return list(fn(*args, **kwargs))

    return typing.cast(F, called)


def dbus_method(name: str | None = None, disabled: bool = False) -> Callable[[F], F]:
    """dbus-fast's ``@method()`` for members annotated with the aliases above."""

    def decorate(fn: F) -> F:
        member = _with_signature_strings(_values_as_list(fn), parameters=True)
        return typing.cast(F, _service.method(name=name, disabled=disabled)(member))

    return decorate


def dbus_signal(name: str | None = None, disabled: bool = False) -> Callable[[F], F]:
    """dbus-fast's ``@signal()`` for members annotated with the aliases above."""

    def decorate(fn: F) -> F:
        member = _with_signature_strings(_values_as_list(fn), parameters=False)
        return typing.cast(F, _service.signal(name=name, disabled=disabled)(member))

    return decorate


def dbus_property(
    access: PropertyAccess = PropertyAccess.READWRITE,
    name: str | None = None,
    disabled: bool = False,
) -> Callable[[Callable[..., Any]], property]:
    """dbus-fast's ``@dbus_property()`` for getters annotated with the aliases above."""

    def decorate(fn: Callable[..., Any]) -> property:
        prop: property = _service.dbus_property(access=access, name=name, disabled=disabled)(
            _with_signature_strings(fn, parameters=True)
        )
        return prop

    return decorate

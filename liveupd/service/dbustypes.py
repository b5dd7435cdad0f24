"""D-Bus signatures as ``Annotated`` aliases (dbus-fast reads them; mypy --strict accepts them)."""

from __future__ import annotations

from typing import Annotated

from dbus_fast import Variant
from dbus_fast.annotations import (
    DBusBool,
    DBusDict,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
)

__all__ = [
    "Bool",
    "HookFinishedArgs",
    "IdAndPath",
    "KernelDetails",
    "KernelList",
    "Nothing",
    "ObjectPath",
    "Options",
    "PhaseChangedArgs",
    "RecoveredArgs",
    "Str",
    "TransitionFailedArgs",
    "UInt32",
    "UInt64",
]

Bool = DBusBool
Str = DBusStr
UInt32 = DBusUInt32
UInt64 = DBusUInt64
ObjectPath = DBusObjectPath
Options = DBusDict

# A method without out-arguments (``-> None`` is not a signature to dbus-fast)
Nothing = Annotated[None, DBusSignature("")]
# ListKernels: release, kernel path, initrd path ("" if none), running
KernelList = Annotated[list[tuple[str, str, str, bool]], DBusSignature("a(sssb)")]
# ListKernelDetails: one dictionary per kernel (keys in docs/dbus-api.md)
KernelDetails = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
# Stage and Execute: the transition's id and object path
IdAndPath = Annotated[tuple[str, str], DBusSignature("so")]
# Signals
PhaseChangedArgs = Annotated[tuple[str, str], DBusSignature("os")]
HookFinishedArgs = Annotated[tuple[str, str, str, str, int], DBusSignature("ossst")]
TransitionFailedArgs = Annotated[tuple[str, str, str], DBusSignature("oss")]
RecoveredArgs = Annotated[tuple[str, bool, str], DBusSignature("obs")]

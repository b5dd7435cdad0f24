"""Introspection details dbus-fast does not take from annotations, and the shipped XML.

dbus-fast names in-arguments after the Python parameters but leaves
out-arguments and signal arguments unnamed; ``arg_names`` names them, so
``busctl introspect`` reads like systemd's own services.  ``xml()`` is the
introspection document shipped as dbus/org.liveupd.LiveUpdate1.xml:
regenerate it with ``python -m liveupd.service.introspection > dbus/org.liveupd.LiveUpdate1.xml``.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, TypeVar

from dbus_fast import introspection as intr

F = TypeVar("F", bound=Callable[..., Any])

EMITS_CHANGED = "org.freedesktop.DBus.Property.EmitsChangedSignal"


def arg_names(*names: str) -> Callable[[F], F]:
    """Name the out-arguments of a @dbus_method or the arguments of a @dbus_signal."""

    def apply(fn: F) -> F:
        member = fn.__dict__.get("__DBUS_METHOD") or fn.__dict__.get("__DBUS_SIGNAL")
        if member is None:
            raise TypeError("arg_names() goes above @dbus_method() or @dbus_signal()")
        spec: intr.Method | intr.Signal = member.introspection
        args = spec.out_args if isinstance(spec, intr.Method) else spec.args
        if len(args) != len(names):
            raise TypeError(f"{spec.name}: {len(args)} arguments, {len(names)} names given")
        for arg, name in zip(args, names, strict=True):
            arg.name = name
        return fn

    return apply


def annotate_property(prop: object, key: str, value: str) -> None:
    """Add an annotation to a @dbus_property (at class level: ``Cls.Prop``)."""
    spec = getattr(prop, "introspection", None)
    if not isinstance(spec, intr.Property):
        raise TypeError("annotate_property() takes a @dbus_property")
    spec.annotations[key] = value


def interfaces() -> list[intr.Interface]:
    """The two liveupd interfaces, as the daemon exports them."""
    from liveupd.service.manager_iface import ManagerInterface
    from liveupd.service.transition_iface import TransitionInterface

    return [ManagerInterface.describe(), TransitionInterface.describe()]


DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)
HEADER_COMMENT = (
    "<!-- org.liveupd.LiveUpdate1: the Manager object (/org/liveupd/LiveUpdate1) and\n"
    "     the Transition objects (/org/liveupd/LiveUpdate1/transition/ID).\n"
    "     Generated: python -m liveupd.service.introspection; described in docs/dbus-api.md -->\n"
)


def xml() -> str:
    root = intr.Node(None, interfaces=interfaces()).to_xml()
    ET.indent(root, space="  ")
    return DOCTYPE + HEADER_COMMENT + ET.tostring(root, encoding="unicode") + "\n"


def main() -> int:
    sys.stdout.write(xml())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The introspection XML of liveupd's two interfaces, as the daemon exports them.

``python -m liveupd.service.interface_xml > dbus/org.liveupd.LiveUpdate1.xml``
regenerates the shipped file; a test compares the two.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

from dbus_fast import introspection as intr

from liveupd.service.manager_iface import ManagerInterface
from liveupd.service.transition_iface import TransitionInterface


def interfaces() -> list[intr.Interface]:
    """The two liveupd interfaces, as the daemon exports them."""
    return [ManagerInterface.describe(), TransitionInterface.describe()]


DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)
HEADER_COMMENT = (
    "<!-- org.liveupd.LiveUpdate1: the Manager object (/org/liveupd/LiveUpdate1) and\n"
    "     the Transition objects (/org/liveupd/LiveUpdate1/transition/ID).\n"
    "     Generated: python -m liveupd.service.interface_xml; described in docs/dbus-api.md -->\n"
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

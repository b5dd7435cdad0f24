"""Names and paths of the D-Bus API (the contract in dbus/org.liveupd.LiveUpdate1.xml)."""

from __future__ import annotations

import re

BUS_NAME = "org.liveupd.LiveUpdate1"
OBJECT_PATH = "/org/liveupd/LiveUpdate1"
MANAGER_INTERFACE = "org.liveupd.LiveUpdate1.Manager"
TRANSITION_INTERFACE = "org.liveupd.LiveUpdate1.Transition"
TRANSITION_PREFIX = OBJECT_PATH + "/transition/"
NO_TRANSITION = "/"

# polkit actions (dbus/org.liveupd.policy)
ACTION_STAGE = "org.liveupd.stage"
ACTION_EXECUTE = "org.liveupd.execute"
ACTION_EXECUTE_IGNORE_INHIBITORS = "org.liveupd.execute-ignore-inhibitors"

ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"

_ELEMENT = re.compile(r"^[A-Za-z0-9_]+$")


def transition_path(transition_id: str) -> str:
    """The object path of a transition; ids are made of [A-Za-z0-9_] by construction."""
    if not _ELEMENT.match(transition_id):
        raise ValueError(f"transition id {transition_id!r} is not a valid object path element")
    return TRANSITION_PREFIX + transition_id


def transition_id(path: str) -> str | None:
    """The transition id in ``path``, or None if it is not a transition object path."""
    if not path.startswith(TRANSITION_PREFIX):
        return None
    tid = path.removeprefix(TRANSITION_PREFIX)
    return tid if _ELEMENT.match(tid) else None

"""polkit's CheckAuthorization, for a caller identified by its bus name.

The subject is ``("system-bus-name", {"name": <sender>})``: polkitd asks the
bus for that connection's uid, pid and start time itself, so the answer can
never be about another process.  polkit is reached on the bus the daemon
serves on: the system bus in production, the test's private bus in tests.

The reply must be of type ``(bba{ss})``: anything else (another signature, a
non-boolean where a boolean belongs) is not an answer, and the caller is
denied (:class:`PolkitBadReply`, logged as an error by the authorizer).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from liveupd.quoting import clip, quote

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_INTERFACE = "org.freedesktop.PolicyKit1.Authority"

ALLOW_USER_INTERACTION = 0x1
# An interactive check waits for a human to type a password in an agent.
INTERACTIVE_TIMEOUT = 300.0
CHECK_TIMEOUT = 25.0


@dataclass(frozen=True)
class Verdict:
    authorized: bool
    challenge: bool  # authorized after authentication (what interactive would ask)
    details: dict[str, str] = field(default_factory=dict)


REPLY_SIGNATURE = "(bba{ss})"


class PolkitUnavailable(Exception):
    """No answer from polkit (not running, not reachable, or it failed)."""


class PolkitBadReply(PolkitUnavailable):
    """polkit (or whatever owns its name) answered with a reply of the wrong type."""


class Authority:
    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    async def check(self, sender: str, action: str, *, interactive: bool) -> Verdict:
        msg = Message(
            destination=POLKIT_NAME,
            path=POLKIT_PATH,
            interface=POLKIT_INTERFACE,
            member="CheckAuthorization",
            signature="(sa{sv})sa{ss}us",
            body=[
                ["system-bus-name", {"name": Variant("s", sender)}],
                action,
                {},
                ALLOW_USER_INTERACTION if interactive else 0,
                "",
            ],
        )
        timeout = INTERACTIVE_TIMEOUT if interactive else CHECK_TIMEOUT
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), timeout)
        except TimeoutError:
            raise PolkitUnavailable(f"polkit did not answer within {timeout:.0f} s") from None
        except Exception as e:  # the connection itself failed
            raise PolkitUnavailable(f"cannot reach polkit: {e}") from e
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise PolkitUnavailable(f"polkit answered {clip(reply.error_name)}: {clip(text)}")
        return parse_reply(reply.signature, reply.body)


def parse_reply(signature: str, body: list[Any]) -> Verdict:
    """The verdict in a CheckAuthorization reply; PolkitBadReply unless it is ``(bba{ss})``."""
    if signature != REPLY_SIGNATURE:
        raise PolkitBadReply(
            f"polkit's reply has type {quote(signature)}, not {REPLY_SIGNATURE}; "
            "it is not an answer"
        )
    try:
        ((authorized, challenge, details),) = body
    except (TypeError, ValueError):
        raise PolkitBadReply(f"polkit's {REPLY_SIGNATURE} reply does not unpack") from None
    if not isinstance(authorized, bool) or not isinstance(challenge, bool):
        raise PolkitBadReply(f"polkit's {REPLY_SIGNATURE} reply holds no booleans")
    if not isinstance(details, dict):
        raise PolkitBadReply(f"polkit's {REPLY_SIGNATURE} reply holds no details")
    return Verdict(authorized, challenge, {str(k): str(v) for k, v in details.items()})

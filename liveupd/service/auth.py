"""Authorization: root may; anyone else only if polkit says so.

Reading is open to all and never comes here.  Stage, Execute and Cancel call
``require()``; ``CanLiveUpdate`` calls ``can()``.  Without an answer from
polkit a non-root caller is denied, and so it is when polkit's reply is not of
type ``(bba{ss})`` (logged as an error).  Denials go through the refusal log
(a few lines a minute per uid, then a count).
"""

from __future__ import annotations

import logging

from dbus_fast.aio import MessageBus

from liveupd import logs
from liveupd.errors import AccessDenied
from liveupd.service import names
from liveupd.service.caller import Call, unix_user
from liveupd.service.polkit import Authority, PolkitBadReply, PolkitUnavailable
from liveupd.service.refusals import REFUSALS

LOG = logs.get("auth")

WHAT = {
    names.ACTION_STAGE: "staging or cancelling a kernel update",
    names.ACTION_EXECUTE: "live-updating the running kernel",
    names.ACTION_EXECUTE_IGNORE_INHIBITORS: "live-updating despite shutdown inhibitors",
}


class Authorizer:
    def __init__(self, bus: MessageBus, authority: Authority) -> None:
        self.bus = bus
        self.authority = authority

    async def require(self, call: Call, action: str, *, interactive: bool) -> int:
        """The caller's uid if it may perform ``action``; AccessDenied otherwise."""
        uid = await unix_user(self.bus, call.sender)
        what = WHAT.get(action, action)
        if uid == 0:
            logs.event(LOG, "auth.allowed", sender=call.sender, uid=uid, action=action, by="root")
            return uid
        try:
            verdict = await self.authority.check(call.sender, action, interactive=interactive)
        except PolkitUnavailable as e:
            REFUSALS.note(
                f"uid {uid}",
                False,
                "auth.denied",
                level=logging.ERROR if isinstance(e, PolkitBadReply) else logging.WARNING,
                sender=call.sender,
                uid=uid,
                action=action,
                reason=str(e),
            )
            raise AccessDenied(
                f"{what} needs authorization, and polkit gave no answer ({e}); "
                "run the command as root, or make sure polkit is running "
                "(systemctl status polkit)"
            ) from None
        if verdict.authorized:
            logs.event(LOG, "auth.allowed", sender=call.sender, uid=uid, action=action, by="polkit")
            return uid
        REFUSALS.note(
            f"uid {uid}",
            False,
            "auth.denied",
            sender=call.sender,
            uid=uid,
            action=action,
            challenge=verdict.challenge,
        )
        if verdict.challenge:
            raise AccessDenied(
                f"{what} requires authentication (polkit action {action}); call again with "
                "the option interactive=true from a session with a polkit agent "
                "(liveupctl does this on a terminal), or run the command as root"
            )
        raise AccessDenied(
            f"uid {uid} is not allowed to do {what} (polkit action {action}); "
            "ask an administrator, or run the command as root"
        )

    async def can(self, call: Call, action: str) -> str:
        """logind's answer for ``Can*()``: ``yes``, ``challenge`` or ``no``."""
        uid = await unix_user(self.bus, call.sender)
        if uid == 0:
            return "yes"
        try:
            verdict = await self.authority.check(call.sender, action, interactive=False)
        except PolkitUnavailable as e:
            REFUSALS.note(
                f"uid {uid}",
                False,
                "auth.no-answer",
                level=logging.ERROR if isinstance(e, PolkitBadReply) else logging.WARNING,
                uid=uid,
                reason=str(e),
            )
            return "no"
        if verdict.authorized:
            return "yes"
        return "challenge" if verdict.challenge else "no"

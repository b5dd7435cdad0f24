"""Which login sessions the update ends, and in what order (pure).

Only remote sessions are ended (logind's ``Remote``: an SSH login from another
machine): their connections go through the network the update is about to
take down.  A session already ``closing`` has no connection left (its leader,
sshd, exited).  The session the update was started from is ended last, so
that its user sees the others go first and its ``liveupctl`` keeps reporting
until then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from liveupd.backends.base import Session


@dataclass(frozen=True)
class Endings:
    first: tuple[Session, ...]  # every remote session but the caller's
    last: Session | None  # the caller's own session, when it is a remote one
    kept: tuple[Session, ...]  # local sessions, and those already closing

    @property
    def ordered(self) -> tuple[Session, ...]:
        return (*self.first, self.last) if self.last is not None else self.first


def plan_endings(sessions: Sequence[Session], caller: str | None) -> Endings:
    """The remote sessions to end, the caller's (``caller``: its session id) last."""
    first: list[Session] = []
    last: Session | None = None
    kept: list[Session] = []
    for s in sessions:
        if not s.remote or s.state == "closing":
            kept.append(s)
        elif caller is not None and s.id == caller:
            last = s
        else:
            first.append(s)
    return Endings(tuple(first), last, tuple(kept))

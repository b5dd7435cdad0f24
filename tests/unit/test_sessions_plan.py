"""Which login sessions an update ends, in what order (liveupd/sessions/plan.py, pure)."""

from __future__ import annotations

from liveupd.backends.base import Session
from liveupd.sessions.plan import plan_endings


def session(sid: str, *, remote: bool = True, state: str = "active") -> Session:
    return Session(
        id=sid, uid=0, user="root", remote=remote, service="sshd", leader=100, state=state
    )


def test_remote_sessions_end_the_callers_last() -> None:
    tty, caller, other, closing = (
        session("1", remote=False),
        session("3"),
        session("5", state="online"),
        session("7", state="closing"),
    )
    endings = plan_endings([tty, caller, other, closing], "3")
    assert endings.first == (other,)
    assert endings.last == caller
    assert endings.kept == (tty, closing)
    assert [s.id for s in endings.ordered] == ["5", "3"]


def test_a_caller_in_no_session_or_a_local_one_ends_nothing_of_its_own() -> None:
    a, b, local = session("4"), session("2"), session("1", remote=False)
    assert plan_endings([a, b, local], None).ordered == (a, b)  # logind's order
    local_caller = plan_endings([a, local], "1")
    assert (local_caller.ordered, local_caller.last, local_caller.kept) == ((a,), None, (local,))


def test_nothing_remote_nothing_to_end() -> None:
    assert plan_endings([session("1", remote=False)], "1").ordered == ()
    assert plan_endings([], None).ordered == ()

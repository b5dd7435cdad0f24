"""The dry-run machine's fault plan: fail the Nth call of an operation, once.

A machine description may carry ``"faults"``, a list of
``{"op": OP, "call": N, "error": ERRNO-NAME}``: the Nth call of OP (counted
from 1 in this process) fails with that errno, once; every other call goes
through.  ``"error": "kill"`` on ``journal-sync`` SIGKILLs the process right
after the Nth durable journal write reached the disk (the daemon dies there,
as it would on a crash).

Operations: ``enumerate``, ``unbind``, ``bind``, ``set-link``, ``sync``,
``syncfs``, ``freeze``, ``thaw``, ``kexec-load``, ``kexec-unload``, ``jump``,
``watchdog-arm``, ``watchdog-disarm``, ``watchdog-take-over``, ``unit-stop``,
``unit-start``, ``hook-spawn``,
``journal-write`` (``ENOSPC``: half the record reaches the file
before the error; any other errno: all of it, then the error, as from a
failed fsync) and ``journal-sync``.  Journal operations are counted from the
first journal this process creates, so the writes of crash recovery never
shift them.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

OPS = (
    "enumerate",
    "unbind",
    "bind",
    "set-link",
    "sync",
    "syncfs",
    "freeze",
    "thaw",
    "kexec-load",
    "kexec-unload",
    "jump",
    "watchdog-arm",
    "watchdog-disarm",
    "watchdog-take-over",
    "unit-stop",
    "unit-start",
    "hook-spawn",
    "journal-write",
    "journal-sync",
)
KILL = "kill"


class InvalidFaultPlan(ValueError):
    pass


@dataclass(frozen=True)
class Fault:
    op: str
    call: int  # 1-based
    error: str  # an errno name (EIO, ENOSPC, ...) or "kill"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise InvalidFaultPlan(f"op: expected one of {', '.join(OPS)}, not {self.op[:40]!r}")
        if self.call < 1:
            raise InvalidFaultPlan(f"call: expected a call number from 1, not {self.call}")
        if self.error == KILL:
            if self.op != "journal-sync":
                raise InvalidFaultPlan('error: "kill" is only for the op journal-sync')
        elif not isinstance(getattr(errno, self.error, None), int):
            raise InvalidFaultPlan(
                f"error: expected an errno name or 'kill', not {self.error[:40]!r}"
            )

    @property
    def errno(self) -> int:
        code: int = getattr(errno, self.error)
        return code

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "call": self.call, "error": self.error}

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        if not isinstance(data, Mapping):
            raise InvalidFaultPlan("expected an object with op, call and error")
        unknown = set(data) - {"op", "call", "error"}
        if unknown:
            raise InvalidFaultPlan(f"unknown keys {sorted(unknown)}; expected op, call, error")
        op, call, error = data.get("op"), data.get("call"), data.get("error", "EIO")
        if not isinstance(op, str) or not isinstance(error, str):
            raise InvalidFaultPlan("op and error must be strings")
        if not isinstance(call, int) or isinstance(call, bool):
            raise InvalidFaultPlan("call must be an integer")
        return cls(op, call, error)


class FaultPlan:
    """Counts the calls of each operation; raises (or kills) where the plan says."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self.faults = tuple(faults)
        self.calls: Counter[str] = Counter()
        self.fired: list[Fault] = []

    @classmethod
    def from_json(cls, data: Any) -> FaultPlan:
        if data is None:
            return cls()
        if not isinstance(data, list):
            raise InvalidFaultPlan("faults: expected a list of {op, call, error}")
        out = []
        for i, item in enumerate(data):
            try:
                out.append(Fault.from_json(item))
            except InvalidFaultPlan as e:
                raise InvalidFaultPlan(f"faults[{i}]: {e}") from None
        return cls(out)

    def take(self, op: str) -> Fault | None:
        """Count one call of ``op``; the fault planned for it, if any."""
        self.calls[op] += 1
        n = self.calls[op]
        for fault in self.faults:
            if fault.op == op and fault.call == n:
                self.fired.append(fault)
                return fault
        return None

    def check(self, op: str) -> None:
        """Count one call of ``op``; raise its planned OSError (or die) if there is one."""
        fault = self.take(op)
        if fault is not None:
            fail(fault)


def injected_error(fault: Fault) -> OSError:
    return OSError(
        fault.errno,
        f"{os.strerror(fault.errno)} (injected by the dry-run machine: {fault.op} call "
        f"{fault.call})",
    )


def fail(fault: Fault) -> None:
    if fault.error == KILL:
        os.kill(os.getpid(), signal.SIGKILL)
    raise injected_error(fault)

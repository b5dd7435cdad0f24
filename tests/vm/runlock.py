"""At most N processes running VMs on this host at a time (N = LIVEUPD_VM_SLOTS, default 1).

Under TCG a guest keeps both cores of a 2-core machine busy during its boots: more
test processes booting VMs than the host has room for stretch every timing and make
deadlines flaky. While a process has any VM running it holds an exclusive flock on one
of N slot files in the cache (`vm-run.lock`, `vm-run.1.lock`, ...); a process that finds
every slot taken blocks in `GuestVM.start()` until one is free. `make test` runs the VM
suite in VM_JOBS pytest workers and sets LIVEUPD_VM_SLOTS to match, so that a
benchmark or a demo started beside it still waits for a slot. Inside one process the
lock is re-entrant, so a test may run two VMs at once (e.g. a module-scoped guest plus
one from vm_factory) without deadlocking itself. Set LIVEUPD_VM_NO_RUN_LOCK=1 to opt out.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO

from tests.vm import cache

SLOTS_ENV = "LIVEUPD_VM_SLOTS"


def enabled() -> bool:
    return not os.environ.get("LIVEUPD_VM_NO_RUN_LOCK")


def slots() -> int:
    """How many processes may run VMs at once (LIVEUPD_VM_SLOTS, at least 1)."""
    value = os.environ.get(SLOTS_ENV, "1")
    try:
        return max(int(value), 1)
    except ValueError:
        raise ValueError(f"{SLOTS_ENV}={value[:40]!r}: expected a whole number") from None


def slot_path(root: Path, slot: int) -> Path:
    return root / ("vm-run.lock" if slot == 0 else f"vm-run.{slot}.lock")


def waiting_slot(pid: int, count: int) -> int:
    """The slot a process waits for when every one is taken (arbitrary, fixed per pid)."""
    return pid % count


class _RunLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        if not enabled():
            return False
        with self._lock:
            if self._holders == 0:
                self._file = self._take()
            self._holders += 1
        return True

    @staticmethod
    def _take() -> IO[str]:
        root = cache.cache_root()
        root.mkdir(parents=True, exist_ok=True)
        count = slots()
        for slot in range(count):
            f = slot_path(root, slot).open("a+")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            return f
        # Every slot is taken: wait for one.
        path = slot_path(root, waiting_slot(os.getpid(), count))
        f = path.open("a+")
        start = time.monotonic()
        print(
            f"[vm] {count} other process(es) are running VMs on this host: waiting for {path}",
            file=sys.stderr,
            flush=True,
        )
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        print(
            f"[vm] got the VM run lock after {time.monotonic() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        return f

    def release(self) -> None:
        with self._lock:
            if self._holders == 0:
                return
            self._holders -= 1
            if self._holders == 0 and self._file is not None:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
                self._file.close()
                self._file = None


_RUN_LOCK = _RunLock()


def acquire() -> bool:
    """Take the host's VM run lock (re-entrant in this process). False if disabled."""
    return _RUN_LOCK.acquire()


def release() -> None:
    """Undo one successful `acquire()`."""
    _RUN_LOCK.release()

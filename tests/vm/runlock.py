"""One process running VMs on this host at a time.

Under TCG a guest keeps both cores of a 2-core machine busy: two test processes each
booting VMs would double every timing and make deadlines flaky. While a process has
any VM running it holds an exclusive flock on `${cache}/vm-run.lock`; another process
blocks in `GuestVM.start()` until the first is done. Inside one process the lock is
re-entrant, so a test may run two VMs at once (e.g. a module-scoped guest plus one from
vm_factory) without deadlocking itself. Set LIVEUPD_VM_NO_RUN_LOCK=1 to opt out.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from typing import IO

from tests.vm import cache


def enabled() -> bool:
    return not os.environ.get("LIVEUPD_VM_NO_RUN_LOCK")


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
        path = root / "vm-run.lock"
        f = path.open("a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            start = time.monotonic()
            print(
                f"[vm] another process is running a VM on this host: waiting for {path}",
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

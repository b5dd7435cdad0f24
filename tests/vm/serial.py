"""The guest's serial console (ttyS0): logged to a file and scanned for boot markers.

QEMU connects to a unix socket the harness listens on (so nothing is lost before the
harness is ready); a reader thread appends every byte to the log file and records each
boot marker, printed by liveupd-test-boot-marker.service after multi-user.target:

    LIVEUPD-BOOT-MARKER release=<uname -r> boot_id=<uuid> uptime=<seconds>
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MARKER_RE = re.compile(
    rb"LIVEUPD-BOOT-MARKER release=(\S+) boot_id=([0-9a-f-]{36}) uptime=([0-9.]+)"
)


# A defect of QEMU's TCG, not of the guest: a kernel that hits an int3 that is no
# longer in memory (stale translated code after cross-CPU text patching, seen in
# early boot after a kexec, about 1 jump in 30 under MTTCG). Userspace cannot put
# an int3 into kernel text, so this line is never liveupd's doing.
EMULATOR_DEFECT_RE = re.compile(rb"Oops: int3\b.*")
# Any oops of the guest kernel. No scenario crashes the kernel on purpose, and under
# QEMU's TCG the same code-patching defect shows with other signatures too (an oops in
# kmalloc while a module's static keys were patched, two guests at once: docs/vm-harness.md).
# A test that fails after one is run again with its module (rerun_defects.py); an oops
# that liveupd really causes comes back in the second run, which fails the suite.
# The kernel's own lines only (a timestamp or nothing before the words), not a
# service's message that happens to contain them.
KERNEL_OOPS_RE = re.compile(
    rb"^\r?(?:\[\s*\d+\.\d+\]\s*)?"
    rb"((?:Oops: |BUG: |kernel BUG at |general protection fault|invalid opcode: ).*)"
)


@dataclass(frozen=True)
class EmulatorDefect:
    line: str
    after_markers: int  # how many boot markers the console had shown before it


def _seen(line: bytes, after_markers: int) -> EmulatorDefect:
    return EmulatorDefect(line.decode(errors="replace").strip()[:200], after_markers)


@dataclass(frozen=True)
class BootMarker:
    release: str
    boot_id: str
    uptime: float  # guest uptime when the marker was printed
    seen_at: float  # host time.monotonic() when the harness read it


class ConsoleClosedError(RuntimeError):
    """The console ended (QEMU exited) before what we waited for appeared."""


class SerialConsole:
    def __init__(self, conn: socket.socket, log_path: Path) -> None:
        self.log_path = log_path
        self._conn = conn
        self._cond = threading.Condition()
        self._markers: list[BootMarker] = []
        self._defects: list[EmulatorDefect] = []
        self._oopses: list[EmulatorDefect] = []
        self._closed = False
        self._log = log_path.open("ab", buffering=0)
        self._thread = threading.Thread(target=self._reader, name="vm-serial", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        pending = b""
        try:
            while True:
                try:
                    chunk = self._conn.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                self._log.write(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                found: list[BootMarker] = []
                defects: list[EmulatorDefect] = []
                oopses: list[EmulatorDefect] = []
                for line in lines:
                    if m := MARKER_RE.search(line):
                        found.append(
                            BootMarker(
                                release=m.group(1).decode(),
                                boot_id=m.group(2).decode(),
                                uptime=float(m.group(3)),
                                seen_at=time.monotonic(),
                            )
                        )
                        continue
                    where = len(self._markers) + len(found)
                    if d := EMULATOR_DEFECT_RE.search(line):
                        defects.append(_seen(d.group(0), where))
                        oopses.append(defects[-1])
                    elif o := KERNEL_OOPS_RE.search(line):
                        oopses.append(_seen(o.group(1), where))
                if found or oopses:
                    with self._cond:
                        self._defects.extend(defects)
                        self._oopses.extend(oopses)
                        self._markers.extend(found)
                        self._cond.notify_all()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._log.close()

    @property
    def markers(self) -> list[BootMarker]:
        with self._cond:
            return list(self._markers)

    @property
    def defects(self) -> list[EmulatorDefect]:
        """The int3 oopses: the known defect, a guest that hit one is dead."""
        with self._cond:
            return list(self._defects)

    @property
    def oopses(self) -> list[EmulatorDefect]:
        """Every oops of the guest kernel, the int3 ones included."""
        with self._cond:
            return list(self._oopses)

    def wait_for_marker(
        self,
        deadline: float,
        predicate: Callable[[BootMarker], bool] = lambda m: True,
        start: int = 0,
    ) -> BootMarker | None:
        """The first marker from index `start` on that matches `predicate`.

        None at `deadline` (time.monotonic()).
        """
        with self._cond:
            while True:
                for m in self._markers[start:]:
                    if predicate(m):
                        return m
                if self._closed:
                    raise ConsoleClosedError("the serial console closed (QEMU exited)")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_bytes().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.replace("\r", "").splitlines()[-lines:])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.shutdown(socket.SHUT_RDWR)
        self._conn.close()
        self._thread.join(timeout=10)

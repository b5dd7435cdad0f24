"""Host-timestamped lines of the guest's serial console.

The harness's console reader appends every byte QEMU sends to ``serial.log``
as it arrives and timestamps only the boot markers.  The benchmarks also need
the host time of other lines (the old kernel's last words: "kexec_core:
Starting new kernel", "reboot: Restarting system"), so a thread here follows
the file and stamps each complete line with ``time.monotonic()`` when it sees
it.  It polls every ``interval`` seconds (2 ms by default): that, plus the
harness's own write, bounds how late a stamp can be.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Line:
    seen_at: float  # host time.monotonic()
    text: str


class SerialTail:
    def __init__(self, path: Path, interval: float = 0.002) -> None:
        self.path = path
        self.interval = interval
        self._lines: list[Line] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._offset = path.stat().st_size if path.exists() else 0
        self._thread = threading.Thread(target=self._run, name="bench-serial", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                with self.path.open("rb") as f:
                    f.seek(self._offset)
                    chunk = f.read()
            except OSError:
                chunk = b""
            if chunk:
                now = time.monotonic()
                self._offset += len(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                found = [
                    Line(now, line.decode(errors="replace").replace("\r", "").strip())
                    for line in lines
                ]
                with self._lock:
                    self._lines.extend(x for x in found if x.text)
            time.sleep(self.interval)

    def mark(self) -> int:
        """The index of the next line to come (for :meth:`find` ``since``)."""
        with self._lock:
            return len(self._lines)

    def lines(self, since: int = 0) -> list[Line]:
        with self._lock:
            return list(self._lines[since:])

    def find(self, pattern: str, since: int = 0) -> Line | None:
        """The first line from index ``since`` on that matches the regular expression."""
        rx = re.compile(pattern)
        return next((line for line in self.lines(since) if rx.search(line.text)), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

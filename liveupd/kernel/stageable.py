"""Which installed kernels Stage would take: its checks, cached by file identity.

"The latest kernel" (LatestKernel, ``liveupctl stage`` without a kernel,
``reboot --fallback``, auto-stage) is the newest kernel whose checks pass and
that no transition fell back from (``quarantine.py``), never merely the
highest version in a file name.  The checks are Stage's own
(``resolve.verdict``); their result is kept per kernel file and initrd,
keyed by (device, inode, size, modification time) of each, the signature
policy and the allowed directories, so reading a property again costs a
``stat`` per kernel until a file changes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from liveupd.config import Config
from liveupd.errors import InvalidKernel
from liveupd.kernel import quarantine
from liveupd.kernel.discovery import InstalledKernel
from liveupd.kernel.resolve import Verdict, newest_stageable, verdict

CACHE_SIZE = 128


def _identity(path: str | None) -> tuple[int, int, int, int] | None:
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class StageableKernels:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], Verdict] = OrderedDict()
        self.checks_run = 0  # how many times the checks really ran (for tests)

    def _key(
        self, k: InstalledKernel, kernels: Sequence[InstalledKernel], config: Config
    ) -> tuple[Any, ...] | None:
        kernel_id = _identity(k.kernel_path)
        if kernel_id is None:
            return None
        others = any(o.initrd_path for o in kernels if o.kernel_path != k.kernel_path)
        return (
            k.kernel_path,
            kernel_id,
            k.initrd_path,
            _identity(k.initrd_path),
            k.release,
            k.source,
            others,
            config.kernel.signature,
            tuple(config.kernel.allowed_dirs),
        )

    def verdict(
        self, k: InstalledKernel, kernels: Sequence[InstalledKernel], config: Config
    ) -> Verdict:
        key = self._key(k, kernels, config)
        if key is not None:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
        result = verdict(k, kernels, config)
        with self._lock:
            self.checks_run += 1
            if key is not None and self._key(k, kernels, config) == key:
                self._cache[key] = result  # unchanged while it was checked
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return result

    def latest(self, kernels: Sequence[InstalledKernel], config: Config) -> InstalledKernel | None:
        """The newest kernel Stage would take, quarantined ones left out (None: none)."""
        held = quarantine.read(config.state_dir)
        running = next((k.release for k in kernels if k.running), "")

        def check(k: InstalledKernel) -> Verdict:
            why = held.reason(k.release, running)
            return Verdict(why) if why else self.verdict(k, kernels, config)

        try:
            return newest_stageable(kernels, config, check=check)
        except InvalidKernel:
            return None

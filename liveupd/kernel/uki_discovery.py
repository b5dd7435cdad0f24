"""Unified kernel images installed as Boot Loader Specification type #2 entries.

In every allowed directory D (``kernel.allowed-dirs``), ``D/EFI/Linux/*.efi``:
``/efi/EFI/Linux``, ``/boot/EFI/Linux`` and ``/boot/efi/EFI/Linux`` with the
default directories.  As systemd-boot does, names starting with ``.`` are
skipped and the ``.efi`` suffix is matched without regard to case (the ESP
is FAT).  Each file is opened the safe way and read through its descriptor
(the PE headers and the small text sections; the kernel too when there is no
``.uname``); the result is cached by file identity (device, inode, size,
modification time), so listing again costs a ``stat`` per file.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from liveupd.errors import LiveUpdError
from liveupd.kernel import uki_extract
from liveupd.kernel.uki import UkiError
from liveupd.kernel.validate import open_checked

TYPE2_DIR = Path("EFI/Linux")
CACHE_SIZE = 64


@dataclass(frozen=True)
class UkiEntry:
    path: str
    release: str  # "" when it could not be read
    title: str
    profiles: tuple[str, ...]  # "@0 (regular)", ... (empty: no profiles)
    problem: str  # why it could not be read ("" when it could)


def type2_files(allowed_dirs: Sequence[str]) -> list[Path]:
    """The candidate UKIs, in directory order then name order."""
    found: list[Path] = []
    for d in allowed_dirs:
        directory = Path(d) / TYPE2_DIR
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") or not e.name.lower().endswith(".efi"):
                continue
            if e.is_file():
                found.append(directory / e.name)
    return found


_Key = tuple[str, int, int, int, int]


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[_Key, UkiEntry] = OrderedDict()

    def get(self, key: _Key) -> UkiEntry | None:
        with self.lock:
            hit = self.entries.get(key)
            if hit is not None:
                self.entries.move_to_end(key)
            return hit

    def put(self, key: _Key, entry: UkiEntry) -> None:
        with self.lock:
            self.entries[key] = entry
            while len(self.entries) > CACHE_SIZE:
                self.entries.popitem(last=False)


_CACHE = _Cache()


def _key(path: str, st: os.stat_result) -> _Key:
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_entry(path: Path, allowed_dirs: Sequence[str], arch: str) -> UkiEntry:
    """One UKI's release, title and profiles (from the cache when the file is unchanged)."""
    try:
        key = _key(str(path), path.stat())
    except OSError as e:
        return UkiEntry(str(path), "", "", (), f"cannot read it: {e.strerror}")
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    try:
        f = open_checked(str(path), allowed_dirs, "kernel")
    except LiveUpdError as e:
        return UkiEntry(str(path), "", "", (), e.message)
    try:
        facts = uki_extract.probe(f.fd, f.id.size, arch)
        release = uki_extract.kernel_release(f.fd, facts)
        entry = UkiEntry(
            str(path),
            release,
            facts.view.title,
            facts.profiles,
            "" if release else "no .uname section, and no version string in its kernel",
        )
    except UkiError as e:
        entry = UkiEntry(str(path), "", "", (), str(e))
    finally:
        os.close(f.fd)
    i = f.id
    _CACHE.put((str(path), i.dev, i.ino, i.size, i.mtime_ns), entry)
    return entry


def find(allowed_dirs: Sequence[str], arch: str) -> list[UkiEntry]:
    return [read_entry(p, allowed_dirs, arch) for p in type2_files(allowed_dirs)]

"""Kernels a transition fell back from: never staged again until an admin says so.

When the machine comes back on the old kernel after a jump (``fell-back``:
the new kernel hung and the watchdog, or someone, reset the machine), the
target kernel is quarantined in ``<state-dir>/quarantined-kernels.json``:

* "the latest kernel" (``LatestKernel``, ``liveupctl stage`` without a kernel)
  skips it, and ``ListKernelDetails`` says why it would not stage;
* an explicit Stage of it is refused (``KernelQuarantined``), naming the
  transition, the reason and how to clear it; there is no override: clearing
  is one command, and a person who clears it has looked at why it fell back;
* auto-stage (``fleet/autostage.py``) and ``liveupctl reboot`` leave it alone;
  ``reboot --fallback`` reboots the ordinary way instead (never a loop);
* ``ClearQuarantine`` (``liveupctl unquarantine``, polkit ``org.liveupd.stage``)
  lifts it.

The file is typed and validated on read, and written like the rest of the
state (``fsio.atomic_write``, mode 0600).  One that cannot be read or does
not validate is reported (``Quarantine.problem``), never a crash; while it is
unreadable every kernel but the running one counts as quarantined (what it
held is unknown, and a loop is worse than a missed update), until
``liveupctl unquarantine --all`` rewrites it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from liveupd import schema
from liveupd.errors import KernelQuarantined
from liveupd.fsio import atomic_write
from liveupd.quoting import quote

FILE_NAME = "quarantined-kernels.json"
MAX_BYTES = 256 * 1024  # a file this large is not one liveupd wrote
MAX_ENTRIES = 100  # the oldest go first
MAX_REASON = 500  # characters of a reason kept


@dataclass(frozen=True, kw_only=True)
class QuarantinedKernel:
    """One kernel a transition fell back from (validated when read, and by ``add``)."""

    release: Annotated[str, schema.Rule(min_length=1, max_length=256)]
    kernel: Annotated[str, schema.Rule(max_length=4096)] = ""  # its file, as staged
    transition: Annotated[str, schema.Rule(min_length=1, max_length=128)]
    reason: Annotated[str, schema.Rule(max_length=MAX_REASON)]
    since: float  # when it was quarantined (seconds since the epoch)


@dataclass(frozen=True, kw_only=True)
class QuarantineFile:
    version: Literal[1] = 1
    kernels: Annotated[tuple[QuarantinedKernel, ...], schema.Rule(max_length=MAX_ENTRIES)] = ()


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def clear_command(release: str) -> str:
    return f"liveupctl unquarantine {release}"


@dataclass(frozen=True)
class Quarantine:
    """What the file holds, or why it could not be read (``problem``)."""

    path: Path
    kernels: tuple[QuarantinedKernel, ...] = ()
    problem: str = ""

    def entry(self, release: str) -> QuarantinedKernel | None:
        return next((k for k in self.kernels if k.release == release), None)

    def reason(self, release: str, running: str) -> str:
        """Why ``release`` must not be staged ("" when it may), with how to clear it."""
        if self.problem:
            if release == running:
                return ""
            return (
                f"{self.path} cannot be read ({self.problem}), so every kernel but the running "
                "one counts as quarantined; fix the file, or rewrite it empty with "
                "'liveupctl unquarantine --all'"
            )
        e = self.entry(release)
        if e is None:
            return ""
        return describe(e)


def describe(e: QuarantinedKernel) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.since))
    return (
        f"{e.release} is quarantined: transition {e.transition} fell back from it "
        f"({e.reason}) on {when}; once the cause is fixed, clear it with "
        f"'{clear_command(e.release)}'"
    )


def read(state_dir: Path) -> Quarantine:
    """The quarantine as the file says; an unreadable or invalid file is a ``problem``."""
    path = path_in(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return Quarantine(path)
    except OSError as e:
        return Quarantine(path, problem=f"cannot open it: {e.strerror or e}")
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        return Quarantine(path, problem=f"cannot read it: {e.strerror or e}")
    if len(data) > MAX_BYTES:
        return Quarantine(path, problem=f"larger than {MAX_BYTES // 1024} KiB")
    try:
        parsed = schema.load_json(QuarantineFile, data)
    except schema.Invalid as e:
        return Quarantine(path, problem=_first_error(e))
    return Quarantine(path, parsed.kernels)


def _first_error(e: schema.Invalid) -> str:
    first = e.errors[0]
    where = ".".join(str(x) for x in first.loc) or "the file"
    return f"{where}: {first.msg}"[:200]


def _write(state_dir: Path, kernels: tuple[QuarantinedKernel, ...]) -> None:
    body = schema.dump(QuarantineFile(kernels=kernels[-MAX_ENTRIES:]))
    atomic_write(path_in(state_dir), (json.dumps(body, indent=1) + "\n").encode(), mode=0o600)


def add(state_dir: Path, entry: QuarantinedKernel) -> None:
    """Quarantine ``entry.release`` durably (replacing an older entry for the same release).

    A file that cannot be read is replaced: what it held is lost, the new entry kept.
    OSError if it cannot be written; schema.Invalid (a ValueError), before anything is
    written, if ``entry`` is not one the file may hold (it would make the file unreadable).
    """
    schema.load(QuarantinedKernel, schema.dump(entry))
    current = read(state_dir)
    kept = tuple(k for k in current.kernels if k.release != entry.release)
    _write(state_dir, (*kept, entry))


def clear(state_dir: Path, release: str) -> Quarantine:
    """Lift the quarantine of ``release`` ("" for every kernel); what was lifted.

    An unreadable file can only be rewritten whole (``release`` ""); for one
    release it is an error naming the file.  OSError if it cannot be written.
    """
    current = read(state_dir)
    if current.problem:
        if release:
            raise KernelQuarantined(
                f"{current.path} cannot be read ({current.problem}); clear every kernel "
                "with 'liveupctl unquarantine --all' (it rewrites the file)"
            )
        _write(state_dir, ())
        return current
    gone = tuple(k for k in current.kernels if not release or k.release == release)
    if gone:
        _write(state_dir, tuple(k for k in current.kernels if k not in gone))
    return Quarantine(current.path, gone)


def refuse(state_dir: Path, release: str, running: str) -> None:
    """KernelQuarantined when ``release`` is quarantined (an explicit Stage of it)."""
    why = read(state_dir).reason(release, running)
    if why:
        raise KernelQuarantined(f"not staging {quote(release)}: {why}; nothing was staged")

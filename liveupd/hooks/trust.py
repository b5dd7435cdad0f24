"""Refuse hook files and programs that someone other than root could change.

A hook runs as root during a kernel transition, so its manifest, the programs
it names, and every directory from ``/`` down to each of them must be owned
by root (or, for a daemon run unprivileged in tests, by the daemon's own user)
and not writable by group or others (a sticky directory such as ``/tmp`` may
be passed through).  All of it is checked through :mod:`liveupd.safeopen`.

What runs is what was checked: :func:`verify_program` opens the program
through that walk and returns the open descriptor; the runner executes that
descriptor (``/proc/self/fd/N``), not the path, right after verifying it.  An
``undo`` replayed from the journal, also after a crash, goes through the same
function.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from liveupd import safeopen
from liveupd.quoting import clip, quote
from liveupd.safeopen import Kind, Refusal, UnsafeFile

# The PATH hooks run with, and against which bare program names are resolved.
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UntrustedProgram(Exception):
    """A hook program liveupd will not run; the text names it and says why."""


@dataclass(frozen=True)
class Program:
    """A verified hook program, open: execute :attr:`exec_path`, then :meth:`close`."""

    path: str  # as the manifest names it (resolved through HOOK_PATH for a bare name)
    real: str  # with symlinks resolved
    fd: int
    stat: os.stat_result

    @property
    def exec_path(self) -> str:
        """The path that executes this very descriptor (kept open in the child)."""
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        os.close(self.fd)


def _lookup(argv0: str) -> list[str]:
    """The candidate files for ``argv0``: itself if absolute, else each HOOK_PATH entry."""
    if "/" in argv0:
        if not argv0.startswith("/"):
            raise UntrustedProgram(
                f"expected an absolute path or a program name, got {quote(argv0)}"
            )
        return [argv0]
    return [f"{d}/{argv0}" for d in HOOK_PATH.split(":")]


def verify_program(argv0: str) -> Program:
    """Open the program ``argv0`` runs, checked (see the module docstring).

    UntrustedProgram says why it cannot be run: not found, not a regular
    file, not executable, or a file or directory on its way that someone
    other than root could change.
    """
    for candidate in _lookup(argv0):
        if "/" not in argv0 and not os.path.lexists(candidate):
            continue  # not in this PATH directory (a directory without it is not checked)
        try:
            f = safeopen.open_file(candidate, Kind.PROGRAM)
        except UnsafeFile as e:
            if e.refusal is Refusal.MISSING and "/" not in argv0:
                continue  # not in this PATH directory
            if e.refusal is Refusal.MISSING:
                raise UntrustedProgram(f"{clip(candidate)} does not exist") from None
            if e.path != candidate:
                raise UntrustedProgram(
                    f"refusing program {clip(candidate)}: {clip(e.path)}: {e.reason}"
                ) from None
            raise UntrustedProgram(f"refusing program {clip(candidate)}: {e.reason}") from None
        if not f.stat.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
            f.close()
            raise UntrustedProgram(f"{clip(candidate)} is not executable")
        return Program(candidate, f.real, f.fd, f.stat)
    raise UntrustedProgram(f"program {quote(argv0)} not found in {HOOK_PATH}")


def program_problem(source: Path, key: str, argv: list[str]) -> str | None:
    """A problem with the program ``argv[0]`` named by ``key`` in ``source``, or None."""
    try:
        verify_program(argv[0]).close()
    except UntrustedProgram as e:
        return f"{source}: {key}: {e}"
    return None

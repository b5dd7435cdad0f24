"""Refuse hook files and programs that someone other than root could change.

A hook runs as root during a kernel transition, so its manifest, the programs
it names and the directory it lives in must be owned by root (or, for a daemon
run unprivileged in tests, by the daemon's own user) and not writable by group
or others.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

# The PATH hooks run with, and against which bare program names are resolved.
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def trusted_owners() -> set[int]:
    return {0, os.geteuid()}


def untrusted_reason(path: Path) -> str | None:
    """Why ``path`` cannot be trusted, or None if it can."""
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot stat: {e.strerror}"
    if st.st_uid not in trusted_owners():
        return f"owned by uid {st.st_uid}, expected root (uid 0)"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = (
            "group and others"
            if st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IWOTH
            else ("group" if st.st_mode & stat.S_IWGRP else "others")
        )
        return (
            f"writable by {who} (mode {stat.S_IMODE(st.st_mode):04o}); fix with: chmod go-w {path}"
        )
    return None


def resolve_program(argv0: str) -> Path | None:
    """The file a hook's ``argv[0]`` runs: absolute paths as they are, names via HOOK_PATH."""
    if "/" in argv0:
        return Path(argv0) if Path(argv0).is_absolute() else None
    found = shutil.which(argv0, path=HOOK_PATH)
    return Path(found) if found else None


def program_problem(source: Path, key: str, argv: list[str]) -> str | None:
    """A problem with the program ``argv[0]`` named by ``key`` in ``source``, or None."""
    program = resolve_program(argv[0])
    if program is None:
        if "/" in argv[0]:
            return f"{source}: {key}: expected an absolute path or a program name, got {argv[0]!r}"
        return f"{source}: {key}: program {argv[0]!r} not found in {HOOK_PATH}"
    if not program.is_file():
        return f"{source}: {key}: {program} is not an existing regular file"
    if not os.access(program, os.X_OK):
        return f"{source}: {key}: {program} is not executable"
    reason = untrusted_reason(program)
    if reason:
        return f"{source}: {key}: refusing program {program}: {reason}"
    return None

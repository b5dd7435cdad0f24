"""Find the effective hooks across the hook directories (systemd's drop-in rules).

Directories are given lowest priority first (vendor, then admin).  A file in a
later directory replaces the file of the same name in an earlier one; a
symlink to /dev/null masks it.  Files not ending in ``.hook`` are ignored, so
a hook directory can hold the programs its hooks run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from liveupd.errors import ConfigError
from liveupd.hooks.manifest import HOOK_SUFFIX, Hook, load_manifest, parse_name
from liveupd.hooks.trust import program_problem, untrusted_reason


class EntryStatus(StrEnum):
    ACTIVE = "active"
    MASKED = "masked"
    INVALID = "invalid"


@dataclass(frozen=True)
class HookEntry:
    """One hook name as the daemon sees it: which file wins, and what it hides."""

    name: str
    path: Path  # the winning file (the /dev/null symlink when masked)
    status: EntryStatus
    overrides: tuple[Path, ...] = ()  # files of the same name it replaces
    hook: Hook | None = None
    problems: tuple[str, ...] = field(default=())


def is_mask(path: Path) -> bool:
    return path.is_symlink() and path.resolve() == Path("/dev/null")


def _candidates(dirs: Iterable[Path]) -> dict[str, list[Path]]:
    """For each hook file name, the files carrying it, lowest priority first."""
    found: dict[str, list[Path]] = {}
    for d in dirs:
        try:
            entries = sorted(d.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for p in entries:
            if p.name.endswith(HOOK_SUFFIX) and not p.name.startswith("."):
                found.setdefault(p.name, []).append(p)
    return found


def _hook_problems(hook: Hook) -> list[str]:
    problems = []
    reason = untrusted_reason(hook.path)
    if reason:
        problems.append(f"{hook.path}: refusing hook: {reason}")
    m = hook.manifest
    for key, argv in (("run", m.run), ("undo", m.undo)):
        if argv is not None:
            problem = program_problem(hook.path, key, argv)
            if problem:
                problems.append(problem)
    return problems


def _dir_problems(dirs: Iterable[Path]) -> dict[Path, str]:
    problems = {}
    for d in dirs:
        if d.is_dir():
            reason = untrusted_reason(d)
            if reason:
                problems[d] = f"{d}: refusing hook directory: {reason}"
    return problems


def scan(dirs: Sequence[Path]) -> list[HookEntry]:
    """Every hook name with its winning file, sorted by name; never raises for bad hooks."""
    dir_problems = _dir_problems(dirs)
    entries = []
    for fname, files in sorted(_candidates(dirs).items()):
        winner = files[-1]
        overrides = tuple(files[:-1])
        name = fname.removesuffix(HOOK_SUFFIX)
        if is_mask(winner):
            entries.append(HookEntry(name, winner, EntryStatus.MASKED, overrides))
            continue
        try:
            parse_name(winner)
            hook = load_manifest(winner)
        except ConfigError as e:
            entries.append(
                HookEntry(name, winner, EntryStatus.INVALID, overrides, problems=tuple(e.problems))
            )
            continue
        problems = tuple(v for d, v in dir_problems.items() if d == winner.parent)
        problems += tuple(_hook_problems(hook))
        status = EntryStatus.INVALID if problems else EntryStatus.ACTIVE
        entries.append(HookEntry(name, winner, status, overrides, hook, problems))
    return entries


def problems(dirs: Sequence[Path]) -> list[str]:
    """Every problem with the hooks in ``dirs``, one line each (for ``--check``)."""
    return [p for e in scan(dirs) for p in e.problems]


def effective_hooks(dirs: Sequence[Path]) -> list[Hook]:
    """The active hooks, sorted by name; ConfigError listing every problem if any."""
    entries = scan(dirs)
    found = [p for e in entries for p in e.problems]
    if found:
        raise ConfigError(found)
    return [e.hook for e in entries if e.status is EntryStatus.ACTIVE and e.hook is not None]

"""Find the effective hooks across the hook directories (systemd's drop-in rules).

Directories are given lowest priority first (vendor, then admin).  A file in a
later directory replaces the file of the same name in an earlier one; a
symlink to /dev/null masks it.  Files not ending in ``.hook`` are ignored, so
a hook directory can hold the programs its hooks run.

Every directory, manifest and program is checked through
:mod:`liveupd.safeopen` (:mod:`liveupd.hooks.trust`): a FIFO, a device, a file
over 64 KiB or anything someone other than root could change is a problem
naming the file, never waited on.  The daemon calls :func:`discover`, which
does all of it in a worker thread with a time bound, so the event loop keeps
answering meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from liveupd import safeopen
from liveupd.bounded import TimedOut, run_bounded
from liveupd.errors import ConfigError
from liveupd.hooks.manifest import HOOK_SUFFIX, Hook, load_manifest, parse_name
from liveupd.hooks.trust import program_problem
from liveupd.quoting import clip
from liveupd.safeopen import Refusal, UnsafeFile

DISCOVERY_TIMEOUT = 10.0  # seconds for the whole discovery (local files take milliseconds)


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


@dataclass(frozen=True)
class _Listing:
    names: list[str]
    masks: set[str]
    problem: str | None  # the directory cannot be trusted


def is_mask(path: Path) -> bool:
    try:
        return path.is_symlink() and str(path.readlink()) == "/dev/null"
    except OSError:
        return False


def _list(d: Path) -> _Listing | None:
    """The hook files of ``d`` (None when it does not exist)."""
    try:
        opened = safeopen.open_dir(str(d))
    except UnsafeFile as e:
        if e.refusal in (Refusal.MISSING, Refusal.NOT_DIRECTORY):
            return None
        where = "" if e.path == str(d) else f"{clip(e.path)}: "
        problem = f"{d}: refusing hook directory: {where}{e.reason}"
        # Listed anyway (listing runs nothing), so each of its hooks is reported.
        try:
            names = sorted(p.name for p in d.iterdir())
        except OSError:
            names = []
        hooks = [n for n in names if n.endswith(HOOK_SUFFIX) and not n.startswith(".")]
        return _Listing(hooks, {n for n in hooks if is_mask(d / n)}, problem)
    with opened:
        names = safeopen.list_names(opened)
        hooks = [n for n in names if n.endswith(HOOK_SUFFIX) and not n.startswith(".")]
        masks = {n for n in hooks if safeopen.is_mask(opened, n)}
    return _Listing(hooks, masks, None)


def _hook_problems(hook: Hook) -> list[str]:
    problems = []
    m = hook.manifest
    for key, argv in (("run", m.run), ("undo", m.undo)):
        if argv is not None:
            problem = program_problem(hook.path, key, argv)
            if problem:
                problems.append(problem)
    return problems


@dataclass(frozen=True)
class Scan:
    entries: list[HookEntry]
    directory_problems: list[str]  # hook directories that cannot be trusted

    @property
    def problems(self) -> list[str]:
        return self.directory_problems + [p for e in self.entries for p in e.problems]


def scan_all(dirs: Iterable[Path]) -> Scan:
    """Every hook name with its winning file, sorted by name; never raises for bad hooks."""
    found: dict[str, list[tuple[Path, bool, str | None]]] = {}
    dir_problems: list[str] = []
    for d in dirs:
        listing = _list(d)
        if listing is None:
            continue
        if listing.problem:
            dir_problems.append(listing.problem)
        for name in listing.names:
            found.setdefault(name, []).append((d / name, name in listing.masks, listing.problem))
    entries = []
    for fname, files in sorted(found.items()):
        winner, masked, dir_problem = files[-1]
        overrides = tuple(p for p, _, _ in files[:-1])
        name = fname.removesuffix(HOOK_SUFFIX)
        if masked:
            entries.append(HookEntry(name, winner, EntryStatus.MASKED, overrides))
            continue
        if dir_problem:
            problem = f"{winner}: refusing hook: its directory {winner.parent} cannot be trusted"
            entries.append(
                HookEntry(name, winner, EntryStatus.INVALID, overrides, problems=(problem,))
            )
            continue
        try:
            parse_name(winner)
            hook = load_manifest(winner)
        except ConfigError as e:
            entries.append(
                HookEntry(name, winner, EntryStatus.INVALID, overrides, problems=tuple(e.problems))
            )
            continue
        problems = tuple(_hook_problems(hook))
        status = EntryStatus.INVALID if problems else EntryStatus.ACTIVE
        entries.append(HookEntry(name, winner, status, overrides, hook, problems))
    return Scan(entries, dir_problems)


def scan(dirs: Sequence[Path]) -> list[HookEntry]:
    """Every hook name with its winning file, sorted by name; never raises for bad hooks."""
    return scan_all(dirs).entries


def problems(dirs: Sequence[Path]) -> list[str]:
    """Every problem with the hooks in ``dirs``, one line each (for ``--check``)."""
    return scan_all(dirs).problems


def effective_hooks(dirs: Sequence[Path]) -> list[Hook]:
    """The active hooks, sorted by name; ConfigError listing every problem if any."""
    found = scan_all(dirs)
    if found.problems:
        raise ConfigError(found.problems)
    return [e.hook for e in found.entries if e.status is EntryStatus.ACTIVE and e.hook is not None]


async def discover(dirs: Sequence[Path], *, timeout: float = DISCOVERY_TIMEOUT) -> list[Hook]:
    """:func:`effective_hooks` in a worker thread, bounded in time (the daemon's way)."""
    try:
        return await run_bounded(
            lambda: effective_hooks(list(dirs)), timeout=timeout, what="hook discovery"
        )
    except TimedOut as e:
        raise ConfigError(
            [
                f"the hook directories ({', '.join(map(str, dirs))}): {e}; a hook file or "
                "directory on a filesystem that does not answer? Nothing was changed"
            ]
        ) from None

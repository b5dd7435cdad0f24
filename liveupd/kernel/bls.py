"""Boot Loader Specification (type #1) entries: loader/entries/*.conf.

An entry is lines of ``key value``; ``#`` starts a comment.  The keys used
here: ``title``, ``version``, ``linux``, ``initrd`` (may repeat), ``options``
(may repeat; joined with spaces), ``architecture``, ``machine-id``,
``sort-key``, ``efi``.  Paths are relative to the root of the file system that
holds the entry (the directory above ``loader/``).  Parsing is pure; reading a
directory of entries is the only I/O here, through :mod:`liveupd.safeopen`
(an entry is at most 64 KiB, root's, in root's directories).  Problems name the
file and the line, never what the line holds: an entry is not echoed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from liveupd import safeopen
from liveupd.quoting import clip
from liveupd.safeopen import Kind, Refusal, UnsafeFile

ENTRIES_DIR = Path("loader/entries")


class BlsError(ValueError):
    """An entry that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class BlsEntry:
    path: str  # the .conf file
    id: str  # its name without .conf
    title: str = ""
    version: str = ""
    linux: str = ""
    initrd: tuple[str, ...] = ()
    options: str = ""
    architecture: str = ""
    machine_id: str = ""
    sort_key: str = ""
    efi: str = ""
    unknown: tuple[str, ...] = field(default=(), compare=False)

    @property
    def root(self) -> Path:
        """The directory the entry's paths are relative to."""
        return Path(self.path).parent.parent.parent

    def candidates(self, relative: str) -> tuple[Path, Path]:
        """Where a path named in the entry may be.

        Relative to the entry's file system root (``/boot`` when it is its own
        partition); when /boot is a plain directory of ``/``, entries name
        ``/boot/vmlinuz-...``, which is relative to the directory above.
        """
        rel = relative.lstrip("/")
        return self.root / rel, self.root.parent / rel


_MULTI = {"initrd", "options"}
_KNOWN = {
    "title",
    "version",
    "linux",
    "initrd",
    "options",
    "architecture",
    "machine-id",
    "sort-key",
    "efi",
    "devicetree",
    "devicetree-overlay",
}


def parse_entry(text: str, path: str) -> BlsEntry:
    """Parse one entry; BlsError if it has no ``linux`` line or a line is malformed."""
    values: dict[str, list[str]] = {}
    unknown: list[str] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ") if " " in line else line.partition("\t")
        key, value = key.strip(), value.strip()
        if not value:
            what = f"{key!r} has no value" if key in _KNOWN else "a line with no value"
            raise BlsError(f"{path}, line {n}: {what}; expected 'KEY VALUE'")
        if key not in _KNOWN:
            unknown.append(key)
            continue
        if key in values and key not in _MULTI:
            raise BlsError(f"{path}, line {n}: {key!r} given twice; keep one")
        values.setdefault(key, []).append(value)

    def one(key: str) -> str:
        return values.get(key, [""])[0]

    name = Path(path).name
    entry = BlsEntry(
        path=path,
        id=name.removesuffix(".conf"),
        title=one("title"),
        version=one("version"),
        linux=one("linux"),
        initrd=tuple(values.get("initrd", ())),
        options=" ".join(values.get("options", ())),
        architecture=one("architecture"),
        machine_id=one("machine-id"),
        sort_key=one("sort-key"),
        efi=one("efi"),
        unknown=tuple(unknown),
    )
    if not entry.linux:
        what = "an 'efi' program" if entry.efi else "no kernel"
        raise BlsError(
            f"{path}: has {what} but no 'linux' line; only entries that name a Linux kernel "
            "can be staged"
        )
    return entry


_BLS_ARCH = {"x86_64": "x64", "aarch64": "aa64"}


def for_arch(entry: BlsEntry, machine: str) -> bool:
    """False when the entry says it is for another architecture."""
    if not entry.architecture:
        return True
    return entry.architecture.lower() == _BLS_ARCH.get(machine, machine)


def read_entries(
    base: Path, uids: frozenset[int] | None = None
) -> tuple[list[BlsEntry], list[str]]:
    """The entries in ``base/loader/entries``, and a problem line for each unusable one."""
    directory = base / ENTRIES_DIR
    entries: list[BlsEntry] = []
    problems: list[str] = []
    try:
        d = safeopen.open_dir(str(directory), uids=uids)
    except UnsafeFile as e:
        if e.refusal not in (Refusal.MISSING, Refusal.NOT_DIRECTORY):
            problems.append(f"{clip(e.path)}: boot loader entries not read: {e.reason}")
        return [], problems
    with d:
        names = [n for n in safeopen.list_names(d) if n.endswith(".conf")]
    for name in names:
        path = str(directory / name)
        try:
            entries.append(read_entry(path, str(base), uids))
        except BlsError as e:
            problems.append(str(e))
    return entries, problems


def read_entry(path: str, beneath: str, uids: frozenset[int] | None = None) -> BlsEntry:
    """Open one entry safely (below ``beneath``) and parse it; BlsError naming the file."""
    try:
        with safeopen.open_file(path, Kind.ENTRY, beneath=beneath, uids=uids) as f:
            text = safeopen.read_text(f)
    except UnsafeFile as e:
        raise BlsError(f"{clip(e.path)}: {e.reason}") from None
    except OSError as e:
        raise BlsError(f"{clip(path)}: cannot read: {e.strerror}") from None
    return parse_entry(text, path)

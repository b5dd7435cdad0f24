"""/etc/crypttab, parsed (pure): the volumes the boot unlocks.

    # name      device                                     key    options
    cryptdata   UUID=5f1c...                               none   luks,discard
    swap        /dev/vdb2                                  /dev/urandom  swap,cipher=...

crypttab(5): one volume a line, fields separated by white space, ``#``
comments.  Only the name, the device and the options matter here: which
volumes the boot unlocks, and whether one could be LUKS.
"""

from __future__ import annotations

from dataclasses import dataclass

from liveupd.quoting import quote

MAX_LINE = 4096
# Options that say the volume is not LUKS: its header is never read.
NOT_LUKS_OPTIONS = frozenset({"plain", "tcrypt", "bitlk", "fvault2"})
SPEC_DIRS = {
    "UUID": "/dev/disk/by-uuid",
    "PARTUUID": "/dev/disk/by-partuuid",
    "LABEL": "/dev/disk/by-label",
    "PARTLABEL": "/dev/disk/by-partlabel",
}


@dataclass(frozen=True)
class Entry:
    name: str
    device: str  # as written: a path, or UUID=..., PARTUUID=..., LABEL=..., PARTLABEL=...
    options: tuple[str, ...]
    line: int

    @property
    def at_boot(self) -> bool:
        """The boot unlocks it (``noauto``: only on request)."""
        return "noauto" not in self.options

    @property
    def maybe_luks(self) -> bool:
        return not NOT_LUKS_OPTIONS.intersection(self.options)


@dataclass(frozen=True)
class Crypttab:
    entries: tuple[Entry, ...]
    problems: tuple[str, ...]  # lines that are not a volume ("line N: ...")


def parse(text: str) -> Crypttab:
    entries: list[Entry] = []
    problems: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or len(raw) > MAX_LINE:
            problems.append(f"line {n}: expected 'name device [key [options]]', got {quote(line)}")
            continue
        options = tuple(o.split("=", 1)[0] for o in fields[3].split(",")) if len(fields) > 3 else ()
        entries.append(Entry(fields[0], fields[1], options, n))
    return Crypttab(tuple(entries), tuple(problems))


def device_path(spec: str) -> str | None:
    """``UUID=x`` -> ``/dev/disk/by-uuid/x`` (PARTUUID, LABEL, PARTLABEL alike); an
    absolute path as it is; None for anything else."""
    key, sep, value = spec.partition("=")
    if sep and key.upper() in SPEC_DIRS:
        value = value.strip('"')
        if not value or "/" in value or value in (".", ".."):
            return None
        return f"{SPEC_DIRS[key.upper()]}/{value}"
    if spec.startswith("/") and "\0" not in spec:
        return spec
    return None

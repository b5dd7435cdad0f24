"""What CRIU is asked to do for a preserved service (pure: no I/O).

Dump (old kernel, in a transient unit outside liveupd's sandbox)::

    criu dump -t MAINPID -D IMAGES -o dump.log --leave-stopped --tcp-close
              --external unix[INO] ...

``--leave-stopped``: the tree is stopped, not killed, so a rollback only sends
SIGCONT; ``--tcp-close``: established connections are not kept (listening
sockets are); ``--external unix[INO]``: the stream socket to journald on its
stdout/stderr, which CRIU cannot dump, is left out and given back at restore.

Restore (new kernel, the unit's own ``ExecStart=``, see :func:`dropin`)::

    criu restore -D IMAGES -o restore.log -d --pidfile IMAGES/restored.pid
                 --manage-cgroups=ignore --tcp-close --inherit-fd fd[1]:socket:[INO]

``-d``: CRIU exits once the tree runs, ``--manage-cgroups=ignore``: the tree
stays in CRIU's cgroup, the unit's, and systemd takes its PID from the PID
file (``Type=forking``); ``--inherit-fd``: CRIU's own stdout, the unit's new
journal stream, replaces the old one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from liveupd.backends.base import ServiceTree
from liveupd.unitnames import is_service_name

PRESERVE_DIR = "preserve"  # under the transition's directory
RECORD_NAME = "restore.json"  # written once the dump succeeded
PIDFILE_NAME = "restored.pid"
DUMP_LOG = "dump.log"
RESTORE_LOG = "restore.log"
DROPIN_NAME = "50-liveupd-restore.conf"
# Device files CRIU dumps (they hold no state of their own).
HARMLESS_DEVICES = frozenset(
    {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}
)
PER_TASK_BYTES = 1 << 20  # images besides the memory pages, per process
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def images_dir(transition_dir: Path, unit: str) -> Path:
    return transition_dir / PRESERVE_DIR / unit


def problems(tree: ServiceTree) -> list[str]:
    """Why CRIU cannot dump this service (empty: it can), each naming the service."""
    unit = tree.unit
    if tree.active != "active" or tree.main_pid <= 0:
        return [f"{unit} is not running (ActiveState={tree.active or 'unknown'}, no main PID)"]
    out = []
    pids = {t.pid: t for t in tree.tasks}
    for t in tree.tasks:
        if not _descends(t.pid, tree.main_pid, pids):
            out.append(
                f"{unit}: process {t.pid} is not a descendant of the main process "
                f"{tree.main_pid}; CRIU dumps one process tree"
            )
        devices = [d for d in t.devices if d not in HARMLESS_DEVICES]
        if devices:
            shown = ", ".join(devices[:3]) + (", ..." if len(devices) > 3 else "")
            out.append(
                f"{unit}: process {t.pid} holds the device file(s) {shown} open; "
                "CRIU cannot dump device state"
            )
        if t.own_mount_ns:
            out.append(
                f"{unit}: process {t.pid} has its own mount namespace (PrivateTmp=, "
                "ProtectSystem=, ... in the unit); CRIU cannot dump it from the host's"
            )
    return out


def _descends(pid: int, root: int, tasks: Mapping[int, Any]) -> bool:
    seen: set[int] = set()
    while pid != root:
        if pid in seen or pid not in tasks:
            return False
        seen.add(pid)
        pid = tasks[pid].ppid
    return True


def estimate(tree: ServiceTree) -> int:
    """Bytes of images a dump writes, about: anonymous memory plus 1 MiB a process."""
    return sum(t.anon_bytes + PER_TASK_BYTES for t in tree.tasks)


def dump_argv(criu: str, tree: ServiceTree, images: Path) -> list[str]:
    argv = [
        criu, "dump", "-t", str(tree.main_pid), "-D", str(images), "-o", DUMP_LOG,
        "--leave-stopped", "--tcp-close",
    ]  # fmt: skip
    for ino in tree.stdio_sockets:
        argv += ["--external", f"unix[{ino}]"]
    return argv


@dataclass(frozen=True)
class RestoreRecord:
    """Written next to the images once the dump succeeded: what the new boot restores."""

    unit: str
    transition: str
    pid: int  # the main PID, restored as the same
    images: str  # the images' directory
    criu: str
    sockets: tuple[int, ...]  # stdout/stderr socket inodes (--inherit-fd)
    dumped: float  # CLOCK_REALTIME at the end of the dump
    dump_usec: int
    image_bytes: int

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["sockets"] = list(self.sockets)
        return d

    @classmethod
    def from_json(cls, data: Any) -> RestoreRecord:
        """Checked field by field; ValueError naming the field that is wrong."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        fields = set(cls.__dataclass_fields__)
        if set(data) != fields:
            missing, extra = sorted(fields - set(data)), sorted(set(data) - fields)
            raise ValueError(f"fields: missing {missing}, unexpected {extra[:5]}")
        for name in ("unit", "transition", "images", "criu"):
            if not isinstance(data[name], str):
                raise ValueError(f"{name}: expected a string")
        for name in ("pid", "dump_usec", "image_bytes"):
            if isinstance(data[name], bool) or not isinstance(data[name], int) or data[name] < 0:
                raise ValueError(f"{name}: expected a non-negative integer")
        if isinstance(data["dumped"], bool) or not isinstance(data["dumped"], int | float):
            raise ValueError("dumped: expected a number")
        socks = data["sockets"]
        if not isinstance(socks, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in socks
        ):
            raise ValueError("sockets: expected a list of positive integers")
        if not is_service_name(data["unit"]):
            raise ValueError("unit: expected a service unit name")
        if not _ID.fullmatch(data["transition"]):
            raise ValueError("transition: expected a transition id")
        for name in ("images", "criu"):
            if not data[name].startswith("/") or any(c in data[name] for c in "\n\0"):
                raise ValueError(f"{name}: expected an absolute path")
        if data["pid"] < 2:
            raise ValueError("pid: expected a process id above 1")
        return cls(**{**data, "sockets": tuple(socks), "dumped": float(data["dumped"])})


def restore_argv(record: RestoreRecord) -> list[str]:
    images = Path(record.images)
    argv = [
        record.criu, "restore", "-D", str(images), "-o", RESTORE_LOG, "-d",
        "--pidfile", str(images / PIDFILE_NAME), "--manage-cgroups=ignore", "--tcp-close",
    ]  # fmt: skip
    for ino in record.sockets:
        argv += ["--inherit-fd", f"fd[1]:socket:[{ino}]"]
    return argv


_PLAIN = re.compile(r"[A-Za-z0-9/_.:@\[\]=,+-]+")


def _word(arg: str) -> str:
    """One argument of a unit file's command line, quoted if it must be (systemd.service(5))."""
    if _PLAIN.fullmatch(arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def dropin(record: RestoreRecord) -> str:
    """The drop-in that makes the unit's next start restore the checkpoint.

    ``+``: CRIU runs with full privileges whatever the unit's User= or sandbox;
    the restored tree keeps the credentials it was dumped with.
    """
    pidfile = Path(record.images) / PIDFILE_NAME
    command = " ".join(_word(a) for a in restore_argv(record))
    return (
        f"# Written by liveupd's generator: {record.unit} is restored from the checkpoint\n"
        f"# of transition {record.transition} (docs/preserve.md); gone once it ran.\n"
        "[Service]\n"
        "Type=forking\n"
        f"PIDFile={str(pidfile).replace('%', '%%')}\n"
        "GuessMainPID=no\n"
        "ExecStart=\n"
        f"ExecStart=+{command}\n"
    )


def lost(unit: str, why: str) -> str:
    """The verification warning of a service restored fresh."""
    return f"state of {unit} lost: started fresh ({why})"

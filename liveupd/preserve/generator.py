"""The systemd generator that makes the new boot restore the preserved services.

systemd runs generators before it loads any unit, at boot and at every
``daemon-reload``.  On the boot a transition's kexec started (the kernel
command line carries ``liveupd.transition=ID`` and ``<state-dir>/pending``
names ID), each service dumped by that transition (a valid
``preserve/<unit>/restore.json``) gets a drop-in in the generator's normal
directory that replaces its start command with ``criu restore``
(:func:`liveupd.preserve.plan.dropin`).  The unit then starts when it always
does, as the same unit: systemd tracks the restored main process.

Verification (``restore.py``) removes the images after the restore, or after a
failed one, and reloads systemd: this generator then writes nothing, and the
unit is the admin's again (a failed restore is followed by a fresh start).
A generator must never fail the boot: a problem is logged (to the kernel
log, where systemd puts a generator's stderr) and the unit starts fresh.

The state directory must be on the root filesystem, mounted when generators
run (Debian's /var/lib is); otherwise nothing is restored (docs/preserve.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from liveupd import paths, safeopen
from liveupd.preserve.plan import DROPIN_NAME, PRESERVE_DIR, RECORD_NAME, RestoreRecord, dropin


def _say(message: str) -> None:
    print(f"liveupd-preserve-generator: {message}", file=sys.stderr)


def _state_dir() -> Path:
    try:
        from liveupd.config.load import load_config

        return load_config().state_dir
    except Exception as e:  # a broken configuration must not fail the boot
        _say(f"configuration not loaded ({str(e)[:200]}); using {paths.STATE_DIR}")
        return paths.STATE_DIR


def _read(path: Path, beneath: Path) -> object:
    with safeopen.open_file(str(path), safeopen.Kind.PRESERVE, beneath=str(beneath)) as f:
        return json.loads(safeopen.read_text(f))


def pending_records(state_dir: Path, cmdline: str) -> tuple[list[RestoreRecord], list[str]]:
    """The services to restore on this boot, and what was skipped (why)."""
    try:
        pending = _read(state_dir / "pending", state_dir)
    except FileNotFoundError:
        return [], []
    except (OSError, ValueError, safeopen.UnsafeFile) as e:
        return [], [f"{state_dir}/pending: {e}"]
    tid = pending.get("id") if isinstance(pending, dict) else None
    if not isinstance(tid, str) or not tid or "/" in tid or tid.startswith("."):
        return [], [f"{state_dir}/pending: no transition id"]
    if f"liveupd.transition={tid}" not in cmdline.split():
        return [], []  # not the boot of that transition's kexec: restore nothing
    top = state_dir / "transitions" / tid / PRESERVE_DIR
    try:
        units = sorted(p.name for p in top.iterdir())
    except FileNotFoundError:
        return [], []
    except OSError as e:
        return [], [f"{top}: {e.strerror}"]
    records, skipped = [], []
    for unit in units:
        path = top / unit / RECORD_NAME
        try:
            record = RestoreRecord.from_json(_read(path, state_dir))
        except FileNotFoundError:
            continue  # the dump did not finish
        except (OSError, ValueError, safeopen.UnsafeFile) as e:
            skipped.append(f"{path}: {str(e)[:200]}")
            continue
        if record.unit != unit or record.transition != tid or record.images != str(top / unit):
            skipped.append(f"{path}: names another unit, transition or directory")
            continue
        records.append(record)
    return records, skipped


def generate(normal_dir: Path, state_dir: Path, cmdline: str) -> list[str]:
    """Write the drop-ins; what was done and skipped, one line each."""
    records, notes = pending_records(state_dir, cmdline)
    for record in records:
        d = normal_dir / f"{record.unit}.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / DROPIN_NAME).write_text(dropin(record))
        notes.append(f"{record.unit}: restored from {record.images} (pid {record.pid})")
    return notes


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        _say("usage: liveupd-preserve-generator NORMAL_DIR [EARLY_DIR LATE_DIR]")
        return 0
    try:
        cmdline = Path("/proc/cmdline").read_text()
        if "liveupd.transition=" not in cmdline:
            return 0  # the common case: not a live update's boot; nothing imported
        for note in generate(Path(args[0]), _state_dir(), cmdline):
            _say(note)
    except Exception as e:  # never fail the boot: the services start fresh
        _say(f"nothing restored: {type(e).__name__}: {str(e)[:300]}")
    return 0

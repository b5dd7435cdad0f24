"""The restore drop-ins of a live update's boot (run by ``generator.py``).

On the boot a transition's kexec started (the kernel command line carries
``liveupd.transition=ID`` and ``<state-dir>/pending`` names ID), each service
dumped by that transition (a valid ``preserve/<unit>/restore.json``) gets a
drop-in in the generator's normal directory that replaces its start command
with ``criu restore`` (:func:`liveupd.preserve.plan.dropin`).  The unit then
starts when it always does, as the same unit: systemd tracks the restored main
process.

Verification (``restore.py``) removes the images after the restore, or after a
failed one, and reloads systemd: the generator then writes nothing, and the
unit is the admin's again (a failed restore is followed by a fresh start).

The state directory must be on the root filesystem, mounted when generators
run (Debian's /var/lib is); otherwise nothing is restored (docs/preserve.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from liveupd import paths, safeopen
from liveupd.preserve.plan import DROPIN_NAME, PRESERVE_DIR, RECORD_NAME, RestoreRecord, dropin


def configured_state_dir() -> Path:
    try:
        from liveupd.config.load import load_config

        return load_config().state_dir
    except Exception as e:  # a broken configuration must not fail the boot
        print(
            f"liveupd-preserve-generator: configuration not loaded ({str(e)[:200]}); "
            f"using {paths.STATE_DIR}",
            file=sys.stderr,
        )
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

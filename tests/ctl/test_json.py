"""The JSON output is an interface: its keys are pinned here and documented in docs/json.md.

Each ``--json`` output is produced for real (the dry-run daemon on a private
bus, transitions that completed, failed and were set aside as corrupt) and its
keys compared with the tables of docs/json.md (``<!-- json-keys: NAME -->``)
and with the set pinned below.  A key added to the output fails until it is
documented and pinned; a documented key the output lacks fails too.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from liveupd.backends.dryrun import DEFAULT_MACHINE
from liveupd.transition.history import history
from liveupd.transition.journal import Journal
from liveupd.transition.records import PreservedService
from tests.conftest import HookFactory
from tests.dbus.buses import LIVEUPCTL, REPO, PrivateBus, liveupctl
from tests.dbus.fixtures import DaemonFactory

DOC = REPO / "docs" / "json.md"
TARGET = "6.1.0-56-cloud-amd64"

PINNED: dict[str, set[str]] = {
    "status": {
        "state", "dry_run", "staged_transition", "staged", "transition", "blockers",
        "running_kernel", "latest_kernel", "newer_kernel", "unsupported", "can_live_update",
        "reboot_required", "reboot_required_file", "reboot_required_packages",
        "corrupt_journals", "version", "watchdog", "refusals", "quarantine",
    },
    "status.staged": {
        "id", "state", "phase", "progress", "target_release", "kernel", "initrd", "cmdline",
        "report",
    },
    "status.transition": {
        "id", "state", "dry_run", "old_release", "new_release", "mode", "phase", "progress",
        "created", "execute_requested", "finished", "elapsed_s", "error", "undo_failures",
    },
    "status.transition.error": {"kind", "step", "message"},
    "status.blockers[]": {"kind", "message"},
    "status.refusals[]": {"reason", "message"},
    "entry": {
        "id", "state", "dry_run", "created", "execute_requested", "finished", "mode",
        "old_release", "new_release", "kernel", "initrd", "cmdline", "phases_usec", "hooks",
        "devices", "frozen", "error", "undone", "undo_failures", "verification", "rollback_of",
        "sessions_ended", "units_stopped", "preserved",
    },
    "entry.preserved[]": {"unit", "dump_usec", "image_bytes", "outcome", "restore_usec"},
    "entry.sessions_ended[]": {
        "id", "user", "uid", "service", "remote_host", "leader", "caller", "gone", "error",
    },
    "entry.hooks[]": {"hook", "phase", "status", "usec"},
    "entry.devices[]": {"sys_path", "driver", "interfaces", "bound_again"},
    "entry.error": {"kind", "dbus_name", "message", "step"},
    "entry.verification": {
        "started", "running_release", "boot_id", "target_release", "superseded", "fell_back",
        "finished", "problems", "warnings", "watchdog", "downtime", "policy", "rollback",
    },
    "entry.verification.problems[]": {"check", "message", "sys_path", "step"},
    "entry.verification.downtime": {
        "exec_stamp", "exec_stamp_source", "kernel_started", "verified", "uptime_at_verified",
        "downtime_s", "exec_to_kernel_s", "kernel_to_verified_s",
    },
    "entry.corrupt": {
        "id", "state", "created", "finished", "corrupt", "journal", "error", "hooks", "devices",
        "frozen", "undone", "undo_failures", "sessions_ended", "units_stopped", "preserved",
    },
    "kernels[]": {
        "release", "kernel", "initrd", "running", "source", "title", "profiles", "image",
        "stageable", "problem", "warnings", "latest", "quarantined", "quarantine_transition",
    },
    "hooks[]": {
        "name", "path", "status", "phase", "order", "overrides", "problems", "description",
        "run", "undo", "on_failure",
    },
    "hooks-check": {"file", "valid", "problems", "name", "phase", "order", "run", "undo"},
}  # fmt: skip


def documented() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Every ``json-keys`` table of docs/json.md: (all keys, the optional ones)."""
    keys: dict[str, set[str]] = {}
    optional: dict[str, set[str]] = {}
    name = None
    for line in DOC.read_text().splitlines():
        marker = re.fullmatch(r"<!-- json-keys: (\S+) -->", line.strip())
        if marker:
            name = marker.group(1)
            keys[name], optional[name] = set(), set()
            continue
        if name is None:
            continue
        if not line.startswith("|"):
            if keys[name]:
                name = None  # the table ended
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        found = re.findall(r"`([a-z_]+)`", cells[0])
        keys[name] |= set(found)
        if len(cells) > 2 and "(optional)" in cells[2]:
            optional[name] |= set(found)
    return keys, optional


def test_the_document_and_the_pinned_keys_agree() -> None:
    keys, _ = documented()
    assert keys == PINNED


def preserved_entry(state_dir: Path) -> dict[str, Any]:
    """A history entry's ``preserved[0]``, from a journal with one dumped service."""
    journal = Journal.create(state_dir, "T1", boot_id="b1", old_release="r")
    journal.update(preserved=(PreservedService(unit="kv.service", dump_usec=1, image_bytes=2),))
    [entry] = history(state_dir)
    return dict(entry["preserved"][0])


def run_json(bus: PrivateBus, *args: str) -> Any:
    result = liveupctl(bus, *args, "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def check(name: str, data: dict[str, Any], seen: set[str]) -> None:
    _, optional = documented()
    keys = set(data)
    missing = PINNED[name] - keys - optional[name]
    extra = keys - PINNED[name]
    assert not missing and not extra, f"{name}: missing {missing}, not documented {extra}"
    seen.add(name)


def test_every_json_output_has_the_documented_keys(
    start_daemon: DaemonFactory,
    bus: PrivateBus,
    make_hook: HookFactory,
    tmp_path: Path,
) -> None:
    seen: set[str] = set()
    # A corrupt journal from an earlier run, set aside when the daemon starts.
    corrupt = tmp_path / "state" / "transitions" / "20200101T000000_000000"
    corrupt.mkdir(parents=True)
    (corrupt / "journal.json").write_text('{"id": "20200101T000000_000000"}\n')
    make_hook("10-quiesce", "quiesce", "true")
    # One remote login session (ended before the network goes down: sessions_ended).
    session = {"id": "3", "uid": 0, "user": "root", "remote": True, "service": "sshd",
               "leader": 1003, "state": "active", "remote_host": "10.0.2.2"}  # fmt: skip
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "sessions": [session]}))
    daemon = start_daemon(env={"LIVEUPD_DRY_RUN_MACHINE": str(machine)})
    bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    staged = run_json(bus, "status")
    check("status", staged, seen)
    check("status.staged", staged["staged"], seen)
    assert (
        subprocess.run(
            [LIVEUPCTL, "--bus", bus.address, "exec"], capture_output=True, timeout=60, check=False
        ).returncode
        == 0
    )
    make_hook("20-broken", "quiesce", "exit 1")
    bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    liveupctl(bus, "exec")  # fails in 20-broken
    make_hook("30-typo", "sometime", "true")  # a blocker: invalid hooks
    status = run_json(bus, "status")
    check("status", status, seen)
    check("status.transition", status["transition"], seen)
    check("status.transition.error", status["transition"]["error"], seen)
    check("status.blockers[]", status["blockers"][0], seen)
    entries = run_json(bus, "history")
    assert [e["state"] for e in entries] == ["failed", "completed", "corrupt"], daemon.log()
    failed, completed, bad = entries
    for entry in (failed, completed):
        check("entry", entry, seen)
    assert run_json(bus, "show") == failed
    check("entry.error", failed["error"], seen)
    check("entry.hooks[]", completed["hooks"][0], seen)
    check("entry.devices[]", completed["devices"][0], seen)
    check("entry.sessions_ended[]", completed["sessions_ended"][0], seen)
    # The dry run simulates no services (NoServices): its list is empty, and an
    # entry is what history.summary makes of a record (tests/unit/test_history.py).
    assert completed["preserved"] == []
    check("entry.preserved[]", preserved_entry(tmp_path / "preserved"), seen)
    check("entry.verification", completed["verification"], seen)
    check("entry.verification.downtime", completed["verification"]["downtime"], seen)
    check("entry.corrupt", bad, seen)
    for kernel in run_json(bus, "kernels"):
        check("kernels[]", kernel, seen)
    conf = str(tmp_path / "liveupd.conf")
    for hook in run_json(bus, "hooks", "--config", conf):
        check("hooks[]", hook, seen)
    check("hooks-check", run_json(bus, "hooks", "check", str(make_hook("40-x", "flush"))), seen)
    # A verification problem, from a rehearsal whose verify hook fails.
    (tmp_path / "usr-lib-hooks.d" / "30-typo.hook").unlink()
    (tmp_path / "usr-lib-hooks.d" / "20-broken.hook").unlink()
    make_hook("50-verify", "verify", "exit 1")
    bus.call("Stage", "sssa{sv}", TARGET, "", "", "0")
    liveupctl(bus, "exec")
    [problem] = run_json(bus, "show")["verification"]["problems"]
    check("entry.verification.problems[]", problem, seen)
    # A machine refused by name.
    daemon.terminate()
    refused = {"reason": "kexec-load-disabled", "message": "kexec is disabled"}
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "preflight": [refused]}))
    start_daemon(env={"LIVEUPD_DRY_RUN_MACHINE": str(machine)})
    check("status.refusals[]", run_json(bus, "status")["refusals"][0], seen)
    assert seen == set(PINNED), set(PINNED) - seen

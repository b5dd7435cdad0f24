"""``liveupctl reboot`` as a fleet tool's reboot command: what it does, and its exit codes.

0 the switch was requested (or, with --fallback, the normal reboot ran); 1 failed
and the machine runs on unchanged; 2 usage; 3 no reboot needed (--if-needed);
4 not authorized; 5 kexec unsupported (without --fallback).  The fallback
command is always injected here (LIVEUPCTL_FALLBACK_COMMAND): a harmless
``touch``; the real ``systemctl reboot`` is refused on a test host.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from liveupd.backends.dryrun import DEFAULT_MACHINE
from liveupd.errors import ExitCode
from liveupd.kernel import quarantine
from tests.conftest import HookFactory
from tests.dbus.buses import NOBODY, Daemon, PrivateBus, liveupctl, wait_until
from tests.dbus.fixtures import DaemonFactory, Polkit

RUNNING = "6.1.0-55-cloud-amd64"
LATEST = "6.1.0-56-cloud-amd64"


def machine(tmp_path: Path, **changes: Any) -> dict[str, str]:
    path = tmp_path / "machine.json"
    path.write_text(json.dumps({**DEFAULT_MACHINE, **changes}))
    return {"LIVEUPD_DRY_RUN_MACHINE": str(path)}


def on_the_latest(tmp_path: Path) -> dict[str, str]:
    return machine(tmp_path, system={**DEFAULT_MACHINE["system"], "release": LATEST})


class Fallback:
    """An injected fallback command that leaves a marker instead of rebooting."""

    def __init__(self, tmp_path: Path, *, status: int = 0) -> None:
        self.marker = tmp_path / "fell-back"
        self.sentinel = tmp_path / "reboot-required"  # absent unless a test writes it
        command = f"sh -c 'touch {self.marker}; exit {status}'"
        self.env = {
            "LIVEUPCTL_FALLBACK_COMMAND": command,
            "LIVEUPCTL_REBOOT_REQUIRED": str(self.sentinel),
        }

    @property
    def taken(self) -> bool:
        return self.marker.exists()


@pytest.fixture
def fallback(tmp_path: Path) -> Fallback:
    return Fallback(tmp_path)


def reboot(
    bus: PrivateBus, fb: Fallback, *args: str, uid: int | None = None
) -> subprocess.CompletedProcess[str]:
    return liveupctl(bus, "reboot", *args, env=fb.env, uid=uid, timeout=60)


def history(bus: PrivateBus) -> list[tuple[str, str]]:
    """Once no transition is under way: ``reboot`` (output not a terminal) returns at the
    point of no return, while the dry-run daemon goes on rehearsing the new boot."""

    def settled() -> list[dict[str, Any]] | None:
        entries: list[dict[str, Any]] = json.loads(bus.call("GetHistory", "u", "0")[0])
        return None if any(e["state"] in ("running", "exec") for e in entries) else entries

    return [(e["new_release"], e["state"]) for e in wait_until(settled, "the rehearsal")]


# ---------------------------------------------------------------- exit 0 --


def test_0_stages_the_newest_kernel_and_switches(
    daemon: Daemon, bus: PrivateBus, fallback: Fallback
) -> None:
    result = reboot(bus, fallback, "--fallback")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Staged {LATEST} as transition ")
    assert f"the jump into {LATEST} was requested" in result.stdout
    assert "(systemd mode, dry run)" in result.stdout  # services stop cleanly by default
    # The dry run rehearses the new boot: the transition is verified there.
    assert history(bus) == [(LATEST, "completed")]
    assert not fallback.taken


def test_0_on_the_newest_kernel_is_a_fast_reboot_into_it(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path, fallback: Fallback
) -> None:
    """What kured asks for after a libc update: a reboot, with the same kernel."""
    start_daemon(env=on_the_latest(tmp_path))
    result = reboot(bus, fallback)
    assert result.returncode == 0, result.stderr
    assert f"Staged {LATEST} as transition" in result.stdout
    assert "(the running kernel: a fast reboot)" in result.stdout
    assert history(bus) == [(LATEST, "completed")]


def test_0_executes_a_staged_transition_as_it_is(
    daemon: Daemon, bus: PrivateBus, fallback: Fallback
) -> None:
    tid, _ = bus.call("Stage", "sssa{sv}", RUNNING, "", "", "0")
    result = reboot(bus, fallback, "--if-needed")
    assert result.returncode == 0, result.stderr
    assert f"Switching to the staged kernel {RUNNING} ({tid})" in result.stdout
    assert history(bus) == [(RUNNING, "completed")]


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("direct", "the exec phase began: it can no longer be cancelled"),
        ("systemd", "handed over to kexec.target"),
    ],
)
def test_0_returns_at_the_point_of_no_return_when_not_on_a_terminal(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path, fallback: Fallback,
    mode: str, why: str,
) -> None:  # fmt: skip
    """Like a reboot command: whoever waits for it to end (Ansible, kured, a script) is not
    left waiting for a machine that has gone.  Here the simulated jump leads nowhere
    (after_jump: halt): the daemon stays in exec for ever, as if the machine went down."""
    start_daemon(env=machine(tmp_path, after_jump="halt"))
    result = reboot(bus, fallback, "--mode", mode)  # stdout is a pipe
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"the jump into {LATEST} was requested ({why}; dry run: "), last
    assert "'liveupctl show " in last
    assert [
        (e["new_release"], e["state"]) for e in json.loads(bus.call("GetHistory", "u", "0")[0])
    ] == [(LATEST, "exec")]
    assert not fallback.taken


# ---------------------------------------------------------------- exit 3 --


def test_3_if_needed_and_nothing_is(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path, fallback: Fallback
) -> None:
    start_daemon(env=on_the_latest(tmp_path))
    result = reboot(bus, fallback, "--if-needed", "--fallback")
    assert result.returncode == ExitCode.NOTHING_TO_DO
    assert result.stdout.startswith("No reboot needed: running the newest installed kernel")
    assert bus.get("State") == "idle" and not fallback.taken
    # A package asks for a reboot: now it is needed (into the same kernel).
    fallback.sentinel.write_text("*** System restart required ***\n")
    needed = reboot(bus, fallback, "--if-needed")
    assert needed.returncode == 0, needed.stderr
    assert history(bus) == [(LATEST, "completed")]


def test_if_needed_with_a_newer_kernel_installed(
    daemon: Daemon, bus: PrivateBus, fallback: Fallback
) -> None:
    result = reboot(bus, fallback, "--if-needed")
    assert result.returncode == 0, result.stderr
    assert history(bus) == [(LATEST, "completed")]


# ---------------------------------------------------------------- exit 1 --


def test_1_while_a_transition_runs_and_no_fallback(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory, tmp_path: Path, fallback: Fallback
) -> None:
    go = tmp_path / "go"
    make_hook("10-wait", "quiesce", f"while [ ! -e {go} ]; do sleep 0.05; done")
    bus.call("Stage", "sssa{sv}", "", "", "", "0")
    bus.call("Execute", "a{sv}", "0")
    wait_until(lambda: bus.get("State") == "running", "the transition to run")
    try:
        result = reboot(bus, fallback, "--fallback")
    finally:
        go.touch()
    assert result.returncode == ExitCode.FAILED
    assert "already running" in result.stderr
    assert not fallback.taken  # someone else's transition is on its way


def test_1_when_the_transition_fails_and_rolls_back(
    daemon: Daemon, bus: PrivateBus, make_hook: HookFactory, fallback: Fallback
) -> None:
    make_hook("10-db", "quiesce", "echo 'database refuses to stop' >&2; exit 1")
    result = reboot(bus, fallback, "--fallback")
    assert result.returncode == ExitCode.FAILED
    assert "database refuses to stop" in result.stderr
    assert history(bus) == [(LATEST, "failed")]
    # The machine is as it was: rebooting it the slow way is the operator's call.
    assert not fallback.taken


def test_1_when_another_kernel_is_staged(
    daemon: Daemon, bus: PrivateBus, fallback: Fallback
) -> None:
    bus.call("Stage", "sssa{sv}", RUNNING, "", "", "0")
    result = reboot(bus, fallback, LATEST, "--fallback")
    assert result.returncode == ExitCode.FAILED
    assert f"another kernel ({RUNNING}) is staged; run 'liveupctl cancel' first" in result.stderr
    assert bus.get("State") == "staged" and not fallback.taken


def test_1_when_the_fallback_itself_fails(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    start_daemon(env=machine(tmp_path, preflight=["kexec_load_disabled is 1"]))
    broken = Fallback(tmp_path, status=7)
    result = reboot(bus, broken, "--fallback")
    assert result.returncode == ExitCode.FAILED
    assert broken.taken and "failed with exit status 7" in result.stderr


# ---------------------------------------------------------- exit 2, 4, 5 --


def test_2_usage(bus: PrivateBus, fallback: Fallback) -> None:
    assert reboot(bus, fallback, "--mode", "sideways").returncode == ExitCode.USAGE


def test_4_not_authorized_never_falls_back(
    daemon: Daemon, bus: PrivateBus, polkit: Polkit, fallback: Fallback
) -> None:
    result = reboot(bus, fallback, "--fallback", uid=NOBODY)
    assert result.returncode == ExitCode.NOT_AUTHORIZED
    assert "not allowed" in result.stderr
    assert "rebooting the normal way" not in result.stderr
    assert bus.get("State") == "idle"


def test_5_unsupported_without_fallback(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path, fallback: Fallback
) -> None:
    start_daemon(env=machine(tmp_path, preflight=["kexec_load_disabled is 1"]))
    result = reboot(bus, fallback)
    assert result.returncode == ExitCode.UNSUPPORTED
    assert "kexec cannot work on this machine: kexec_load_disabled is 1" in result.stderr
    assert not fallback.taken


# -------------------------------------------------------------- fallback --


def test_fallback_when_kexec_is_unsupported(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path, fallback: Fallback
) -> None:
    start_daemon(env=machine(tmp_path, preflight=["kexec_load_disabled is 1"]))
    result = reboot(bus, fallback, "--fallback")
    assert result.returncode == 0, result.stderr
    assert fallback.taken
    assert result.stderr.startswith(
        "liveupctl: kexec cannot work on this machine: kexec_load_disabled is 1; "
        "rebooting the normal way (sh -c"
    )
    assert bus.get("State") == "idle"


def test_fallback_when_staging_fails(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, fallback: Fallback
) -> None:
    for release in (LATEST, RUNNING):  # no installed kernel would stage
        (boot_dir / f"vmlinuz-{release}").write_bytes(b"not a kernel")
    result = reboot(bus, fallback, "--fallback")
    assert result.returncode == 0, result.stderr
    assert fallback.taken and "liveupctl: staging failed: " in result.stderr
    assert "no installed kernel would stage" in result.stderr


def test_fallback_passes_over_a_newest_kernel_that_would_not_stage(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, fallback: Fallback
) -> None:
    """'The newest' is the newest that passes Stage's checks: here the running one."""
    (boot_dir / f"vmlinuz-{LATEST}").write_bytes(b"not a kernel")
    assert bus.get("LatestKernel") == RUNNING
    result = reboot(bus, fallback, "--fallback")
    assert result.returncode == 0, result.stderr
    assert not fallback.taken
    assert f"Staged {RUNNING} as transition" in result.stdout, result.stdout


def test_fallback_when_liveupd_cannot_be_reached(bus: PrivateBus, fallback: Fallback) -> None:
    result = reboot(bus, fallback, "--fallback")
    assert result.returncode == 0, result.stderr
    assert fallback.taken and "cannot reach liveupd" in result.stderr


def test_a_rebooting_fallback_is_refused_on_a_test_host(
    start_daemon: DaemonFactory, bus: PrivateBus, tmp_path: Path
) -> None:
    """Even injected: a program named like systemctl never runs as the fallback here.

    The "systemctl" below is a stand-in that only leaves a marker, so the test is
    harmless even if the refusal broke.
    """
    start_daemon(env=machine(tmp_path, preflight=["no kexec here"]))
    fake = tmp_path / "bin" / "systemctl"
    fake.parent.mkdir()
    marker = tmp_path / "ran"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    env = {"LIVEUPCTL_FALLBACK_COMMAND": f"{fake} reboot", "LIVEUPD_HOST_TEST": "1"}
    assert os.environ.get("LIVEUPD_HOST_TEST")  # tests/conftest.py sets it for every test
    result = liveupctl(bus, "reboot", "--fallback", env=env)
    assert result.returncode == ExitCode.FAILED
    assert f"refusing to run '{fake} reboot': LIVEUPD_HOST_TEST is set" in result.stderr
    assert not marker.exists()


# ------------------------------------------------------------- quarantine --


def quarantine_latest(daemon: Daemon, transition: str = "T7") -> None:
    """As a fall-back from LATEST leaves it (verify/fallback.py)."""
    quarantine.add(
        daemon.state_dir,
        quarantine.QuarantinedKernel(
            release=LATEST,
            transition=transition,
            reason="the hardware watchdog (watchdog0) reset the machine",
            since=1.0,
        ),
    )


def test_a_quarantined_newest_kernel_is_never_tried_again(
    daemon: Daemon, bus: PrivateBus, fallback: Fallback
) -> None:
    """Never a loop: reboot refuses (1); --fallback reboots the ordinary way, saying why."""
    quarantine_latest(daemon)
    assert bus.get("LatestKernel") == RUNNING  # the latest kernel leaves it out
    why = f"the newest installed kernel, {LATEST}, is quarantined: transition T7 fell back"
    refused = reboot(bus, fallback)
    assert refused.returncode == ExitCode.FAILED
    assert why in refused.stderr and "liveupctl reboot --fallback" in refused.stderr
    assert f"'liveupctl unquarantine {LATEST}'" in refused.stderr
    assert not fallback.taken
    for args in (["--fallback"], ["--fallback", "--if-needed"]):  # a reboot is needed for it
        fallback.marker.unlink(missing_ok=True)
        result = reboot(bus, fallback, *args)
        assert result.returncode == 0, result.stderr
        assert fallback.marker.exists() and why in result.stderr
        assert "rebooting the normal way" in result.stderr
    assert json.loads(bus.call("GetHistory", "u", "0")[0]) == []  # nothing staged or recorded
    # Cleared by an admin: the next reboot switches to it.
    cleared = liveupctl(bus, "unquarantine", LATEST)
    assert cleared.returncode == 0 and cleared.stdout == f"No longer quarantined: {LATEST}\n"
    again = liveupctl(bus, "unquarantine", LATEST)
    assert again.returncode == ExitCode.NOTHING_TO_DO, again
    fallback.marker.unlink()
    result = reboot(bus, fallback, "--fallback")
    assert result.returncode == 0, result.stderr
    assert not fallback.marker.exists() and history(bus) == [(LATEST, "completed")]


def test_an_unreadable_quarantine_tries_no_newer_kernel(
    daemon: Daemon, bus: PrivateBus, fallback: Fallback
) -> None:
    quarantine.path_in(daemon.state_dir).write_text("{")
    result = reboot(bus, fallback, "--fallback")
    assert result.returncode == 0, result.stderr
    assert fallback.taken and "cannot be read" in result.stderr
    status = json.loads(liveupctl(bus, "status", "--json").stdout)
    assert "Invalid JSON" in status["quarantine"]["problem"]
    text = liveupctl(bus, "status").stdout
    assert "Quarantined:    unreadable list" in text
    assert liveupctl(bus, "unquarantine", LATEST).returncode == ExitCode.FAILED
    rewritten = liveupctl(bus, "unquarantine", "--all")
    assert rewritten.returncode == 0 and "rewritten empty" in rewritten.stdout, rewritten
    assert json.loads(liveupctl(bus, "status", "--json").stdout)["quarantine"] == {
        "kernels": [],
        "problem": None,
    }


def test_kernels_and_status_show_the_quarantine(daemon: Daemon, bus: PrivateBus) -> None:
    quarantine_latest(daemon)
    kernels = {k["release"]: k for k in json.loads(liveupctl(bus, "kernels", "--json").stdout)}
    assert kernels[LATEST]["quarantined"].startswith("the hardware watchdog")
    assert kernels[LATEST]["quarantine_transition"] == "T7"
    assert not kernels[LATEST]["stageable"] and not kernels[LATEST]["latest"]
    assert kernels[RUNNING]["quarantined"] is None and kernels[RUNNING]["latest"]
    text = liveupctl(bus, "kernels").stdout
    assert f"Q {LATEST}" in text and "quarantined: transition T7 fell back from it" in text
    status = liveupctl(bus, "status").stdout
    assert f"Quarantined:    {LATEST} (transition T7 fell back: the hardware watchdog" in status
    staged = liveupctl(bus, "stage", LATEST)
    assert staged.returncode == ExitCode.FAILED
    assert f"{LATEST} is quarantined: transition T7" in staged.stderr

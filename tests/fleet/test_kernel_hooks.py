"""The kernel install hooks (kernel-install/), run as dpkg and kernel-install run them.

Each hook is the real shell script, running the real ``liveupd.fleet.kernelhook``
against liveupd --dry-run on a private bus (standing in for the system bus),
reading the test's liveupd.conf.  Whatever happens, a hook exits 0 (a kernel
package must install) unless it was called wrongly (2).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from liveupd.backends.dryrun import DEFAULT_MACHINE
from liveupd.kernel import quarantine
from tests.conftest import HookFactory
from tests.dbus.buses import TRANSITION, Daemon, PrivateBus, wait_until
from tests.dbus.fixtures import DaemonFactory
from tests.fleet.hooks import (
    KERNEL_INSTALL,
    POSTINST,
    POSTRM,
    enable_auto_stage,
    run_hook,
)
from tests.kernels import install_kernel

RUNNING = "6.1.0-55-cloud-amd64"
INSTALLED = "6.1.0-56-cloud-amd64"  # installed before the test, newer than the running one
NEW = "6.1.0-57-cloud-amd64"
NEWER = "6.1.0-58-cloud-amd64"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    return tmp_path / "liveupd.conf"  # written by the daemon fixtures (write_config)


def install(boot: Path, release: str) -> str:
    """Put a kernel and its initrd in /boot, as the package and the initrd hook do."""
    kernel, _ = install_kernel(boot, release)
    return str(kernel)


def staged_release(bus: PrivateBus) -> str | None:
    path = bus.get("StagedTransition")
    if path == "/":
        return None
    return str(bus.get("TargetRelease", path=path, interface=TRANSITION))


def staged_id(bus: PrivateBus) -> str:
    return str(bus.get("Id", path=bus.get("StagedTransition"), interface=TRANSITION))


def hook_ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", result.stdout  # dpkg's output: messages go to stderr
    return result.stderr


# ---------------------------------------------------------------- postinst --


def test_postinst_stages_the_new_kernel_when_auto_stage_is_on(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, conf: Path
) -> None:
    enable_auto_stage(conf)
    image = install(boot_dir, NEW)
    err = hook_ok(run_hook(bus, POSTINST, NEW, image, config=conf))
    assert staged_release(bus) == NEW
    tid = staged_id(bus)
    assert err.startswith(f"liveupd: staged {NEW} as transition {tid}; 'liveupctl reboot'")
    record = json.loads((daemon.state_dir / "auto-staged.json").read_text())
    assert record == {"transition": tid, "release": NEW}
    # dpkg-reconfigure runs it again: nothing changes.
    again = hook_ok(run_hook(bus, POSTINST, NEW, image, config=conf))
    assert f"{NEW} is already staged (transition {tid})" in again
    assert staged_id(bus) == tid


def test_postinst_stages_nothing_when_auto_stage_is_off(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, conf: Path
) -> None:
    image = install(boot_dir, NEW)
    err = hook_ok(run_hook(bus, POSTINST, NEW, image, config=conf))
    assert err == (
        f"liveupd: not staging {NEW}: auto-stage is off ([kernel] auto-stage in liveupd.conf). "
        f"Stage it with 'liveupctl stage {NEW}', or set auto-stage = true\n"
    )
    assert bus.get("State") == "idle"
    assert json.loads(bus.call("GetHistory", "u", "0")[0]) == []


def test_postinst_never_stages_a_quarantined_kernel(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, conf: Path
) -> None:
    enable_auto_stage(conf)
    image = install(boot_dir, NEW)
    quarantine.add(
        daemon.state_dir,
        quarantine.QuarantinedKernel(
            release=NEW, transition="T3", reason="came back on the old kernel", since=1.0
        ),
    )
    err = hook_ok(run_hook(bus, POSTINST, NEW, image, config=conf))
    assert err == (
        f"liveupd: not staging {NEW}: it is quarantined: transition T3 fell back from it "
        f"(came back on the old kernel). Once the cause is fixed: 'liveupctl unquarantine "
        f"{NEW}'\n"
    )
    assert bus.get("State") == "idle"


def test_auto_stage_off_does_not_even_start_the_daemon(
    start_daemon: DaemonFactory, bus: PrivateBus, boot_dir: Path, conf: Path
) -> None:
    start_daemon().stop()  # writes liveupd.conf; nothing owns the name now
    err = hook_ok(run_hook(bus, POSTINST, NEW, config=conf))
    assert "auto-stage is off" in err
    assert not bus.has_owner("org.liveupd.LiveUpdate1")


def test_postinst_when_the_daemon_is_absent(
    start_daemon: DaemonFactory, bus: PrivateBus, boot_dir: Path, conf: Path
) -> None:
    start_daemon().stop()
    enable_auto_stage(conf)
    err = hook_ok(run_hook(bus, POSTINST, NEW, config=conf))
    assert err.startswith(f"liveupd: not staging {NEW}: cannot reach liveupd")
    assert "systemctl status liveupd" in err


def test_postinst_leaves_a_transition_someone_else_staged(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, conf: Path
) -> None:
    enable_auto_stage(conf)
    tid, _ = bus.call("Stage", "sssa{sv}", INSTALLED, "", "", "0")  # the admin's choice
    image = install(boot_dir, NEW)
    err = hook_ok(run_hook(bus, POSTINST, NEW, image, config=conf))
    assert f"not staging {NEW}: transition {tid} to {INSTALLED} is already staged" in err
    assert "'liveupctl cancel && liveupctl stage " in err
    assert (staged_release(bus), staged_id(bus)) == (INSTALLED, tid)


def test_postinst_replaces_what_it_staged_itself_with_a_newer_kernel(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, conf: Path
) -> None:
    enable_auto_stage(conf)
    hook_ok(run_hook(bus, POSTINST, NEW, install(boot_dir, NEW), config=conf))
    first = staged_id(bus)
    err = hook_ok(run_hook(bus, POSTINST, NEWER, install(boot_dir, NEWER), config=conf))
    assert f"staged {NEWER} instead of {NEW} as transition" in err
    assert staged_release(bus) == NEWER and staged_id(bus) != first
    history = json.loads(bus.call("GetHistory", "u", "0")[0])
    assert [(h["new_release"], h["state"]) for h in history] == [
        (NEWER, "staged"),
        (NEW, "cancelled"),
    ]


def test_postinst_stages_only_the_newest_and_never_backwards(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, conf: Path
) -> None:
    enable_auto_stage(conf)
    install(boot_dir, NEWER)
    older_new = hook_ok(run_hook(bus, POSTINST, NEW, install(boot_dir, NEW), config=conf))
    assert f"not staging {NEW}: a newer kernel ({NEWER}) is installed" in older_new
    old = "6.1.0-54-cloud-amd64"
    older = hook_ok(run_hook(bus, POSTINST, old, install(boot_dir, old), config=conf))
    assert f"not staging {old}: it is older than the running kernel ({RUNNING})" in older
    running = hook_ok(run_hook(bus, POSTINST, RUNNING, config=conf))
    assert f"not staging {RUNNING}: it is the running kernel" in running
    assert bus.get("State") == "idle"


def test_postinst_while_a_transition_is_running(
    daemon: Daemon,
    bus: PrivateBus,
    boot_dir: Path,
    conf: Path,
    make_hook: HookFactory,
    tmp_path: Path,
) -> None:
    enable_auto_stage(conf)
    go = tmp_path / "go"
    make_hook("10-wait", "quiesce", f"while [ ! -e {go} ]; do sleep 0.05; done")
    bus.call("Stage", "sssa{sv}", "", "", "", "0")
    bus.call("Execute", "a{sv}", "0")
    wait_until(lambda: bus.get("State") == "running", "the transition to run")
    try:
        err = hook_ok(run_hook(bus, POSTINST, NEW, install(boot_dir, NEW), config=conf))
    finally:
        go.touch()
    assert f"not staging {NEW}: a transition is running; stage it afterwards" in err
    # The dry run rehearses the new boot after the jump, then is idle again.
    wait_until(
        lambda: json.loads(bus.call("GetHistory", "u", "1")[0])[0]["state"] == "completed",
        "the transition to end",
    )


def test_postinst_when_kexec_is_unsupported(
    start_daemon: DaemonFactory, bus: PrivateBus, boot_dir: Path, conf: Path, tmp_path: Path
) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({**DEFAULT_MACHINE, "preflight": ["kexec_load_disabled is 1"]}))
    start_daemon(env={"LIVEUPD_DRY_RUN_MACHINE": str(machine)})
    enable_auto_stage(conf)
    err = hook_ok(run_hook(bus, POSTINST, NEW, install(boot_dir, NEW), config=conf))
    assert f"not staging {NEW}: kexec cannot work on this machine: kexec_load_disabled" in err


def test_postinst_when_staging_fails(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, conf: Path
) -> None:
    enable_auto_stage(conf)
    image = install(boot_dir, NEW)
    Path(image).write_bytes(b"not a kernel")
    err = hook_ok(run_hook(bus, POSTINST, NEW, image, config=conf))
    assert err.startswith(f"liveupd: staging {NEW} failed: ")
    assert bus.get("State") in ("idle", "failed")


def test_postinst_with_an_invalid_configuration(
    daemon: Daemon, bus: PrivateBus, conf: Path
) -> None:
    bad = conf.with_name("liveupd.conf.d")
    bad.mkdir()
    (bad / "60-bad.conf").write_text("[kernel]\nauto-stage = 'sometimes'\n")
    err = hook_ok(run_hook(bus, POSTINST, NEW, config=conf))
    assert err.startswith(f"liveupd: nothing done for {NEW}: ")
    assert "60-bad.conf" in err and "auto-stage" in err


# ------------------------------------------------------------------ postrm --


def test_postrm_cancels_the_transition_to_the_removed_kernel(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path
) -> None:
    tid, _ = bus.call("Stage", "sssa{sv}", INSTALLED, "", "", "0")  # auto-stage plays no part
    image = boot_dir / f"vmlinuz-{INSTALLED}"
    image.unlink()
    err = hook_ok(run_hook(bus, POSTRM, INSTALLED, str(image)))
    assert err.startswith(f"liveupd: cancelled transition {tid}: its kernel {INSTALLED} is")
    assert bus.get("State") == "idle"
    assert json.loads(bus.call("GetHistory", "u", "1")[0])[0]["state"] == "cancelled"
    assert daemon.ops()[-1] == "kexec_unload"


def test_postrm_of_another_kernel_leaves_the_staged_one(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path
) -> None:
    tid, _ = bus.call("Stage", "sssa{sv}", INSTALLED, "", "", "0")
    old = "6.1.0-54-cloud-amd64"
    err = hook_ok(run_hook(bus, POSTRM, old, f"/boot/vmlinuz-{old}"))
    assert f"{old} is removed; the staged transition {tid} goes to {INSTALLED}, so it stays" in err
    assert (staged_release(bus), staged_id(bus)) == (INSTALLED, tid)


def test_postrm_with_nothing_staged_is_quiet(daemon: Daemon, bus: PrivateBus) -> None:
    assert hook_ok(run_hook(bus, POSTRM, INSTALLED)) == ""


def test_postrm_when_the_daemon_is_absent(bus: PrivateBus) -> None:
    err = hook_ok(run_hook(bus, POSTRM, INSTALLED))
    assert err.startswith(f"liveupd: cannot tell whether {INSTALLED} is staged: cannot reach")


# ---------------------------------------------------------- kernel-install --


def test_kernel_install_plugin_add_and_remove(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, conf: Path, tmp_path: Path
) -> None:
    enable_auto_stage(conf)
    entry_dir = tmp_path / "efi" / "machine-id" / NEW
    image = install(boot_dir, NEW)
    added = hook_ok(run_hook(bus, KERNEL_INSTALL, "add", NEW, str(entry_dir), image, config=conf))
    assert staged_release(bus) == NEW
    assert f"staged {NEW} as transition {staged_id(bus)}" in added
    removed = hook_ok(run_hook(bus, KERNEL_INSTALL, "remove", NEW, str(entry_dir), config=conf))
    assert "cancelled transition" in removed
    assert bus.get("State") == "idle"
    # Commands it has no part in (add-all, inspect, ...) are not its business.
    assert hook_ok(run_hook(bus, KERNEL_INSTALL, "inspect", NEW, config=conf)) == ""


def test_kernel_install_plugin_with_auto_stage_off(
    daemon: Daemon, bus: PrivateBus, boot_dir: Path, conf: Path, tmp_path: Path
) -> None:
    image = install(boot_dir, NEW)
    err = hook_ok(run_hook(bus, KERNEL_INSTALL, "add", NEW, str(tmp_path), image, config=conf))
    assert "auto-stage is off" in err
    assert bus.get("State") == "idle"


# ------------------------------------------------------ never fail dpkg --


@pytest.mark.parametrize(
    ("script", "args"),
    [(POSTINST, []), (POSTINST, [""]), (POSTRM, []), (KERNEL_INSTALL, ["add"])],
    ids=["postinst-no-args", "postinst-empty", "postrm-no-args", "kernel-install-no-version"],
)
def test_usage_errors_exit_2(bus: PrivateBus, script: Path, args: list[str]) -> None:
    result = run_hook(bus, script, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: ")


@pytest.mark.parametrize("script", [POSTINST, POSTRM, KERNEL_INSTALL])
def test_a_broken_kernel_hook_program_still_exits_0(
    bus: PrivateBus, conf: Path, script: Path
) -> None:
    args = ["add", NEW, "/entry", "/boot/vmlinuz"] if script == KERNEL_INSTALL else [NEW]
    result = run_hook(bus, script, *args, env={"LIVEUPD_KERNEL_HOOK": "/bin/false"})
    assert result.returncode == 0
    assert "failed" in result.stderr and "(exit status 1)" in result.stderr


@pytest.mark.parametrize("script", [POSTINST, POSTRM])
def test_a_leftover_hook_without_liveupd_does_nothing(bus: PrivateBus, script: Path) -> None:
    """liveupd removed, a copy of its hook left in /etc/kernel: silent, exit 0."""
    result = subprocess.run(
        ["/bin/sh", str(script), NEW],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LIVEUPD_KERNEL_HOOK": "/nonexistent/kernel-hook"},
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_hooks_are_posix_sh_and_shellcheck_clean() -> None:
    scripts = [POSTINST, POSTRM, KERNEL_INSTALL]
    for script in scripts:
        assert script.stat().st_mode & 0o755 == 0o755, script
        assert script.read_text().startswith("#!/bin/sh\n"), script
        if shutil.which("dash"):
            subprocess.run(["dash", "-n", str(script)], check=True, timeout=30)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        ["shellcheck", "--shell=sh", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout

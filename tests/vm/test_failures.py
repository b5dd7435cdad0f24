"""End-to-end: transitions that must fail and leave the machine as it was (scenarios 3-5, 7).

(Scenario 7's lockdown case is in test_kernel_load.py, which boots with lockdown.)

One guest on kernel A, no jump.  Each scenario stages kernel B and executes
through the real daemon under systemd; the guest must stay on kernel A with
the NIC bound again (same MAC), every filesystem thawed and writable, no
kernel loaded, and an error that says which hook or file and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.vm import liveupd_guest as g
from tests.vm.guest_vm import GuestVM
from tests.vm.image import GuestImage
from tests.vm.shared import module_guest


@pytest.fixture(scope="module")
def guest(vm_image: GuestImage, request: pytest.FixtureRequest) -> Iterator[GuestVM]:
    with module_guest(vm_image, request) as vm:
        g.install(vm)
        yield vm


def assert_as_it_was(vm: GuestVM, boot_id: str) -> dict[str, Any]:
    """Still kernel A, same boot; NIC bound; thawed; nothing loaded.  The latest entry."""
    assert vm.boot_info().boot_id == boot_id
    assert g.nic_is_back(vm), g.nic(vm)
    assert g.writable(vm, "/data") and g.writable(vm, "/var/tmp")
    assert not g.kexec_loaded(vm)
    status = g.ctl_json(vm, "status")
    assert status["state"] in ("failed", "idle") and status["staged"] is None
    return g.history(vm, limit=1)[0]


def exec_and_fail(vm: GuestVM, release: str) -> tuple[int | None, str]:
    vm.run(["liveupctl", "stage", release], timeout=300)
    result = vm.run(["liveupctl", "exec"], timeout=600, check=False)
    return result.rc, result.stdout + result.stderr


def test_failing_unbind_hook_rolls_everything_back(guest: GuestVM, vm_image: GuestImage) -> None:
    vm = guest
    boot = vm.boot_info().boot_id
    # After the built-in device step (order 50): the NIC is already unbound when it fails.
    g.write_hook(vm, "60-fail", g.sh_hook("unbind", "echo 'controller wedged' >&2; exit 3"))
    try:
        rc, out = exec_and_fail(vm, vm_image.kernel_b.release)
    finally:
        g.remove_hooks(vm, "60-fail")
    assert rc == 1, out
    assert "60-fail" in out and "exited with status 3" in out and "controller wedged" in out
    entry = assert_as_it_was(vm, boot)
    assert entry["state"] == "failed"
    assert entry["error"]["step"] == "hook:60-fail"
    assert "devices:devices" in entry["undone"] and "storage:storage" not in entry["undone"]
    log = g.transition_log(vm, str(entry["id"]))
    assert [e["event"] for e in log].count("devices.unbound") >= 1
    assert any(e["event"] == "devices.bound" for e in log)


def test_hung_hook_is_killed_with_its_process_group(guest: GuestVM, vm_image: GuestImage) -> None:
    vm = guest
    boot = vm.boot_info().boot_id
    # Hooks run in the daemon's sandbox (ProtectSystem=strict): of the file system,
    # only the state directory is theirs to write (docs/hooks.md).
    g.write_hook(
        vm,
        "60-hang",
        g.sh_hook(
            "unbind",
            "echo $$ > /var/lib/liveupd/test-hang.pgid; (trap '' TERM; sleep 600) & sleep 600",
            extra="timeout = 3",
        ),
    )
    try:
        rc, out = exec_and_fail(vm, vm_image.kernel_b.release)
    finally:
        g.remove_hooks(vm, "60-hang")
    assert rc == 1, out
    assert "60-hang" in out and "timed out after 3s" in out
    entry = assert_as_it_was(vm, boot)
    assert entry["state"] == "failed" and entry["error"]["step"] == "hook:60-hang"
    pgid = vm.read_text("/var/lib/liveupd/test-hang.pgid").strip()
    # Not one process of the hook's group is left, the TERM-ignoring grandchild included.
    left = vm.run(["pgrep", "-g", pgid], check=False)
    assert left.rc == 1 and left.stdout == "", left.stdout


def test_daemon_killed_mid_transition_is_rolled_back_on_restart(
    guest: GuestVM, vm_image: GuestImage
) -> None:
    vm = guest
    boot = vm.boot_info().boot_id
    # A quiesce hook whose undo counts its runs, and a slow checkpoint hook: when the
    # daemon dies in it, the kernel is loaded and the NIC is unbound.
    g.write_hook(
        vm,
        "10-count",
        g.sh_hook("quiesce", "true", undo="echo undo >> /var/lib/liveupd/test-count.undo"),
    )
    g.write_hook(
        vm,
        "10-slow",
        g.sh_hook("checkpoint", "touch /var/lib/liveupd/test-slow.started; exec sleep 600"),
    )
    vm.run("rm -f /var/lib/liveupd/test-count.undo /var/lib/liveupd/test-slow.started")
    try:
        vm.run(["liveupctl", "stage", vm_image.kernel_b.release], timeout=300)
        restarts_before = int(
            vm.run(["systemctl", "show", "-P", "NRestarts", "liveupd.service"]).stdout
        )
        vm.spawn("liveupctl exec >/run/liveupctl-exec.log 2>&1")
        vm.run("until [ -e /var/lib/liveupd/test-slow.started ]; do sleep 0.1; done", timeout=300)
        assert g.nic(vm).driver is None  # unbound right now
        assert g.kexec_loaded(vm)
        vm.run(["systemctl", "kill", "--kill-whom=main", "-s", "KILL", "liveupd.service"])
        # systemd restarts it (Restart=on-failure); its start-up recovery rolls back.
        vm.run(
            f"until [ $(systemctl show -P NRestarts liveupd.service) -gt {restarts_before} ] "
            "&& systemctl is-active -q liveupd.service; do sleep 0.2; done",
            timeout=300,
        )
    finally:
        g.remove_hooks(vm, "10-count", "10-slow")
    entry = assert_as_it_was(vm, boot)
    assert entry["state"] == "aborted", entry
    assert "devices:devices" in entry["undone"] and "kernel-load:kernel-load" in entry["undone"]
    # The completed hook's undo ran exactly once; the killed hook's process is gone.
    assert vm.read_text("/var/lib/liveupd/test-count.undo") == "undo\n"
    assert vm.run(["pgrep", "-f", "sleep 600"], check=False).stdout == ""
    journal = vm.run("journalctl -b -u liveupd --no-pager -o cat").stdout
    assert "event=recovery.rollback" in journal


@pytest.mark.parametrize(
    ("setup", "kernel", "expected"),
    [
        ("true", "/boot/vmlinuz-0.0.0-missing", ["/boot/vmlinuz-0.0.0-missing"]),
        (
            "cp /bin/ls /boot/vmlinuz-9.9.9-notakernel && chmod 644 /boot/vmlinuz-9.9.9-notakernel",
            "/boot/vmlinuz-9.9.9-notakernel",
            ["/boot/vmlinuz-9.9.9-notakernel", "not a boot image"],
        ),
        (
            "cp /boot/vmlinuz-{b} /boot/vmlinuz-{b}-copy && chmod 664 /boot/vmlinuz-{b}-copy",
            "/boot/vmlinuz-{b}-copy",
            ["/boot/vmlinuz-{b}-copy", "writable by group"],
        ),
    ],
    ids=["missing", "not-a-kernel", "group-writable"],
)
def test_bad_kernel_is_refused_and_nothing_is_staged(
    guest: GuestVM, vm_image: GuestImage, setup: str, kernel: str, expected: list[str]
) -> None:
    vm = guest
    b = vm_image.kernel_b.release
    vm.run(setup.format(b=b))
    try:
        result = vm.run(["liveupctl", "stage", kernel.format(b=b)], timeout=300, check=False)
    finally:
        vm.run("rm -f /boot/vmlinuz-9.9.9-notakernel /boot/vmlinuz-*-copy")
    assert result.rc == 1, result.stdout + result.stderr
    for text in expected:
        assert text.format(b=b) in result.stderr, result.stderr
    assert not g.kexec_loaded(vm)
    status = g.ctl_json(vm, "status")
    assert status["staged"] is None

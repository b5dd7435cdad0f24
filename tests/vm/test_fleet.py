"""Package managers and fleet tools, end to end in a Debian 13 guest.

One guest, booted once on kernel A (trixie's 6.12; kernel B, backports' 7.x, is
installed), liveupd installed from its .deb (kernel hooks included), then in order:

    status on A: B is newer; /run/reboot-required and its packages reported
    auto-stage on:  apt-get remove B's packages (nothing staged), then
                    apt-get install linux-image-<B> -> B staged by the hook
    apt-get remove B's packages -> the staged transition is cancelled (postrm hook)
    auto-stage off: apt-get install linux-image-<B> -> nothing staged, the hook says why
    liveupctl reboot --fallback -> kexec A -> B, verified completed on B
    kexec_load_disabled=1, liveupctl reboot --fallback
                              -> systemctl reboot through the firmware (back on A
                                 under QEMU -kernel), new boot id
    over SSH from the host, as Ansible's reboot module runs it (a ControlMaster
    connection, ControlPersist), direct mode, the shipped network hooks active:
      ssh root@guest liveupctl reboot --fallback --mode direct
                              -> the session is ended before 20-network takes the
                                 link down: ssh ends (255), kexec A -> B, verified,
                                 the report lists the session

B comes with Debian's new kernel packaging: linux-image-<B> pulls linux-binary-<B>
(vmlinuz in /usr/lib/modules/<B>/), linux-modules-<B> and linux-base-<B>, from the
local repository the image carries (the guest has no network; QEMU forwards a host
port to its sshd). Two kernel installs and two boots in all.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.vm.guest_vm import GuestVM, RunResult
from tests.vm.image import GuestImage
from tests.vm.liveupd_guest import kexec_loaded, wait_verified
from tests.vm.shared import module_guest

DROPIN = "/etc/liveupd/liveupd.conf.d/50-auto-stage.conf"
OUT = "/var/tmp/liveupctl-reboot.out"  # on the root disk: survives the reboot


@pytest.fixture(scope="module")
def ssh_port() -> int:
    """A free port on the host's 127.0.0.1, forwarded to the guest's sshd."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def fleet_vm(
    vm_image: GuestImage, request: pytest.FixtureRequest, ssh_port: int
) -> Iterator[GuestVM]:
    with module_guest(vm_image, request, host_forwards=[(ssh_port, 22)]) as vm:
        vm.install_project()
        yield vm


def status(vm: GuestVM) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(vm.run(["liveupctl", "status", "--json"]).stdout)
    return data


def newest_transition(vm: GuestVM) -> dict[str, Any]:
    entries = json.loads(vm.run(["liveupctl", "history", "--json", "--limit", "1"]).stdout)
    return entries[0] if entries else {}


def apt_get(vm: GuestVM, *args: str) -> RunResult:
    """apt-get (offline: the image's local repository); output is stdout plus stderr."""
    start = time.monotonic()
    result = vm.run(
        ["apt-get", "-y", "-q", "--no-install-recommends", *args],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=900,
    )
    print(f"\n[fleet] apt-get {' '.join(args)}: {time.monotonic() - start:.1f} s")
    return result


def output(result: RunResult) -> str:
    return result.stdout + result.stderr


def hook_journal(vm: GuestVM) -> str:
    return vm.run("journalctl -b -t liveupd-kernel-hook --no-pager -o cat", check=False).stdout


def reboot_output(vm: GuestVM) -> tuple[str, int | None]:
    """What the detached liveupctl printed before the machine went down, and its exit
    status if the shell lived long enough to record it."""
    text = vm.read_text(OUT)
    rc = next((int(line[3:]) for line in text.splitlines() if line.startswith("rc=")), None)
    return text, rc


# ------------------------------------------------------------------ status --


def test_status_reports_a_newer_kernel_and_reboot_required(
    fleet_vm: GuestVM, vm_image: GuestImage
) -> None:
    vm = fleet_vm
    a, b = vm_image.kernel_a, vm_image.kernel_b
    vm.run("rm -f /run/reboot-required /run/reboot-required.pkgs")
    data = status(vm)
    assert (data["running_kernel"], data["newer_kernel"]) == (a.release, b.release)
    assert data["reboot_required"] is False
    # What Debian's packages (unattended-upgrades' kernel hook, libc6...) leave behind.
    vm.write_file("/run/reboot-required", "*** System restart required ***\n")
    vm.write_file("/run/reboot-required.pkgs", f"{b.package}\nlibc6\n{b.package}\n")
    data = json.loads(vm.run(["liveupctl", "status", "--json"], user="tester").stdout)
    assert data["reboot_required"] is True
    assert data["reboot_required_file"] == "/run/reboot-required"
    assert data["reboot_required_packages"] == [b.package, "libc6"]
    text = vm.run(["liveupctl", "status"], user="tester").stdout
    assert f"Latest kernel:  {b.release} (newer than the running kernel)" in text
    assert f"Reboot needed:  yes: {b.release} is installed; /run/reboot-required exists" in text
    vm.run("rm -f /run/reboot-required /run/reboot-required.pkgs")


# --------------------------------------------------------------- the hooks --


def test_installing_a_kernel_package_stages_it_when_auto_stage_is_on(
    fleet_vm: GuestVM, vm_image: GuestImage
) -> None:
    vm = fleet_vm
    b = vm_image.kernel_b
    for path in (
        "/usr/share/kernel/postinst.d/zz-liveupd",
        "/usr/share/kernel/postrm.d/zz-liveupd",
        "/usr/lib/kernel/install.d/99-liveupd.install",
        "/usr/libexec/liveupd/kernel-hook",
    ):
        vm.run(["test", "-x", path])
    removed = apt_get(vm, "remove", *b.packages)  # nothing is staged: the hook is quiet
    assert "liveupd:" not in output(removed), output(removed)
    vm.run(f"! test -e {b.guest_vmlinuz}")
    vm.run(["mkdir", "-p", "/etc/liveupd/liveupd.conf.d"])
    vm.write_file(DROPIN, "[kernel]\nauto-stage = true\n")
    installed = apt_get(vm, "install", b.package)
    for dependency in b.packages:
        assert dependency in installed.stdout, installed.stdout  # pulled in by apt
    data = status(vm)
    assert data["state"] == "staged", output(installed)
    staged = data["staged"]
    assert staged["target_release"] == b.release
    assert staged["initrd"] == f"/boot/initrd.img-{b.release}"  # the initrd hook ran first
    assert kexec_loaded(vm)
    assert (
        f"liveupd: staged {b.release} as transition {staged['id']}; 'liveupctl reboot'"
        in output(installed)
    )
    journal = hook_journal(vm)
    assert "event=autostage.staged" in journal and f"transition={staged['id']}" in journal
    assert "source=debian-postinst" in journal


def test_removing_the_staged_kernel_cancels_its_transition(
    fleet_vm: GuestVM, vm_image: GuestImage
) -> None:
    vm = fleet_vm
    b = vm_image.kernel_b
    tid = status(vm)["staged"]["id"]
    removed = apt_get(vm, "remove", *b.packages)
    assert f"liveupd: cancelled transition {tid}: its kernel {b.release}" in output(removed)
    assert status(vm)["state"] == "idle"
    assert not kexec_loaded(vm)
    assert (newest_transition(vm)["id"], newest_transition(vm)["state"]) == (tid, "cancelled")
    assert "event=unstage.cancelled" in hook_journal(vm)


def test_installing_a_kernel_package_stages_nothing_when_auto_stage_is_off(
    fleet_vm: GuestVM, vm_image: GuestImage
) -> None:
    vm = fleet_vm
    b = vm_image.kernel_b
    vm.run(["rm", "-f", DROPIN])
    installed = apt_get(vm, "install", b.package)
    assert (
        f"liveupd: not staging {b.release}: auto-stage is off ([kernel] auto-stage in "
        "liveupd.conf)" in output(installed)
    ), output(installed)
    assert status(vm)["state"] == "idle"
    assert not kexec_loaded(vm)
    vm.run(f"test -s {b.guest_vmlinuz} && test -s /boot/initrd.img-{b.release}")


# ------------------------------------------------------------------ reboot --


def test_reboot_fallback_lands_on_the_newest_kernel(
    fleet_vm: GuestVM, vm_image: GuestImage
) -> None:
    """What a fleet tool runs: kexec works here, so --fallback is not needed and B is reached."""
    vm = fleet_vm
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    old = vm.boot_info()
    assert old.release == a
    start = time.monotonic()
    vm.spawn(f"liveupctl reboot --fallback >{OUT} 2>&1; echo rc=$? >>{OUT}")
    new = vm.wait_for_new_boot(old.boot_id)
    took = time.monotonic() - start
    print(f"\n[fleet] liveupctl reboot --fallback A->B to agent answering: {took:.1f} s")
    assert (new.release, vm.run("uname -r").stdout.strip()) == (b, b)
    assert new.boot_id != old.boot_id
    assert wait_verified(vm) == "active"
    entry = newest_transition(vm)
    assert (entry["state"], entry["old_release"], entry["new_release"]) == ("completed", a, b)
    assert entry["mode"] == "systemd"  # liveupctl reboot's default: services stop cleanly
    text, rc = reboot_output(vm)
    assert f"Staged {b} as transition {entry['id']}" in text, text
    assert rc in (None, 0), text
    status_on_b = status(vm)
    assert status_on_b["newer_kernel"] is None and status_on_b["state"] == "idle"


def test_fallback_reboots_through_the_firmware_when_kexec_is_disabled(
    fleet_vm: GuestVM, vm_image: GuestImage
) -> None:
    vm = fleet_vm
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    last = newest_transition(vm)["id"]
    vm.run("echo 1 > /proc/sys/kernel/kexec_load_disabled")  # as sysctl would
    assert "kexec_load_disabled" in (status(vm)["unsupported"] or "")
    refused = vm.run(["liveupctl", "reboot"], check=False)  # without --fallback: exit 5
    assert refused.rc == 5, refused.stderr
    old = vm.boot_info()
    assert old.release == b
    start = time.monotonic()
    vm.spawn(f"liveupctl reboot --fallback >{OUT} 2>&1; echo rc=$? >>{OUT}")
    new = vm.wait_for_new_boot(old.boot_id)
    took = time.monotonic() - start
    print(f"\n[fleet] liveupctl reboot --fallback to agent answering: {took:.1f} s")
    # A firmware reboot under QEMU -kernel boots the -kernel again: kernel A.
    assert new.release == a and new.boot_id != old.boot_id
    assert vm.read_text("/proc/sys/kernel/kexec_load_disabled").strip() == "0"
    text, rc = reboot_output(vm)
    assert "liveupctl: kexec cannot work on this machine: kexec is disabled" in text, text
    assert "rebooting the normal way (systemctl reboot)" in text, text
    assert rc in (None, 0), text
    assert newest_transition(vm)["id"] == last  # no transition: the firmware did it
    assert "liveupd.transition=" not in vm.read_text("/proc/cmdline")


# ----------------------------------------------------------- over SSH (issue 20) --

SSH_DEADLINE = 300.0  # a deadline for a command that must end, not a timing assertion


class Ssh:
    """OpenSSH from the host as Ansible runs it: ControlMaster=auto, ControlPersist=60s."""

    def __init__(self, work: Path, port: int) -> None:
        self.work = work
        # A short directory: the master's socket path must fit a sockaddr_un (108 bytes).
        self.control = Path(tempfile.mkdtemp(prefix="ssh-", dir="/tmp"))
        key = work / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        self.public_key = (work / "id.pub").read_text()
        self.argv = [
            "ssh", "-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            "-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={self.control}/cm-%C",
            "-o", "ControlPersist=60s", "root@127.0.0.1",
        ]  # fmt: skip

    def run(self, command: str, name: str) -> tuple[int, str, str]:
        """Run ``command``; its status and output.  Files, not pipes: the ControlPersist
        master goes to the background with them (Ansible's ssh.py notes the same)."""
        out, err = self.work / f"{name}.out", self.work / f"{name}.err"
        with out.open("w") as o, err.open("w") as e:
            proc = subprocess.Popen(
                [*self.argv, command], stdin=subprocess.DEVNULL, stdout=o, stderr=e
            )
            try:
                rc = proc.wait(timeout=SSH_DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(
                    f"ssh {command!r} did not end within {SSH_DEADLINE:.0f} s: "
                    f"{err.read_text()[-500:]}"
                ) from None
        return rc, out.read_text(), err.read_text()

    def master_alive(self) -> bool:
        check = subprocess.run(
            [*self.argv[:-1], "-O", "check", self.argv[-1]], capture_output=True, check=False
        )
        return check.returncode == 0

    def close(self) -> None:
        subprocess.run(
            [*self.argv[:-1], "-O", "exit", self.argv[-1]], capture_output=True, check=False
        )
        shutil.rmtree(self.control, ignore_errors=True)


def test_reboot_over_ssh_ends_the_session_before_the_network_goes_down(
    fleet_vm: GuestVM, vm_image: GuestImage, ssh_port: int, tmp_path: Path
) -> None:
    """Issue 20: the SSH client must see its connection end (ssh exits 255, or 0), not hang
    on a machine that went away; the guest lands on B, verified, and the report lists the
    session liveupd ended before the shipped 20-network hook took the link down."""
    vm = fleet_vm
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    old = vm.boot_info()
    assert old.release == a  # the firmware fallback before brought it back to A
    ssh = Ssh(tmp_path, ssh_port)
    vm.run("install -d -m 700 /root/.ssh")
    vm.write_file("/root/.ssh/authorized_keys", ssh.public_key, 0o600)
    try:
        # The first command opens the master connection (a logind session, Remote, from
        # QEMU's gateway) and shows systemd's own ordering of that session's scope, which
        # a systemd-mode shutdown relies on: stopped before the network.
        scope = 'session-"$XDG_SESSION_ID".scope'
        rc, out, err = ssh.run(
            'loginctl show-session "$XDG_SESSION_ID" -p Remote -p Service; '
            f"echo ScopeBefore=$(systemctl show -P Before {scope}); "
            f"echo ScopeConflicts=$(systemctl show -P Conflicts {scope}); "
            f"echo ScopeAfter=$(systemctl show -P After {scope}); "
            "echo UserSessionsAfter=$(systemctl show -P After systemd-user-sessions.service)",
            "probe",
        )
        assert rc == 0, err
        props = {
            k: v.split() for k, v in (ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
        }
        assert (props["Remote"], props["Service"]) == (["yes"], ["sshd"]), out
        assert "shutdown.target" in props["ScopeBefore"], out
        assert "shutdown.target" in props["ScopeConflicts"], out
        assert "systemd-user-sessions.service" in props["ScopeAfter"], out
        assert "network.target" in props["UserSessionsAfter"], out
        assert ssh.master_alive()
        # What Ansible's reboot module runs, over the same master connection.
        start = time.monotonic()
        rc, out, err = ssh.run("liveupctl reboot --fallback --mode direct", "reboot")
        ended = time.monotonic() - start
        print(f"\n[fleet] ssh liveupctl reboot ended after {ended:.1f} s, status {rc}: {err!r}")
        assert rc in (0, 255), (rc, out, err)
        new = vm.wait_for_new_boot(old.boot_id)
        took = time.monotonic() - start
        print(f"[fleet] ssh liveupctl reboot A->B to agent answering: {took:.1f} s")
        assert not ssh.master_alive()  # the master saw its connection close too
    finally:
        ssh.close()
    assert (new.release, vm.run("uname -r").stdout.strip()) == (b, b)
    assert wait_verified(vm) == "active"
    entry = newest_transition(vm)
    assert (entry["state"], entry["mode"], entry["new_release"]) == ("completed", "direct", b)
    hooks = {h["hook"]: h["status"] for h in entry["hooks"]}
    assert hooks.get("20-network") == "done", entry["hooks"]  # the shipped hook was active
    [ended_session] = [s for s in entry["sessions_ended"] if s["caller"]]
    assert (ended_session["service"], ended_session["gone"]) == ("sshd", True), entry
    assert ended_session["remote_host"], entry
    shown = vm.run(["liveupctl", "show", entry["id"]]).stdout
    assert "Remote sessions ended before the network went down:" in shown, shown
    assert f"session {ended_session['id']}: root (sshd from " in shown, shown

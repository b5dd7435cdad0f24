"""Package managers and fleet tools, end to end in a Debian 13 guest.

One guest, booted once on kernel A (trixie's 6.12; kernel B, backports' 7.x, is
installed), liveupd installed from its .deb (kernel hooks included), then in order:

    status on A: B is newer; /run/reboot-required and its packages reported
    auto-stage on:  apt-get remove B's packages (nothing staged), then
                    apt-get install linux-image-<B> -> B staged by the hook
    apt-get remove B's packages -> the staged transition is cancelled (postrm hook)
    auto-stage off: apt-get install linux-image-<B> -> nothing staged, the hook says why
    a quiesce hook refuses (no jump): the transition rolls back; ssh.service, stopped
    by the sessions step, runs again, and a loopback SSH login made before it was
    stopped is still connected
    Ansible from the host (ansible-core from the test venv, the playbook of
    docs/examples/ansible/liveupd-reboot.yml, ansible.builtin.reboot with
    reboot_command: liveupctl reboot --fallback --mode ...; SSH through a QEMU port
    forward, a ControlPersist master as Ansible opens it):
      direct mode, the shipped network hooks active
                              -> ssh.service is stopped, then the Ansible session is
                                 ended, before 20-network takes the link down;
                                 rebooted: true; kexec A -> B, verified, the report
                                 lists the unit and the session
      too little memory to load B (hugepages pinned): Stage refuses (OutOfMemory)
                              -> the fallback, systemctl reboot through the firmware
                                 (back on A under QEMU -kernel); rebooted: true
      systemd mode            -> kexec A -> B through kexec.target; rebooted: true
    kured's command, from a mount namespace of its own through
    nsenter -m/proc/1/ns/mnt (no login session)
                              -> returns 0 (or the machine goes first); kexec B -> B
                                 (the running kernel is the newest), verified
    kexec_load_disabled=1     -> Unsupported, exit 5 without --fallback; with it, the
                                 fallback command (no jump: 'true' stands in)

B comes with Debian's new kernel packaging: linux-image-<B> pulls linux-binary-<B>
(vmlinuz in /usr/lib/modules/<B>/), linux-modules-<B> and linux-base-<B>, from the
local repository the image carries (the guest has no network; QEMU forwards a host
port to its sshd). Two kernel installs, one boot and four jumps in all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.vm.fleet.ansible import Ansible, PlaybookRun, free_local_port
from tests.vm.fleet.recipes import KURED_COMMAND, KURED_NSENTER
from tests.vm.guest_vm import BootInfo, GuestVM, RunResult
from tests.vm.image import GuestImage
from tests.vm.liveupd_guest import (
    history,
    kexec_loaded,
    remove_hooks,
    sh_hook,
    wait_verified,
    write_hook,
)
from tests.vm.shared import module_guest

DROPIN = "/etc/liveupd/liveupd.conf.d/50-auto-stage.conf"
OUT = "/var/tmp/liveupctl-reboot.out"  # on the root disk: survives the reboot


@pytest.fixture(scope="module")
def ssh_port() -> int:
    """A free port on the host's 127.0.0.1, forwarded to the guest's sshd."""
    return free_local_port()


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


# ------------------------------------------------- fleet tools (issue 20) --
#
# Ansible's reboot module with the recipe of docs/fleet.md, run from the host over
# the forwarded port; kured's command from another mount namespace. Four jumps:
#   A -> B  Ansible, direct mode (the shipped 20-network hook takes the link down)
#   B -> A  Ansible, Stage refuses the kernel: fallback, a firmware reboot
#   A -> B  Ansible, systemd mode
#   B -> B  kured's nsenter, systemd mode (the running kernel is the newest)
# and kexec_load_disabled, which needs no jump, last.


@pytest.fixture(scope="module")
def ansible(fleet_vm: GuestVM, ssh_port: int) -> Iterator[Ansible]:
    """Ansible on the host with a key the guest's root accepts."""
    runner = Ansible(ssh_port)
    fleet_vm.run("install -d -m 700 /root/.ssh")
    fleet_vm.write_file("/root/.ssh/authorized_keys", runner.public_key, 0o600)
    try:
        yield runner
    finally:
        runner.close()


def ansible_reboot(vm: GuestVM, ansible: Ansible, mode: str | None) -> tuple[PlaybookRun, str]:
    """Run the recipe; the run, and the boot id it must have left behind."""
    old = vm.boot_info()
    run = ansible.reboot(mode)
    print(
        f"\n[fleet] ansible-playbook ({mode or 'default mode'}) from {old.release}: "
        f"{run.seconds:.1f} s, reboot task {run.reboot}"
    )
    assert run.rc == 0, run.output[-4000:]
    assert run.reboot.get("rebooted") is True, (run.reboot, run.output[-4000:])
    assert run.reboot.get("failed") is not True, run.reboot
    return run, old.boot_id


def landed(vm: GuestVM, old_boot_id: str) -> BootInfo:
    """The boot after ``old_boot_id`` (the playbook already waited for it)."""
    new = vm.wait_for_new_boot(old_boot_id)
    assert new.boot_id != old_boot_id
    assert vm.run("uname -r").stdout.strip() == new.release
    return new


def ansible_jump(vm: GuestVM, ansible: Ansible, mode: str, a: str, b: str) -> dict[str, Any]:
    """The recipe in ``mode`` from A: B must run, verified, and the newest transition
    must be that jump, completed in ``mode``; that transition."""
    _, old_boot = ansible_reboot(vm, ansible, mode)
    new = landed(vm, old_boot)
    assert new.release == b
    assert wait_verified(vm) == "active"
    entry = newest_transition(vm)
    assert (entry["state"], entry["mode"], entry["old_release"], entry["new_release"]) == (
        "completed",
        mode,
        a,
        b,
    )
    return entry


def caller_session(entry: dict[str, Any]) -> dict[str, Any]:
    """The SSH session the update was started from, which liveupd ended last."""
    callers = [s for s in entry["sessions_ended"] if s["caller"]]
    assert len(callers) == 1, entry["sessions_ended"]
    session: dict[str, Any] = callers[0]
    assert (session["service"], session["user"], session["gone"]) == ("sshd", "root", True), entry
    assert session["remote_host"], entry  # QEMU's gateway: a remote session
    assert entry["sessions_ended"][-1] == session  # ended last
    return session


def late_logins(vm: GuestVM) -> int:
    """SSH logins the previous boot accepted after liveupd ended the caller's session
    (Ansible's boot-id poll, connecting before the network went down: the playbook's
    keepalives end them). Shown, not asserted: it is a race."""
    journal = vm.run(
        "journalctl -b -1 -o cat --no-pager -t liveupd -t sshd-session", check=False
    ).stdout.splitlines()
    ended = [
        i for i, ln in enumerate(journal) if "event=sessions.ended" in ln and "caller=True" in ln
    ]
    after = journal[ended[-1] :] if ended else []
    return sum("Accepted publickey" in ln for ln in after)


PROBE = "ssh-probe"  # a transient unit: a loopback SSH login that stays open


def open_loopback_login(vm: GuestVM) -> None:
    """An SSH login from 127.0.0.1 that stays open (its client runs in the transient unit
    PROBE while the connection lives). logind marks it Remote (its RemoteHost is an
    address, not "localhost"), so liveupd ends it like any SSH login."""
    vm.run(
        "rm -f /root/.ssh/probe*; ssh-keygen -q -t ed25519 -N '' -C liveupd-probe"
        " -f /root/.ssh/probe"
        " && cat /root/.ssh/probe.pub >> /root/.ssh/authorized_keys"
    )
    vm.run(
        f"systemd-run --unit={PROBE} ssh -i /root/.ssh/probe -o BatchMode=yes"
        " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        " root@127.0.0.1 'echo logged-in; exec sleep 900'"
    )
    # Logged in: the remote command ran (polled, with a bound).
    vm.run(
        "for i in $(seq 300); do journalctl -u ssh-probe -o cat | grep -qx logged-in"
        " && exit 0; sleep 0.1; done; exit 1"
    )


def active_listeners(vm: GuestVM) -> list[str]:
    """The default [exec] remote-login-units that are active, in that order."""
    units = ("ssh.socket", "ssh.service")
    states = vm.run(["systemctl", "is-active", *units], check=False).stdout.split()
    return [u for u, s in zip(units, states, strict=True) if s == "active"]


def rollback_starts_ssh_again(vm: GuestVM) -> None:
    """No jump. Before it ends the remote sessions, the sessions step stops the active
    remote-login listeners (ssh.socket and ssh.service, those active) so that
    no new login can start; a quiesce hook that refuses rolls the transition back, and
    ssh.service runs again. A login made before was still there after the stop, to be
    ended by logind after it: Debian's ssh.service has KillMode=process and the login
    is in its own session scope."""
    assert vm.run("systemctl show -P KillMode ssh.service").stdout.strip() == "process"
    open_loopback_login(vm)  # with socket activation, ssh.service runs from here on
    listeners = active_listeners(vm)
    print(f"\n[fleet] active remote-login listeners: {listeners}")
    assert "ssh.service" in listeners, listeners
    listener = vm.run("systemctl show -P MainPID ssh.service").stdout.strip()
    write_hook(vm, "30-refuses", sh_hook("quiesce", "echo refused >&2; exit 1"))
    try:
        vm.run(["liveupctl", "stage"], timeout=300)
        failed = vm.run(["liveupctl", "exec"], check=False, timeout=300)
    finally:
        remove_hooks(vm, "30-refuses")
    assert failed.rc != 0, output(failed)
    entry = newest_transition(vm)
    assert entry["state"] == "failed" and entry["error"]["step"] == "hook:30-refuses", entry
    assert entry["units_stopped"] == listeners, entry
    assert "sessions:end-remote-sessions" in entry["undone"], entry
    assert active_listeners(vm) == listeners  # started again
    # A new listener (it was stopped and started again) ...
    assert vm.run("systemctl show -P MainPID ssh.service").stdout.strip() not in ("0", listener)
    # ... and the login made before outlived the stop: it was listed (not closing) after
    # it, and ended through logind.
    probes = [s for s in entry["sessions_ended"] if s["remote_host"] == "127.0.0.1"]
    assert [(p["service"], p["gone"], p["error"]) for p in probes] == [("sshd", True, None)], entry
    assert vm.run(f"systemctl is-active {PROBE}", check=False).stdout.strip() != "active"
    vm.run(
        f"systemctl stop {PROBE}; rm -f /root/.ssh/probe /root/.ssh/probe.pub;"
        " sed -i '/ liveupd-probe$/d' /root/.ssh/authorized_keys"
    )
    assert not kexec_loaded(vm)


def test_ansible_reboot_in_direct_mode_ends_its_ssh_session_before_the_network_goes_down(
    fleet_vm: GuestVM, vm_image: GuestImage, ansible: Ansible
) -> None:
    """Issue 20: Ansible's reboot module must see its connection end (not hang on a
    machine that went away) with the shipped 20-network hook taking the link down;
    the guest lands on B, verified, and the report lists the Ansible session."""
    vm = fleet_vm
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    assert vm.boot_info().release == a
    start = time.monotonic()
    rollback_starts_ssh_again(vm)
    print(f"\n[fleet] rollback, ssh stopped and started again: {time.monotonic() - start:.1f} s")
    # An Ansible connection is a remote logind session whose scope systemd stops
    # before the network in a shutdown (what the fallback's systemctl reboot and
    # systemd mode rely on): Before/Conflicts=shutdown.target, after the network.
    scope = 'session-"$XDG_SESSION_ID".scope'
    rc, out = ansible.adhoc(
        "ansible.builtin.shell",
        'loginctl show-session "$XDG_SESSION_ID" -p Remote -p Service; '
        f"echo ScopeBefore=$(systemctl show -P Before {scope}); "
        f"echo ScopeConflicts=$(systemctl show -P Conflicts {scope}); "
        f"echo ScopeAfter=$(systemctl show -P After {scope}); "
        "echo UserSessionsAfter=$(systemctl show -P After systemd-user-sessions.service)",
    )
    assert rc == 0, out
    props = {k: v.split() for k, v in (ln.split("=", 1) for ln in out.splitlines() if "=" in ln)}
    assert (props["Remote"], props["Service"]) == (["yes"], ["sshd"]), out
    assert "shutdown.target" in props["ScopeBefore"], out
    assert "shutdown.target" in props["ScopeConflicts"], out
    assert "systemd-user-sessions.service" in props["ScopeAfter"], out
    assert "network.target" in props["UserSessionsAfter"], out
    ansible.close_masters()

    entry = ansible_jump(vm, ansible, "direct", a, b)
    hooks = {h["hook"]: h["status"] for h in entry["hooks"]}
    assert hooks.get("20-network") == "done", entry["hooks"]  # the shipped hook was active
    # The listener was stopped first, and the Ansible session (in its own scope) was
    # still there to be ended after it.
    assert "ssh.service" in entry["units_stopped"], entry
    session = caller_session(entry)
    late = late_logins(vm)
    print(f"[fleet] SSH logins the old system accepted after its sessions were ended: {late}")
    shown = vm.run(["liveupctl", "show", entry["id"]]).stdout
    assert "Remote sessions ended before the network went down:" in shown, shown
    assert f"session {session['id']}: root (sshd from " in shown, shown
    units = ", ".join(entry["units_stopped"])
    assert f"Remote-login listeners stopped (no new logins): {units}\n" in shown, shown


def test_ansible_reboot_falls_back_to_a_normal_reboot_when_stage_refuses_the_kernel(
    fleet_vm: GuestVM, vm_image: GuestImage, ansible: Ansible
) -> None:
    """The newest kernel cannot be staged: there is not memory enough to load it (Stage
    refuses with OutOfMemory: the kernel, twice its initrd and a 64 MiB margin must fit
    in MemAvailable; hugepages pin the memory here). A broken kernel file would not do:
    'liveupctl reboot' stages the newest kernel that passes Stage's checks. The
    playbook's reboot_command falls back to systemctl reboot, and the task ends well."""
    vm = fleet_vm
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    completed = [e["id"] for e in history(vm) if e["state"] == "completed"]
    kernel = vm_image.kernel_b.guest_vmlinuz
    sizes = vm.run(f"stat -L -c %s {kernel} /boot/initrd.img-{b}").stdout.split()
    floor = 2 * (int(sizes[0]) + int(sizes[1])) + MEMORY_MARGIN  # below what Stage needs
    pinned = pin_memory(vm, keep_available=floor - (16 << 20))
    print(f"\n[fleet] pinned {pinned >> 20} MiB in hugepages: {available(vm) >> 20} MiB left")
    refused = vm.run(["liveupctl", "stage"], check=False)
    assert refused.rc != 0 and "loading needs about" in refused.stderr, output(refused)
    assert "not loading " in refused.stderr and b in refused.stderr, refused.stderr
    assert status(vm)["state"] == "idle"

    _, old_boot = ansible_reboot(vm, ansible, None)
    new = landed(vm, old_boot)
    # A firmware reboot under QEMU -kernel boots the -kernel again: kernel A.
    assert new.release == a
    assert "liveupd.transition=" not in vm.read_text("/proc/cmdline")  # no kexec
    assert [e["id"] for e in history(vm) if e["state"] == "completed"] == completed
    assert vm.read_text("/proc/sys/vm/nr_hugepages").strip() == "0"  # a new boot


def test_ansible_reboot_in_systemd_mode_lands_on_the_newest_kernel(
    fleet_vm: GuestVM, vm_image: GuestImage, ansible: Ansible
) -> None:
    vm = fleet_vm
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    entry = ansible_jump(vm, ansible, "systemd", a, b)
    caller_session(entry)


def test_kured_reboot_command_from_another_mount_namespace(
    fleet_vm: GuestVM, vm_image: GuestImage
) -> None:
    """kured's contract: its reboot command runs from the pod through nsenter into PID 1's
    mount namespace, and the node going away is success. The command must return or
    the machine leave, never hang; the machine lands verified (B -> B: the running
    kernel is the newest, so 'liveupctl reboot' makes a fast reboot into it)."""
    vm = fleet_vm
    b = vm_image.kernel_b.release
    old = vm.boot_info()
    assert old.release == b
    last = newest_transition(vm)["id"]
    start = time.monotonic()
    # What kured runs (pkg/reboot/command.go), from a mount namespace of its own as its
    # pod has (hostPID: the PID namespace is the host's); no login session.
    vm.spawn(
        "unshare --mount --propagation private sh -c '"
        "echo pod-mnt=$(readlink /proc/self/ns/mnt) host-mnt=$(readlink /proc/1/ns/mnt); "
        f"exec {KURED_NSENTER} {KURED_COMMAND}' >{OUT} 2>&1; "
        f"echo rc=$? >>{OUT}"
    )
    new = vm.wait_for_new_boot(old.boot_id)
    took = time.monotonic() - start
    print(f"\n[fleet] kured-style reboot B->B to agent answering: {took:.1f} s")
    assert (new.release, vm.run("uname -r").stdout.strip()) == (b, b)
    assert wait_verified(vm) == "active"
    entry = newest_transition(vm)
    assert entry["id"] != last
    assert (entry["state"], entry["mode"], entry["old_release"], entry["new_release"]) == (
        "completed",
        "systemd",  # liveupctl reboot's default: services stop cleanly, as kured expects
        b,
        b,
    )
    assert not [s for s in entry["sessions_ended"] if s["caller"]], entry  # in no session
    text, rc = reboot_output(vm)
    [namespaces] = [ln for ln in text.splitlines() if ln.startswith("pod-mnt=")]
    pod, host = (part.split("=", 1)[1] for part in namespaces.split())
    assert pod != host, text  # it ran from another mount namespace
    assert f"Staged {b} as transition {entry['id']} (the running kernel: a fast reboot)" in text
    assert rc in (None, 0), text  # returned 0, or the machine left before it could say
    status_on_b = status(vm)
    assert status_on_b["newer_kernel"] is None and status_on_b["state"] == "idle"


def test_kexec_load_disabled_is_reported_and_fallback_reboots_the_normal_way(
    fleet_vm: GuestVM,
) -> None:
    """No jump: the fallback's real reboot was proven above (Stage refused)."""
    vm = fleet_vm
    last = newest_transition(vm)["id"]
    vm.run("echo 1 > /proc/sys/kernel/kexec_load_disabled")  # as sysctl would; one way
    assert "kexec_load_disabled" in (status(vm)["unsupported"] or "")
    refused = vm.run(["liveupctl", "reboot"], check=False)  # without --fallback: exit 5
    assert refused.rc == 5, refused.stderr
    fallback = vm.run(
        ["liveupctl", "reboot", "--fallback"], env={"LIVEUPCTL_FALLBACK_COMMAND": "true"}
    )
    assert "liveupctl: kexec cannot work on this machine: kexec is disabled" in fallback.stderr
    assert "rebooting the normal way (true)" in fallback.stderr, fallback.stderr
    assert newest_transition(vm)["id"] == last  # nothing staged


# ------------------------------------------------------------------ memory --

MEMORY_MARGIN = 64 << 20  # liveupd/kernel/preflight.py: kept available after a load


def available(vm: GuestVM) -> int:
    meminfo = vm.read_text("/proc/meminfo")
    kib = next(int(ln.split()[1]) for ln in meminfo.splitlines() if ln.startswith("MemAvailable:"))
    return kib << 10


def pin_memory(vm: GuestVM, keep_available: int) -> int:
    """Reserve hugepages until about ``keep_available`` bytes are left available; the
    bytes pinned. A reboot gives them back (the pool is not persistent)."""
    page = 2 << 20
    pages = max(0, (available(vm) - keep_available) // page)
    vm.run(f"echo {pages} > /proc/sys/vm/nr_hugepages")
    got = int(vm.read_text("/proc/sys/vm/nr_hugepages"))
    assert available(vm) < keep_available + (32 << 20), (pages, got, available(vm))
    return got * page

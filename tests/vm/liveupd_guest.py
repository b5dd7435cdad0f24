"""liveupd inside a guest: install, configure, stage, execute, and read back facts.

Helpers the end-to-end scenarios share.  Everything goes through what a user
would use: ``liveupctl``, ``busctl`` on the real system bus, files under /etc.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from tests.vm.guest_vm import GuestVM
from tests.vm.qemu import NIC_MAC, NIC_PCI_ADDRESS

NAME = "org.liveupd.LiveUpdate1"
PATH = "/org/liveupd/LiveUpdate1"
MANAGER = "org.liveupd.LiveUpdate1.Manager"
STATE_DIR = "/var/lib/liveupd"
HOOK_DIR = "/etc/liveupd/hooks.d"
DROPIN_DIR = "/etc/liveupd/liveupd.conf.d"
PAYLOAD = "/data/payload"


def install(vm: GuestVM) -> None:
    """Install the working tree's .deb (apt-get install ./liveupd_*.deb; verify unit enabled)."""
    vm.install_project()
    enabled = vm.run(["systemctl", "is-enabled", "liveupd-verify.service"], check=False)
    assert enabled.stdout.strip() == "static", enabled.stdout
    wants = vm.run(["systemctl", "show", "-P", "Wants", "sysinit.target"]).stdout.split()
    assert "liveupd-verify.service" in wants


def restart_daemon(vm: GuestVM) -> None:
    """Make the daemon re-read its configuration (it is bus-activated on the next call)."""
    vm.run(["systemctl", "stop", "liveupd.service"], timeout=300)


def write_hook(vm: GuestVM, name: str, body: str) -> None:
    """Install an admin hook manifest /etc/liveupd/hooks.d/NAME.hook (root-owned, 0644)."""
    vm.run(["mkdir", "-p", HOOK_DIR])
    vm.write_file(f"{HOOK_DIR}/{name}.hook", body, mode=0o644)


def remove_hooks(vm: GuestVM, *names: str) -> None:
    vm.run(["rm", "-f", *(f"{HOOK_DIR}/{n}.hook" for n in names)])


def write_dropin(vm: GuestVM, name: str, body: str) -> None:
    vm.run(["mkdir", "-p", DROPIN_DIR])
    vm.write_file(f"{DROPIN_DIR}/{name}.conf", body, mode=0o644)


def sh_hook(phase: str, script: str, *, undo: str | None = None, extra: str = "") -> str:
    """A manifest running ``script`` through /bin/sh."""
    lines = [f'phase = "{phase}"', f"run = {json.dumps(['/bin/sh', '-c', script])}"]
    if undo is not None:
        lines.append(f"undo = {json.dumps(['/bin/sh', '-c', undo])}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def ctl_json(vm: GuestVM, *args: str, user: str | None = None) -> Any:
    return json.loads(vm.run(["liveupctl", *args, "--json"], user=user, timeout=300).stdout)


def history(vm: GuestVM, limit: int = 0) -> list[dict[str, Any]]:
    args = ["history"] + (["--limit", str(limit)] if limit else [])
    entries: list[dict[str, Any]] = ctl_json(vm, *args)
    return entries


def kexec_loaded(vm: GuestVM) -> bool:
    return vm.read_text("/sys/kernel/kexec_loaded").strip() == "1"


def wait_verified(vm: GuestVM) -> str:
    """Wait for liveupd-verify.service to finish on this boot; its ActiveState.

    Its start job is in the boot's transaction, so a transient unit ordered after it
    starts once that job has ended: systemd does the waiting, where a loop of
    `systemctl show` (0.35 s each under TCG) would take CPU from the verification.
    """
    vm.run(
        [
            "systemd-run",
            "--wait",
            "--quiet",
            "--collect",
            "--property=After=liveupd-verify.service",
            "true",
        ],
        timeout=600,
    )
    return vm.run(
        ["systemctl", "show", "-P", "ActiveState", "liveupd-verify.service"]
    ).stdout.strip()


# ------------------------------------------------------------------ facts ----


@dataclass(frozen=True)
class NicState:
    driver: str | None  # the driver bound to the virtio device under the NIC's PCI function
    ifname: str | None
    mac: str | None


def nic(vm: GuestVM) -> NicState:
    out = vm.run(
        f"""
        dev=/sys/bus/pci/devices/{NIC_PCI_ADDRESS}
        for v in $dev/virtio*; do
            [ -e "$v/driver" ] && basename "$(readlink "$v/driver")" || echo -
            for n in $v/net/*; do
                if [ -e "$n" ]; then echo "$(basename $n) $(cat $n/address)"; fi
            done
        done
        true
        """
    ).stdout.split()
    driver = out[0] if out and out[0] != "-" else None
    ifname, mac = (out[1], out[2]) if len(out) >= 3 else (None, None)
    return NicState(driver, ifname, mac)


def nic_is_back(vm: GuestVM) -> bool:
    state = nic(vm)
    return state.driver == "virtio_net" and state.mac == NIC_MAC


def write_payload(vm: GuestVM) -> str:
    """Write 1 MiB to /data through the page cache (no sync); return its SHA-256."""
    out = vm.run(
        f"dd if=/dev/urandom of={PAYLOAD} bs=64k count=16 status=none && sha256sum {PAYLOAD}"
    )
    return out.stdout.split()[0]


def payload_sum(vm: GuestVM) -> str | None:
    result = vm.run(["sha256sum", PAYLOAD], check=False)
    return result.stdout.split()[0] if result.ok else None


def journal_recovery_lines(vm: GuestVM) -> tuple[list[str], list[str]]:
    """(ext4 mount lines, ext4 journal recovery lines) from this boot's kernel log."""
    lines = vm.run("dmesg | grep 'EXT4-fs (vd'", check=False).stdout.splitlines()
    mounts = [line for line in lines if "mounted filesystem" in line]
    recoveries = [line for line in lines if "recovery" in line]
    return mounts, recoveries


def writable(vm: GuestVM, path: str) -> bool:
    """A write to ``path`` finishes (a frozen filesystem would block it)."""
    probe = f"{path}/.liveupd-writable-probe"
    result = vm.run(
        f"echo x > {shlex.quote(probe)} && sync -f {shlex.quote(probe)} && rm {shlex.quote(probe)}",
        timeout=30,
        check=False,
    )
    return result.ok


def transition_log(vm: GuestVM, tid: str) -> list[dict[str, Any]]:
    text = vm.read_text(f"{STATE_DIR}/transitions/{tid}/log.jsonl")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def busctl(vm: GuestVM, method: str, signature: str = "", *args: str, **kw: Any) -> str:
    argv = ["busctl", "call", NAME, PATH, MANAGER, method]
    if signature:
        argv += [signature, *args]
    return vm.run(argv, **kw).stdout

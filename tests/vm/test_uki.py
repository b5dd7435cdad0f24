"""End-to-end: a live update into kernel B delivered as a unified kernel image.

The UKI is built on the host as systemd documents building one by hand: the
sections objcopy'd onto Debian's systemd stub (systemd-boot-efi), with kernel
B's own vmlinuz and initrd (``vm_image.kernel_b``'s copies, whatever the
guest's kernel packaging), a ``.ucode`` cpio before the initrd, ``.uname``,
``.osrel`` and a ``.cmdline``: the guest's command line plus a marker word.  It
reaches the guest on an extra read-only virtio disk (15 MB through the agent
took 8 minutes under TCG), is copied to /boot/EFI/Linux/, where systemd-boot
looks for type #2 entries, and staged by release.  The new kernel must run with
exactly the UKI's command line plus liveupd's transition id (read back from
/proc/cmdline), and verification must pass.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kernels import Unavailable, newc_cpio, objcopy_uki
from tests.vm import liveupd_guest as g
from tests.vm.guest_vm import GuestVM
from tests.vm.image import GuestImage

UKI_DIR = "/boot/EFI/Linux"  # a type #2 directory under the default kernel.allowed-dirs
UKI_SERIAL = "liveupd-uki"  # the extra disk that carries the UKI into the guest
UKI_PCI = "0x8"  # the harness's devices end at 0x7 (qemu.py)


@dataclass(frozen=True)
class UkiGuest:
    vm: GuestVM
    uki: Path  # on the host
    cmdline: str  # the UKI's .cmdline


def uki_cmdline(running: str, marker: str) -> str:
    """The guest's command line without what a boot loader or liveupd adds, plus a marker."""
    words = [
        w
        for w in running.split()
        if not w.startswith(("BOOT_IMAGE=", "initrd=", "liveupd.transition="))
    ]
    return " ".join([*words, marker])


def build_uki(image: GuestImage, out: Path, cmdline: str) -> Path:
    """Kernel B as a UKI on Debian's systemd stub, from the image's own copies of B."""
    b = image.kernel_b
    ucode = newc_cpio({"kernel/x86/microcode/liveupd-test.bin": b"\0" * 64})
    sections = [
        (".osrel", b'ID=debian\nPRETTY_NAME="liveupd test UKI"\n'),
        (".cmdline", cmdline.encode()),
        (".uname", b.release.encode()),
        (".ucode", ucode),
        (".initrd", b.initrd.read_bytes()),
        (".linux", b.vmlinuz.read_bytes()),
    ]
    try:
        return objcopy_uki(out, sections)
    except Unavailable as e:
        pytest.fail(f"cannot build the UKI on the host: {e} (make setup installs both)")


@pytest.fixture(scope="module")
def guest(
    vm_image: GuestImage, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UkiGuest]:
    """Kernel A booted with the UKI on an extra read-only disk (the agent is slow for 15 MB)."""
    tmp = tmp_path_factory.mktemp("uki")
    disk = tmp / "uki.disk"
    vm = GuestVM(
        vm_image,
        kernel=vm_image.kernel_a.release,
        extra_qemu_args=(
            "-drive",
            f"file={disk},format=raw,if=none,id=uki,readonly=on",
            "-device",
            f"virtio-blk-pci,drive=uki,addr={UKI_PCI},serial={UKI_SERIAL}",
        ),
        installed=True,
    )
    cmdline = uki_cmdline(vm.append, f"liveupd.test-uki={secrets.token_hex(4)}")
    uki = build_uki(vm_image, tmp / f"liveupd-test-{vm_image.kernel_b.release}.efi", cmdline)
    data = uki.read_bytes()
    disk.write_bytes(data + bytes(-len(data) % 512))
    failed_before = request.session.testsfailed
    try:
        vm.start()
        g.install(vm)
        yield UkiGuest(vm, uki, cmdline)
    finally:
        failed = request.session.testsfailed > failed_before
        if failed:
            print(vm.failure_report(journal=True), flush=True)
        vm.stop()
        if not failed:
            vm.cleanup()


def copy_in(vm: GuestVM, uki: Path, dest: str) -> None:
    """The UKI from the extra disk into ``dest`` (root-owned, 0644), checked by SHA-256."""
    size = uki.stat().st_size
    vm.run(["install", "-d", "-m", "0755", UKI_DIR])
    vm.run(
        f"""
        for d in /sys/block/vd*; do
            [ "$(cat "$d/serial" 2>/dev/null)" = {UKI_SERIAL} ] && dev=/dev/${{d##*/}}
        done
        [ -n "$dev" ] || {{ echo "no disk with serial {UKI_SERIAL}" >&2; exit 1; }}
        head -c {size} "$dev" > {dest}.tmp && chmod 0644 {dest}.tmp && mv {dest}.tmp {dest}
        """
    )
    copied = vm.run(["sha256sum", dest]).stdout.split()[0]
    assert copied == hashlib.sha256(uki.read_bytes()).hexdigest()


def test_live_update_into_a_uki_boots_its_own_command_line(
    guest: UkiGuest, vm_image: GuestImage
) -> None:
    vm, cmdline = guest.vm, guest.cmdline
    b = vm_image.kernel_b.release
    start = time.monotonic()

    def step(what: str) -> None:
        print(f"[uki] {what} after {time.monotonic() - start:.1f} s", flush=True)

    running = vm.read_text("/proc/cmdline").strip()
    assert cmdline != running and cmdline.startswith(running)
    path = f"{UKI_DIR}/{guest.uki.name}"
    copy_in(vm, guest.uki, path)
    step(f"copied {guest.uki.name} ({guest.uki.stat().st_size >> 10} KiB) into the guest")

    # Listed beside the plain kernels; B's entry is the UKI (a UKI wins a release).
    kernels = g.ctl_json(vm, "kernels")
    [entry] = [k for k in kernels if k["release"] == b]
    assert entry["source"] == "uki" and entry["kernel"] == path, kernels
    assert entry["stageable"] and entry["latest"], entry
    assert entry["image"] == "unified kernel image holding bzImage", entry
    text = vm.run(["liveupctl", "kernels"]).stdout
    assert f"> {b}" in text and path in text, text
    step("listed")

    staged = vm.run(["liveupctl", "stage", b], timeout=300)
    assert f"Staged {b}" in staged.stdout, staged.stdout
    assert g.kexec_loaded(vm)
    tid = g.history(vm, limit=1)[0]["id"]
    [resolved] = [e for e in g.transition_log(vm, str(tid)) if e["event"] == "kernel.resolved"]
    assert resolved["kernel"] == path and resolved["initrd"] is None, resolved
    assert resolved["initrd_parts"] == [".ucode", ".initrd"], resolved
    assert resolved["cmdline"] == f"{cmdline} liveupd.transition={tid}", resolved
    step("staged")

    old = vm.boot_info()
    payload = g.write_payload(vm)
    vm.spawn("liveupctl exec >/run/liveupctl-exec.log 2>&1")
    new = vm.wait_for_new_boot(old.boot_id)
    step("up on the new kernel")
    assert new.release == b and new.boot_id != old.boot_id
    # The new kernel runs with the UKI's own command line, not the one it was staged from.
    assert vm.read_text("/proc/cmdline").strip() == f"{cmdline} liveupd.transition={tid}"
    assert g.wait_verified(vm) == "active", vm.run(
        "journalctl -b -u liveupd-verify --no-pager -o cat", check=False
    ).stdout
    [done] = g.history(vm, limit=1)
    assert done["id"] == tid and done["state"] == "completed", json.dumps(done)
    assert done["new_release"] == b
    assert g.payload_sum(vm) == payload
    # .ucode (an uncompressed cpio) and the gzip'd .initrd after it both unpacked.
    unpack = vm.run("dmesg | grep -i 'initramfs unpacking failed'", check=False)
    assert unpack.stdout == "", unpack.stdout

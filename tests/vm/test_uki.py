"""End-to-end: a live update into kernel B delivered as a unified kernel image.

The UKI is built on the host as systemd documents building one by hand: the
sections objcopy'd onto Debian's systemd stub (systemd-boot-efi), with kernel
B's own vmlinuz and initrd (``vm_image.kernel_b``, whatever the guest's kernel
packaging), a ``.ucode`` cpio before the initrd, ``.uname``, ``.osrel`` and a
``.cmdline`` that differs from the running one by a marker word.  It is put
where systemd-boot looks for type #2 entries, /boot/EFI/Linux/, and staged by
release.  The new kernel must run with exactly the UKI's command line plus
liveupd's transition id (read back from /proc/cmdline), and verification must
pass.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernels import Unavailable, newc_cpio, objcopy_uki
from tests.vm import liveupd_guest as g
from tests.vm.guest_vm import GuestVM
from tests.vm.image import GuestImage
from tests.vm.shared import module_guest

UKI_DIR = "/boot/EFI/Linux"  # a type #2 directory under the default kernel.allowed-dirs


@pytest.fixture(scope="module")
def guest(vm_image: GuestImage, request: pytest.FixtureRequest) -> Iterator[GuestVM]:
    with module_guest(vm_image, request) as vm:
        g.install(vm)
        yield vm


def uki_cmdline(running: str, marker: str) -> str:
    """The running command line without what a boot loader or liveupd adds, plus a marker."""
    words = [
        w
        for w in running.split()
        if not w.startswith(("BOOT_IMAGE=", "initrd=", "liveupd.transition="))
    ]
    return " ".join([*words, marker])


def build_uki(vm: GuestVM, image: GuestImage, tmp: Path, cmdline: str) -> Path:
    b = image.kernel_b
    osrel = vm.read_file("/etc/os-release")
    ucode = newc_cpio({"kernel/x86/microcode/liveupd-test.bin": b"\0" * 64})
    sections = [
        (".osrel", osrel),
        (".cmdline", cmdline.encode()),
        (".uname", b.release.encode()),
        (".ucode", ucode),
        (".initrd", b.initrd.read_bytes()),
        (".linux", b.vmlinuz.read_bytes()),
    ]
    try:
        return objcopy_uki(tmp / f"liveupd-test-{b.release}.efi", sections)
    except Unavailable as e:
        pytest.fail(f"cannot build the UKI on the host: {e} (make setup installs both)")


def test_live_update_into_a_uki_boots_its_own_command_line(
    guest: GuestVM, vm_image: GuestImage, tmp_path: Path
) -> None:
    vm = guest
    b = vm_image.kernel_b.release
    start = time.monotonic()

    def step(what: str) -> None:
        print(f"[uki] {what} after {time.monotonic() - start:.1f} s", flush=True)

    running = vm.read_text("/proc/cmdline").strip()
    marker = f"liveupd.test-uki={secrets.token_hex(4)}"
    cmdline = uki_cmdline(running, marker)
    assert cmdline != running
    uki = build_uki(vm, vm_image, tmp_path, cmdline)
    path = f"{UKI_DIR}/{uki.name}"
    vm.run(["install", "-d", "-m", "0755", UKI_DIR])
    vm.write_file(path, uki.read_bytes(), mode=0o644)
    step(f"built {uki.name} ({uki.stat().st_size >> 10} KiB) and copied it into the guest")

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

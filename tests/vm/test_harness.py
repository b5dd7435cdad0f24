"""Self-test of the VM harness: one guest, booted once, walked through every channel.

In order, on one QEMU process (a chain saves boots):
    boot on kernel A -> agent, data disk, network, file transfer
    -> what the project's .deb installed (the disk was made by a real
       ``apt-get install ./liveupd_*.deb``: tests/vm/project.py installed_root)

Following a guest across a kexec is exercised by every live update
(test_live_update.py and the rest); a kexec without liveupd (Debian's
kexec-tools) is the control in `make bench`.

A kernel package installed with apt in the guest and a firmware reboot through
SeaBIOS are exercised by test_fleet.py (auto-stage on install; reboot --fallback).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

import pytest

from tests.vm.guest_vm import GuestVM
from tests.vm.image import GuestImage
from tests.vm.qemu import NIC_MAC, NIC_PCI_ADDRESS
from tests.vm.recipe import DATA_LABEL
from tests.vm.shared import module_guest


@pytest.fixture(scope="module")
def chain_vm(vm_image: GuestImage, request: pytest.FixtureRequest) -> Iterator[GuestVM]:
    with module_guest(vm_image, request) as vm:
        yield vm


def test_boots_kernel_a_and_agent_answers(chain_vm: GuestVM, vm_image: GuestImage) -> None:
    vm = chain_vm
    info = vm.boot_info()
    assert info.release == vm_image.kernel_a.release
    assert vm.run("uname -r").stdout.strip() == vm_image.kernel_a.release
    boot_id = vm.read_text("/proc/sys/kernel/random/boot_id").strip()
    assert boot_id == info.boot_id
    assert vm.console is not None
    assert [m.boot_id for m in vm.console.markers] == [boot_id]
    print(f"\n[harness] boot to marker: {vm.boot_seconds:.1f} s, guest uptime {info.uptime:.1f} s")


def test_agent_operations(chain_vm: GuestVM) -> None:
    vm = chain_vm
    tester = vm.run(["id", "-u"], user="tester")
    assert tester.stdout.strip() == "1000"
    assert vm.run("echo $HOME; pwd", user="tester").stdout.split() == ["/home/tester"] * 2

    failed = vm.run("echo out; echo err >&2; exit 3", check=False)
    assert (failed.rc, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
    assert vm.run(["cat"], input=b"\x00\xffbinary").stdout_bytes == b"\x00\xffbinary"
    assert vm.run("echo $FOO", env={"FOO": "bar"}).stdout == "bar\n"
    slow = vm.run(["sleep", "30"], timeout=1, check=False)
    assert slow.timed_out and slow.rc is None

    payload = bytes(range(256)) * 1000
    vm.write_file("/data/blob", payload, mode=0o600, user="tester")
    assert vm.read_file("/data/blob") == payload
    assert vm.run("stat -c '%a %U' /data/blob").stdout.strip() == "600 tester"

    unit = vm.spawn("echo spawned > /run/spawned")
    vm.run(f"while systemctl is-active -q {shlex.quote(unit)}; do sleep 0.1; done", timeout=60)
    assert vm.read_text("/run/spawned") == "spawned\n"


def test_data_disk_and_network(chain_vm: GuestVM) -> None:
    vm = chain_vm
    src, fstype, label = vm.run("findmnt -n -o SOURCE,FSTYPE,LABEL /data").stdout.split()
    assert (fstype, label) == ("ext4", DATA_LABEL)
    assert src == "/dev/vdb"

    dev = f"/sys/bus/pci/devices/{NIC_PCI_ADDRESS}"
    driver = vm.run(f"basename $(readlink {dev}/driver)").stdout.strip()
    assert driver == "virtio-pci"
    ifname = vm.run(f"ls {dev}/virtio*/net/").stdout.strip()
    assert vm.read_text(f"/sys/class/net/{ifname}/address").strip() == NIC_MAC
    # systemd-networkd's own wait: no polling here.
    vm.run(["/lib/systemd/systemd-networkd-wait-online", "-i", ifname, "--timeout=120"])
    route = vm.run(["ip", "-o", "route", "show", "default"]).stdout
    assert f"dev {ifname}" in route and "via 10.0.2.2" in route


def test_install_project(chain_vm: GuestVM) -> None:
    """The disk this guest boots was made by ``apt-get install ./liveupd_*.deb`` of this
    tree's package in a guest of the image (project.installed_root; a failed install
    fails the build of that disk): what a user's install leaves behind is checked here."""
    vm = chain_vm
    vm.install_project()  # finds this very package installed (its marker), or installs it
    vm.run(["python3", "-c", "import liveupd"])
    vm.run(["test", "-x", "/usr/bin/liveupctl"])
    # The runtime dependencies are Debian's packages, baked into the image (no network
    # in the guest), nothing from pip.
    deps = vm.run(
        ["dpkg-query", "-W", "-f=${Package} ${Version}\n", "python3-dbus-fast", "python3-cffi"]
    ).stdout
    print(f"\n[harness] guest dependencies:\n{deps}")
    pip_installed = vm.run("ls /usr/local/lib/python3*/dist-packages 2>/dev/null | wc -l")
    assert pip_installed.stdout.strip() == "0"
    vm.run(["python3", "-c", "import dbus_fast, pyudev, psutil, _cffi_backend"])


def test_the_package_brings_man_pages_and_completions(
    chain_vm: GuestVM, vm_image: GuestImage
) -> None:
    """What a user of the .deb reads and types: man pages render, completion works."""
    vm = chain_vm
    # Plain ASCII (LC_ALL=C), wide enough that no word is hyphenated at a line end.
    env = {"MANWIDTH": "250", "MANPAGER": "cat", "LC_ALL": "C"}
    for args, expect in (
        (["liveupctl"], "--no-ask-password"),
        (["8", "liveupd"], "org.liveupd.LiveUpdate1.Manager"),
        (["5", "liveupd.conf"], "history-limit"),
        (["5", "liveupd.hook"], "LIVEUPD_STATE_DIR"),
    ):
        page = vm.run(["man", *args], env=env).stdout
        assert expect in " ".join(page.split()), (args, page[:500])
    a, b = vm_image.kernel_a.release, vm_image.kernel_b.release
    completion = vm.run(
        [
            "bash",
            "-c",
            "source /usr/share/bash-completion/bash_completion; "
            "source /usr/share/bash-completion/completions/liveupctl; "
            "COMP_WORDS=(liveupctl stage ''); COMP_CWORD=2; COMP_LINE='liveupctl stage '; "
            "COMP_POINT=${#COMP_LINE}; _liveupctl liveupctl '' stage; "
            'printf "%s\\n" "${COMPREPLY[@]}"; '
            "COMP_WORDS=(liveupctl st); COMP_CWORD=1; COMP_LINE='liveupctl st'; "
            "COMP_POINT=${#COMP_LINE}; _liveupctl liveupctl st liveupctl; "
            'printf "%s\\n" "${COMPREPLY[@]}"',
        ]
    ).stdout.split()
    assert sorted(completion) == sorted([a, b, "stage", "status"]), completion
    releases = vm.run(
        [
            "zsh",
            "-f",
            "-c",
            '_wanted() { shift 3; "$@"; }; compadd() { print -l -- ${(P)3}; }; '
            "source <(sed -n '/^_liveupctl_releases()/,/^}/p' "
            "/usr/share/zsh/vendor-completions/_liveupctl); _liveupctl_releases",
        ]
    ).stdout.split()
    assert sorted(releases) == sorted([a, b]), releases

"""Fixtures for the kernel tests: a fake machine root and a fake kernel behind cffi.

``machine`` is a tmp directory laid out like / for the files preflight and the
loader read (sys/kernel/kexec_loaded, proc/...).  ``fake_kernel`` replaces
libc's syscall() at the cffi boundary: it receives the same cdata the real
call would, decodes it, looks at the descriptors it was handed (fstat and the
first bytes, as the kernel would read them), keeps kexec_loaded in the fake
root up to date, and fails with a programmed errno the way the real one does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from liveupd.config import Config
from liveupd.config.load import load_config
from liveupd.kernel import syscalls
from liveupd.kernel.arch import ARCHES, Arch


class Machine:
    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink()

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path / "root")
    m.write("proc/sys/kernel/osrelease", "6.1.0-55-cloud-amd64\n")
    m.write("sys/kernel/kexec_loaded", "0\n")
    m.write("proc/sys/kernel/kexec_load_disabled", "0\n")
    m.write("proc/self/status", "Name:\tliveupd\nCapEff:\t000001ffffffffff\n")
    m.write("proc/self/uid_map", "         0          0 4294967295\n")
    m.write("proc/meminfo", "MemTotal: 4000000 kB\nMemAvailable: 3000000 kB\n")
    m.write("sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
    m.write("proc/1/environ", b"PATH=/usr/bin\0HOME=/\0")
    return m


@dataclass
class Call:
    number: int
    args: list[Any]


@dataclass
class LoadSeen:
    """What the fake kernel saw in one kexec_file_load call."""

    kernel_fd: int
    initrd_fd: int
    cmdline: bytes | None
    cmdline_len: int
    flags: int
    kernel_stat: os.stat_result | None
    kernel_head: bytes
    initrd_stat: os.stat_result | None


@dataclass
class FakeKernel:
    machine: Machine
    calls: list[Call] = field(default_factory=list)
    loads: list[LoadSeen] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # "load" | "unload" | "reboot" -> errno
    rebooted: bool = False

    def __call__(self, *cargs: Any) -> int:
        f = syscalls.ffi()
        number = int(cargs[0])
        for a in cargs:
            # The real syscall() is variadic: every argument must be typed cdata.
            assert isinstance(a, f.CData), f"untyped argument {a!r}"
        self.calls.append(Call(number, list(cargs[1:])))
        x86 = ARCHES[Arch.X86_64]
        if number == x86.nr_kexec_file_load:
            kfd, ifd, length, ptr, flags = cargs[1:]
            kfd, ifd, length, flags = int(kfd), int(ifd), int(length), int(flags)
            if flags & syscalls.KexecFileFlag.UNLOAD:
                if "unload" in self.fail:
                    f.errno = self.fail["unload"]
                    return -1
                self.machine.write("sys/kernel/kexec_loaded", "0\n")
                return 0
            if "load" in self.fail:
                f.errno = self.fail["load"]
                return -1
            cmdline = None if ptr == f.NULL else f.string(ptr)
            self.loads.append(
                LoadSeen(
                    kernel_fd=kfd,
                    initrd_fd=ifd,
                    cmdline=cmdline,
                    cmdline_len=length,
                    flags=flags,
                    kernel_stat=os.fstat(kfd),
                    kernel_head=os.pread(kfd, 0x1000, 0),
                    initrd_stat=os.fstat(ifd) if ifd >= 0 else None,
                )
            )
            self.machine.write("sys/kernel/kexec_loaded", "1\n")
            return 0
        if number == x86.nr_reboot:
            if "reboot" in self.fail:
                f.errno = self.fail["reboot"]
                return -1
            self.rebooted = True
            return 0
        f.errno = 38  # ENOSYS
        return -1


@pytest.fixture
def fake_kernel(machine: Machine) -> Iterator[FakeKernel]:
    fake = FakeKernel(machine)
    with syscalls.inject(fake):
        yield fake


@pytest.fixture
def kconfig(tmp_path: Path, boot_dir: Path) -> Config:
    """Config with the allowed dir = boot_dir (two constructed kernels installed)."""
    conf = tmp_path / "kernel.conf"
    conf.write_text(
        f'[kernel]\nallowed-dirs = ["{boot_dir}"]\n[daemon]\nstate-dir = "{tmp_path / "state"}"\n'
    )
    return load_config(conf)


def config_for(tmp_path: Path, dirs: list[Path], signature: str = "auto") -> Config:
    conf = tmp_path / "kernel-extra.conf"
    listed = ", ".join(f'"{d}"' for d in dirs)
    conf.write_text(
        f'[kernel]\nallowed-dirs = [{listed}]\nsignature = "{signature}"\n'
        f'[daemon]\nstate-dir = "{tmp_path / "state"}"\n'
    )
    return load_config(conf)

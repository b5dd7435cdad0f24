"""Naming the processes that hold a device open; link up/down through the ioctls."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from liveupd.devices import link
from liveupd.devices.holders import holders


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()  # bounded by the test's timeout


def test_a_process_holding_the_node_open_is_named() -> None:
    # /dev/null stands in for a device node: a character device anyone can open.
    code = "import sys,time; f=open('/dev/null'); print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert first_line(proc) == "ready"
        found = holders(["/dev/null"])
        assert any(h.endswith(f"(pid {proc.pid})") for h in found), found
        # Another node (a different device number) is not held by it.
        assert not any(h.endswith(f"(pid {proc.pid})") for h in holders(["/dev/zero"]))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    assert not any(h.endswith(f"(pid {proc.pid})") for h in holders(["/dev/null"]))


def test_no_node_no_holders() -> None:
    assert holders([]) == []
    assert holders(["/nonexistent/node"]) == []


class FakeIoctl:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.calls: list[tuple[int, bytes]] = []

    def __call__(self, fd: int, request: int, arg: bytes) -> bytes:
        self.calls.append((request, arg))
        name = arg[:16].rstrip(b"\0")
        if name != b"eth0":
            raise OSError(errno.ENODEV, "No such device")
        if request == link.SIOCSIFFLAGS:
            self.flags = int.from_bytes(arg[16:18], sys.byteorder)
        return arg[:16] + self.flags.to_bytes(2, sys.byteorder) + bytes(22)


def test_link_down_clears_only_iff_up() -> None:
    ioctl = FakeIoctl(0x1043)  # UP | RUNNING | MULTICAST | ...
    link.set_link("eth0", False, ioctl=ioctl)
    assert ioctl.flags == 0x1042
    assert [c[0] for c in ioctl.calls] == [link.SIOCGIFFLAGS, link.SIOCSIFFLAGS]
    assert len(ioctl.calls[1][1]) == 40  # a whole struct ifreq
    link.set_link("eth0", True, ioctl=ioctl)
    assert ioctl.flags == 0x1043


def test_link_already_in_state_is_not_written() -> None:
    ioctl = FakeIoctl(0x1002)
    link.set_link("eth0", False, ioctl=ioctl)
    assert [c[0] for c in ioctl.calls] == [link.SIOCGIFFLAGS]


def test_link_errors_keep_their_errno() -> None:
    with pytest.raises(OSError) as e:
        link.set_link("eth9", False, ioctl=FakeIoctl(0))
    assert e.value.errno == errno.ENODEV
    with pytest.raises(ValueError, match="not a valid interface name"):
        link.set_link("a" * 16, False, ioctl=FakeIoctl(0))


def test_reading_the_loopback_flags_is_real_and_harmless() -> None:
    assert link.is_up("lo") in (True, False)
    assert link.get_flags("lo") & 0x8  # IFF_LOOPBACK

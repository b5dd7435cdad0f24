"""The mount table parser and the freeze plan (pure)."""

from __future__ import annotations

import pytest

from liveupd.backends.base import Mount
from liveupd.errors import InvalidArgument
from liveupd.storage.mounts import parse_mountinfo
from liveupd.storage.plan import plan_freeze
from tests.devices.fakes import mounts

MOUNTINFO = r"""
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
25 22 0:25 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=100k,mode=755
30 22 254:16 / /data rw,relatime shared:20 - ext4 /dev/vdb rw
31 22 254:16 /export /srv/export rw,relatime shared:20 - ext4 /dev/vdb rw
32 22 0:45 / /home rw,relatime shared:21 - btrfs /dev/vdc rw,space_cache=v2
33 22 254:32 / /mnt/my\040disk ro,relatime shared:22 - ext4 /dev/vdd ro
34 22 0:50 / /var/lib/containers/merged rw,relatime - overlay overlay rw,lowerdir=/a
35 22 254:48 / /backup rw,relatime shared:23 - xfs /dev/vde ro
"""


def parsed() -> list[Mount]:
    return parse_mountinfo(MOUNTINFO, is_block=lambda src: src == "/dev/vdc")


def test_mountinfo_fields() -> None:
    by_point = {m.mountpoint: m for m in parsed()}
    assert by_point["/"] == Mount("/", "ext4", "/dev/vda1", True, True, "254:1")
    assert by_point["/run"] == Mount("/run", "tmpfs", "tmpfs", True, False, "0:25")
    # btrfs reports an anonymous device number: block-backed through its source.
    assert by_point["/home"].block_backed and by_point["/home"].device == "0:45"
    # Octal escapes in paths; the filesystem's own (superblock) read-only flag counts.
    assert not by_point["/mnt/my disk"].writable
    assert not by_point["/backup"].writable
    assert by_point["/srv/export"].device == by_point["/data"].device


def test_a_read_only_view_of_a_writable_filesystem_is_synced_and_frozen() -> None:
    """The daemon's sandbox (ProtectSystem=strict) shows it every mount read-only,
    except its state directory: the filesystems still have writers elsewhere."""
    sandboxed = """\
22 1 254:1 / / ro,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
30 22 254:16 / /data ro,relatime shared:20 - ext4 /dev/vdb rw
40 22 254:1 /var/lib/liveupd /var/lib/liveupd rw,relatime shared:1 - ext4 /dev/vda1 rw
"""
    mounts = parse_mountinfo(sandboxed)
    assert all(m.writable for m in mounts)
    plan = plan_freeze(mounts, "auto", "/var/lib/liveupd")
    assert plan.freeze == ("/data", "/") and plan.state_mount == "/"
    assert set(plan.sync) == {"/", "/data", "/var/lib/liveupd"}


def test_a_bad_line_names_itself() -> None:
    with pytest.raises(ValueError, match="not a mountinfo line"):
        parse_mountinfo("22 1 254:1 / / rw")


def test_auto_freezes_local_writable_filesystems_root_last() -> None:
    plan = plan_freeze(parsed(), "auto", "/run/liveupd-state")  # state dir not frozen
    assert plan.freeze == ("/data", "/home", "/")
    assert plan.state_mount is None
    skipped = dict(plan.skipped)
    assert skipped["/run"] == "tmpfs cannot be frozen"
    assert skipped["/var/lib/containers/merged"] == "overlay cannot be frozen"
    assert skipped["/srv/export"] == "same filesystem as another mount point"
    assert "/proc" not in skipped and "/sys" not in skipped  # kernel interfaces, not storage
    assert "/mnt/my disk" not in skipped  # read-only: nothing to freeze, nothing to say
    assert set(plan.sync) == {"/", "/data", "/srv/export", "/home"}


def test_the_state_directory_filesystem_is_frozen_last_of_all() -> None:
    plan = plan_freeze(parsed(), "auto", "/data/liveupd")
    assert plan.freeze == ("/home", "/", "/data")
    assert plan.state_mount == "/data"
    plan = plan_freeze(parsed(), "auto", "/var/lib/liveupd")
    assert plan.freeze[-1] == "/" and plan.state_mount == "/"


def test_a_state_directory_on_a_bind_mount_is_found_by_device() -> None:
    # /srv/export is a second mount of /data's filesystem: freezing /data freezes it.
    plan = plan_freeze(parsed(), "auto", "/srv/export/liveupd")
    assert plan.freeze[-1] == "/data" and plan.state_mount == "/data"


def test_explicit_list_reports_what_cannot_be_frozen() -> None:
    plan = plan_freeze(mounts(), ["/run", "/", "/merged", "/data"], "/var/lib/liveupd")
    assert plan.freeze == ("/data", "/")
    assert dict(plan.skipped) == {
        "/run": "tmpfs cannot be frozen",
        "/merged": "overlay cannot be frozen",
    }


def test_explicit_list_naming_an_unmounted_path_is_refused() -> None:
    with pytest.raises(InvalidArgument) as e:
        plan_freeze(mounts(), ["/", "/nope"], "/var/lib/liveupd")
    assert "storage.freeze names /nope, which is not mounted" in e.value.message
    assert 'freeze = "auto"' in e.value.message


def test_empty_list_freezes_nothing_but_still_syncs() -> None:
    plan = plan_freeze(mounts(), [], "/var/lib/liveupd")
    assert plan.freeze == () and plan.state_mount is None
    assert "/" in plan.sync and "/run" not in plan.sync

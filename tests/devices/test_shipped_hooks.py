"""The hooks shipped in hooks.d/: valid manifests, and the network program's behaviour.

The program runs for real here only where it cannot change the machine: in
dry-run mode (LIVEUPD_DRY_RUN=1, it prints the commands) or in ``verify``,
which only reads, against a temporary sysfs tree (LIVEUPD_TEST_SYSFS).
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from liveupd.hooks.manifest import load_manifest
from liveupd.transition.phases import Phase
from tests.devices.tree import ETH0, MAC, build

HOOKS = Path(__file__).resolve().parents[2] / "hooks.d"
INSTALLED = "/usr/lib/liveupd/hooks.d/"
PROGRAM = HOOKS / "network"


def test_manifests_are_valid_and_name_installed_programs_that_ship() -> None:
    manifests = sorted(HOOKS.glob("*.hook"))
    assert [m.name for m in manifests] == [
        "20-network-restore.hook",
        "20-network.hook",
        "50-network-verify.hook",
    ]
    phases = {}
    for path in manifests:
        hook = load_manifest(path)
        phases[hook.name] = hook.phase
        for argv in (hook.manifest.run, hook.manifest.undo):
            if argv is None:
                continue
            assert argv[0].startswith(INSTALLED), argv
            shipped = HOOKS / argv[0].removeprefix(INSTALLED)
            assert shipped.is_file() and os.access(shipped, os.X_OK)
            mode = stat.S_IMODE(shipped.stat().st_mode)
            assert not mode & (stat.S_IWGRP | stat.S_IWOTH)
        assert hook.manifest.description
    assert phases == {
        "20-network": Phase.QUIESCE,
        "20-network-restore": Phase.RESTORE,
        "50-network-verify": Phase.VERIFY,
    }
    assert load_manifest(HOOKS / "20-network.hook").manifest.undo is not None


def hook_env(state: Path, sysfs: Path, *, dry: bool = True) -> dict[str, str]:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LIVEUPD_STATE_DIR": str(state),
        "LIVEUPD_TEST_SYSFS": str(sysfs),
        # The routing tables: procfs() beside sysfs (none unless a test writes them).
        "LIVEUPD_TEST_PROC": str(sysfs.parent / "proc"),
        "LIVEUPD_PHASE": "quiesce",
    }
    if dry:
        env["LIVEUPD_DRY_RUN"] = "1"
    return env


def run(
    args: list[str], state: Path, sysfs: Path, *, dry: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROGRAM), *args],
        env=hook_env(state, sysfs, dry=dry),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    return build(tmp_path / "root") / "sys"


def test_down_saves_the_up_interfaces_and_would_take_them_down(tmp_path: Path, sysfs: Path) -> None:
    state = tmp_path / "hooks" / "20-network"
    out = run(["down"], state, sysfs)
    assert out.returncode == 0, out.stderr
    assert (state / "interfaces").read_text() == f"eth0 {MAC}\n"  # lo has no device: left alone
    assert "would run: ip link set dev eth0 down" in out.stdout


def test_up_finds_the_interface_by_mac_under_its_new_name(tmp_path: Path, sysfs: Path) -> None:
    saved = tmp_path / "hooks" / "20-network"
    saved.mkdir(parents=True)
    (saved / "interfaces").write_text(f"ens3 {MAC.upper()}\n")
    (sysfs.parent / ETH0.lstrip("/") / "flags").write_text("0x1002\n")  # down (IFF_UP clear)
    out = run(["up", "--from", "20-network"], tmp_path / "hooks" / "20-network-restore", sysfs)
    assert out.returncode == 0, out.stderr
    assert "would run: ip link set dev eth0 up" in out.stdout


def test_up_leaves_an_interface_the_boot_brought_up(tmp_path: Path, sysfs: Path) -> None:
    saved = tmp_path / "hooks" / "20-network"
    saved.mkdir(parents=True)
    (saved / "interfaces").write_text(f"eth0 {MAC}\n")  # and eth0 is up (0x1003)
    out = run(["up", "--from", "20-network"], tmp_path / "hooks" / "20-network-restore", sysfs)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"network: eth0 ({MAC}) is up already\n"


def test_up_reports_an_interface_that_is_gone(tmp_path: Path, sysfs: Path) -> None:
    saved = tmp_path / "hooks" / "20-network"
    saved.mkdir(parents=True)
    (saved / "interfaces").write_text("eth9 52:54:00:99:99:99\n")
    out = run(["up", "--from", "20-network"], tmp_path / "hooks" / "20-network-restore", sysfs)
    assert out.returncode == 1
    assert "no interface with MAC 52:54:00:99:99:99 (was eth9)" in out.stderr


def test_verify_passes_when_the_interfaces_are_back(tmp_path: Path, sysfs: Path) -> None:
    saved = tmp_path / "hooks" / "20-network"
    saved.mkdir(parents=True)
    (saved / "interfaces").write_text(f"eth0 {MAC}\n")
    verify = tmp_path / "hooks" / "50-network-verify"
    out = run(["verify", "--from", "20-network", "--wait", "0"], verify, sysfs, dry=False)
    assert out.returncode == 0, out.stderr
    assert "interfaces back" in out.stdout


def test_verify_matches_a_saved_mac_in_any_case(tmp_path: Path, sysfs: Path) -> None:
    saved = tmp_path / "hooks" / "20-network"
    saved.mkdir(parents=True)
    (saved / "interfaces").write_text(f"ens3 {MAC.upper()}\n")  # the kernel prints lower case
    verify = tmp_path / "hooks" / "50-network-verify"
    out = run(["verify", "--from", "20-network", "--wait", "0"], verify, sysfs, dry=False)
    assert out.returncode == 0, out.stderr


ROUTE_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
)
SUBNET_ROUTE = "eth0\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
V4_DEFAULT = "eth0\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
ZERO = "0" * 32
# Every IPv6 table lists a reject route to ::/0 on lo (RTF_REJECT | RTF_NONEXTHOP).
V6_REJECT = f"{ZERO} 00 {ZERO} 00 {ZERO} ffffffff 00000001 00000000 00200200 lo\n"
V6_LINK = f"fe80{'0' * 28} 40 {ZERO} 00 {ZERO} 00000100 00000001 00000000 00000001 eth0\n"
V6_DEFAULT = f"{ZERO} 00 {ZERO} 00 fe80{'0' * 27}2 00000400 00000001 00000000 00000003 eth0\n"


@pytest.mark.parametrize(
    ("route", "ipv6_route", "back"),
    [
        (ROUTE_HEADER + SUBNET_ROUTE + V4_DEFAULT, V6_REJECT + V6_LINK, True),
        (ROUTE_HEADER + SUBNET_ROUTE, V6_REJECT + V6_LINK + V6_DEFAULT, True),
        (ROUTE_HEADER + SUBNET_ROUTE, V6_REJECT + V6_LINK, False),
        # A default route that is not up (RTF_UP clear), a table cut short: none.
        (ROUTE_HEADER + V4_DEFAULT.replace("\t0003\t", "\t0002\t"), "", False),
        (ROUTE_HEADER + "eth0\t00000000\n", f"{ZERO} 00\n", False),
    ],
)
def test_verify_reads_the_default_route_from_the_kernels_tables(
    tmp_path: Path, sysfs: Path, route: str, ipv6_route: str, back: bool
) -> None:
    saved = tmp_path / "hooks" / "20-network"
    saved.mkdir(parents=True)
    (saved / "interfaces").write_text(f"eth0 {MAC}\n")
    (saved / "default-route").write_text("yes\n")  # there was one before the transition
    procfs = sysfs.parent / "proc" / "net"
    procfs.mkdir(parents=True)
    (procfs / "route").write_text(route)
    (procfs / "ipv6_route").write_text(ipv6_route)
    verify = tmp_path / "hooks" / "50-network-verify"
    out = run(["verify", "--from", "20-network", "--wait", "0"], verify, sysfs, dry=False)
    if back:
        assert (out.returncode, out.stdout) == (
            0,
            "network: interfaces back, default route present\n",
        )
    else:
        assert out.returncode == 1
        assert out.stderr == "network: no default route after 0s\n"


def answer_when_read(fifo: Path, text: str) -> None:
    """Block until the hook opens ``fifo`` to read it (it is looking), then give it ``text``."""
    done = threading.Event()

    def writer() -> None:
        with fifo.open("w") as f:
            f.write(text)
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    assert done.wait(30), "the hook did not look at the interface"


def test_verify_looks_again_until_an_interface_comes_back(tmp_path: Path, sysfs: Path) -> None:
    saved = tmp_path / "hooks" / "20-network"
    saved.mkdir(parents=True)
    (saved / "interfaces").write_text(f"eth0 {MAC}\n")
    # eth0's address is a FIFO: each look of the hook blocks until the test answers it.
    address = sysfs.parent / ETH0.lstrip("/") / "address"
    address.unlink()
    os.mkfifo(address)
    env = hook_env(tmp_path / "hooks" / "50-network-verify", sysfs, dry=False)
    args = [str(PROGRAM), "verify", "--from", "20-network", "--wait", "30"]
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True) as proc:
        answer_when_read(address, "52:54:00:00:00:01\n")  # first look: not back yet
        answer_when_read(address, f"{MAC}\n")  # a later look: back
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "interfaces back" in out


def test_verify_fails_naming_what_did_not_come_back(tmp_path: Path, sysfs: Path) -> None:
    saved = tmp_path / "hooks" / "20-network"
    saved.mkdir(parents=True)
    (saved / "interfaces").write_text(f"eth0 {MAC}\n")
    (sysfs.parent / ETH0.lstrip("/") / "address").write_text("52:54:00:00:00:01\n")
    verify = tmp_path / "hooks" / "50-network-verify"
    out = run(["verify", "--from", "20-network", "--wait", "0"], verify, sysfs, dry=False)
    assert out.returncode == 1
    assert f"interfaces missing after 0s: eth0({MAC})" in out.stderr


def test_nothing_saved_nothing_to_do(tmp_path: Path, sysfs: Path) -> None:
    for action in (["up"], ["verify", "--wait", "0"]):
        out = run(action, tmp_path / "hooks" / "20-network", sysfs, dry=False)
        assert out.returncode == 0 and "nothing saved" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage: network"),
        (["sideways"], "unknown action 'sideways'"),
        (["verify", "--wait", "soon"], "--wait expects whole seconds"),
        (["up", "--from"], "--from needs a hook name"),
    ],
)
def test_usage_errors(tmp_path: Path, sysfs: Path, args: list[str], message: str) -> None:
    out = run(args, tmp_path, sysfs)
    assert out.returncode == 1 and message in out.stderr

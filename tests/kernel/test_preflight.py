"""Preflight: facts read from a fake root, and what each one means."""

from __future__ import annotations

import gzip
import os

import pytest

from liveupd.kernel.preflight import (
    Check,
    Severity,
    blockers,
    findings,
    memory_problem,
    parse_lockdown,
    read_facts,
)
from liveupd.kernel.signature import Lockdown, SignaturePolicy
from tests.kernel.conftest import Machine

AUTO, REQUIRE, OFF = SignaturePolicy.AUTO, SignaturePolicy.REQUIRE, SignaturePolicy.OFF
SECURE_BOOT = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def checks(machine: Machine, policy: SignaturePolicy = AUTO) -> dict[Check, str]:
    return {f.check: f.message for f in findings(read_facts(machine.root), policy)}


def test_a_healthy_machine_has_nothing_to_say(machine: Machine) -> None:
    facts = read_facts(machine.root)
    assert facts.release == "6.1.0-55-cloud-amd64"
    assert facts.kexec_loaded is False
    assert facts.cap_sys_boot is True
    assert facts.lockdown is Lockdown.NONE
    assert facts.mem_available == 3000000 * 1024
    assert findings(facts, AUTO) == []


@pytest.mark.parametrize(
    ("change", "check", "fix"),
    [
        (lambda m: m.remove("sys/kernel/kexec_loaded"), Check.KEXEC, "CONFIG_KEXEC_FILE=y"),
        (
            lambda m: m.write("proc/sys/kernel/kexec_load_disabled", "1\n"),
            Check.DISABLED,
            "Reboot normally",
        ),
        (
            lambda m: m.write("proc/sys/kernel/kexec_load_limit_reboot", "0\n"),
            Check.LOAD_LIMIT,
            "Reboot normally",
        ),
        (
            lambda m: m.write("proc/self/status", "CapEff:\t000001fffebfffff\n"),
            Check.CAPABILITY,
            "CapabilityBoundingSet",
        ),
        (lambda m: m.write(".dockerenv", ""), Check.CONTAINER, "Run liveupd on the host"),
        (
            lambda m: m.write("run/systemd/container", "systemd-nspawn\n"),
            Check.CONTAINER,
            "says systemd-nspawn",
        ),
        (
            lambda m: m.write("proc/1/environ", b"container=lxc\0"),
            Check.CONTAINER,
            "container=lxc",
        ),
        (
            lambda m: m.write("proc/self/uid_map", "0 100000 65536\n"),
            Check.USER_NAMESPACE,
            "initial namespace",
        ),
        (
            lambda m: m.write(
                "boot/config-6.1.0-55-cloud-amd64",
                "CONFIG_KEXEC=y\n# CONFIG_KEXEC_FILE is not set\n",
            ),
            Check.KEXEC_FILE,
            "CONFIG_KEXEC_FILE is not set in /boot/config-6.1.0-55-cloud-amd64",
        ),
    ],
)
def test_each_blocker_comes_with_its_fix(
    machine: Machine, change: object, check: Check, fix: str
) -> None:
    change(machine)  # type: ignore[operator]
    found = findings(read_facts(machine.root), AUTO)
    assert [f.check for f in found] == [check]
    assert found[0].severity is Severity.BLOCKER
    assert fix in found[0].message
    assert blockers(read_facts(machine.root), AUTO) == [found[0].message]


def test_lockdown_and_secure_boot_are_notes(machine: Machine) -> None:
    machine.write("sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    machine.write(SECURE_BOOT, b"\x06\x00\x00\x00\x01")
    facts = read_facts(machine.root)
    assert facts.efi and facts.secure_boot is True and facts.lockdown is Lockdown.INTEGRITY
    [f] = findings(facts, AUTO)
    assert f.check is Check.LOCKDOWN and f.severity is Severity.NOTE
    assert "lockdown is integrity (Secure Boot on)" in f.message
    assert "unsigned kernels" in f.message
    assert findings(facts, REQUIRE) == [f]  # enforced: require is satisfied
    assert findings(facts, OFF) == []


def test_secure_boot_without_lockdown(machine: Machine) -> None:
    machine.write(SECURE_BOOT, b"\x06\x00\x00\x00\x01")
    [f] = findings(read_facts(machine.root), AUTO)
    assert f.check is Check.SECURE_BOOT and "an unsigned kernel would load" in f.message


def test_require_needs_a_kernel_that_enforces(machine: Machine) -> None:
    found = checks(machine, REQUIRE)
    assert "lockdown is none and CONFIG_KEXEC_SIG_FORCE is unknown" in found[Check.SIGNATURE_POLICY]
    assert "lockdown=integrity" in found[Check.SIGNATURE_POLICY]
    with gzip.open(machine.root / "proc/config.gz", "wt") as f:
        f.write("CONFIG_KEXEC_FILE=y\nCONFIG_KEXEC_SIG=y\nCONFIG_KEXEC_SIG_FORCE=y\n")
    facts = read_facts(machine.root)
    assert facts.kernel_config_source == "/proc/config.gz"
    assert blockers(facts, REQUIRE) == []
    assert "CONFIG_KEXEC_SIG_FORCE=y" in checks(machine, REQUIRE)[Check.LOCKDOWN]


def test_no_lockdown_lsm_and_no_efi(machine: Machine) -> None:
    machine.remove("sys/kernel/security/lockdown")
    facts = read_facts(machine.root)
    assert facts.lockdown is None and not facts.efi and facts.secure_boot is None
    assert "not available (no lockdown LSM)" in checks(machine, REQUIRE)[Check.SIGNATURE_POLICY]


def test_memory() -> None:
    assert memory_problem(100 << 20, None) == ""
    assert memory_problem(100 << 20, 1 << 30) == ""
    msg = memory_problem(100 << 20, 120 << 20)
    assert "needs about 100 MiB" in msg and "only 120 MiB is available" in msg


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("[none] integrity confidentiality", Lockdown.NONE),
        ("none integrity [confidentiality]\n", Lockdown.CONFIDENTIALITY),
        ("", None),
        (None, None),
    ],
)
def test_parse_lockdown(text: str | None, mode: Lockdown | None) -> None:
    assert parse_lockdown(text) is mode


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "other-owner", "too-large"])
def test_an_untrusted_kernel_config_is_never_read(machine: Machine, kind: str) -> None:
    # /boot/config-R goes through the safe open: a FIFO, a symlink to a device,
    # a file another user owns or one past the cap is not read (nothing blocks,
    # nothing fills memory); the kernel's own /proc/config.gz is used instead.
    machine.write("proc/config.gz", gzip.compress(b"# CONFIG_KEXEC_FILE is not set\n"))
    boot = machine.root / "boot" / "config-6.1.0-55-cloud-amd64"
    boot.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(boot)
    elif kind == "dev-zero":
        boot.symlink_to("/dev/zero")
    else:
        boot.write_text("CONFIG_KEXEC_FILE=y\n" + ("#" * (5 << 20) if kind == "too-large" else ""))
        if kind == "other-owner":
            os.chown(boot, 65534, 65534)
    found = checks(machine)
    assert found.keys() == {Check.KEXEC_FILE}
    assert "/proc/config.gz" in found[Check.KEXEC_FILE]

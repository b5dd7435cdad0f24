"""Machines that would not come back: the decisions, from parsed inputs (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from liveupd import schema
from liveupd.backends.base import Dmi, EncryptedVolume, LuksKind, VolumeScan
from liveupd.config import Config
from liveupd.kernel.comeback import Reason, describe, matching, refusals

QEMU = Dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)")
TPM_DATA = EncryptedVolume(
    "/dev/loop0", ("tpmdata",), False, "/dev/loop0", LuksKind.LUKS2, ("systemd-tpm2",)
)
TPM_ROOT = EncryptedVolume(
    "/dev/vda3",
    ("vda3_crypt",),
    True,
    "UUID=5f1c",
    LuksKind.LUKS2,
    ("systemd-fido2", "systemd-tpm2"),
)


def config(**exec_: Any) -> Config:
    return schema.load(Config, {"exec": exec_})


def reasons(
    scan: VolumeScan, exec_: dict[str, Any] | None = None, dmi: Dmi = QEMU
) -> list[tuple[str, str]]:
    return [(r.reason, r.message) for r in refusals(dmi, scan, config(**(exec_ or {})))]


def test_nothing_to_refuse() -> None:
    ok = (
        EncryptedVolume(
            "/dev/vdb", ("data",), False, "/dev/vdb", LuksKind.LUKS2, ("systemd-fido2",)
        ),
        EncryptedVolume("/dev/vdc", ("old",), False, "/dev/vdc", LuksKind.LUKS1),
        EncryptedVolume("/dev/vdd", ("swap",), False, "/dev/vdd", LuksKind.NOT_LUKS),
        EncryptedVolume("/dev/disk/by-uuid/0", ("gone",), False, "UUID=0", LuksKind.MISSING),
        # a token *type* other than systemd-tpm2 (Clevis is not detected: docs)
        EncryptedVolume("/dev/vde", ("clev",), False, "/dev/vde", LuksKind.LUKS2, ("clevis",)),
    )
    assert reasons(VolumeScan(ok)) == []
    assert reasons(VolumeScan(())) == []


def test_a_tpm2_volume_is_refused_naming_it_and_the_override() -> None:
    [(reason, message)] = reasons(VolumeScan((TPM_DATA,)))
    assert reason == "tpm2-unlock" and Reason.TPM2_UNLOCK.value == reason
    assert message.startswith(
        "/dev/loop0 (crypttab name 'tpmdata') is LUKS2 with a systemd-tpm2 token: a kexec "
        "does not reset the TPM's PCRs"
    )
    assert '[exec] allow-tpm2-unlock = true, or = ["tpmdata"] for this volume only' in message
    assert "/etc/liveupd/liveupd.conf" in message


def test_the_root_volume_is_described_as_such() -> None:
    assert describe(TPM_ROOT) == (
        "/dev/vda3 (the root filesystem's volume; crypttab name 'vda3_crypt'; listed as "
        "'UUID=5f1c')"
    )
    unlisted = EncryptedVolume("/dev/vda3", ("vda3_crypt",), True, "", LuksKind.LUKS2)
    assert describe(unlisted) == (
        "/dev/vda3 (the root filesystem's volume; mapped as /dev/mapper/vda3_crypt)"
    )
    [(reason, message)] = reasons(VolumeScan((TPM_ROOT,)))
    assert reason == "tpm2-unlock" and message.startswith("/dev/vda3 (the root filesystem's")


@pytest.mark.parametrize(
    ("allow", "refused"),
    [
        (False, ["/dev/loop0", "/dev/vda3"]),
        (True, []),
        ([], ["/dev/loop0", "/dev/vda3"]),
        (["tpmdata"], ["/dev/vda3"]),  # by crypttab name
        (["/dev/loop0"], ["/dev/vda3"]),  # by device
        (["UUID=5f1c"], ["/dev/loop0"]),  # as crypttab gives it
        (["vda3_crypt", "tpmdata"], []),
        (["other"], ["/dev/loop0", "/dev/vda3"]),
    ],
)
def test_the_override(allow: bool | list[str], refused: list[str]) -> None:
    found = reasons(VolumeScan((TPM_DATA, TPM_ROOT)), {"allow-tpm2-unlock": allow})
    assert [m.split(" ", 1)[0] for _, m in found] == refused


def test_what_cannot_be_read_is_refused_on_the_safe_side() -> None:
    unreadable = EncryptedVolume(
        "/dev/vdb",
        ("data",),
        False,
        "/dev/vdb",
        LuksKind.UNREADABLE,
        problem="cryptsetup did not finish within 10 s",
    )
    scan = VolumeScan((unreadable,), ("/etc/crypttab: is writable by others",))
    found = reasons(scan)
    assert [r for r, _ in found] == ["luks-unreadable", "luks-unreadable"]
    assert found[0][1].startswith(
        "cannot tell whether a TPM unlocks /dev/vdb (crypttab name 'data'): cryptsetup did "
        "not finish within 10 s. Make 'cryptsetup luksDump --dump-json-metadata /dev/vdb' work"
    )
    assert found[1][1] == (
        "cannot tell which volumes the boot unlocks: /etc/crypttab: is writable by others. "
        "Fix that, or set [exec] allow-tpm2-unlock = true"
    )
    assert [r for r, _ in reasons(scan, {"allow-tpm2-unlock": ["data"]})] == ["luks-unreadable"]
    assert reasons(scan, {"allow-tpm2-unlock": True}) == []


@pytest.mark.parametrize(
    ("patterns", "index"),
    [
        ([], None),
        ([{"vendor": "QEMU"}], 0),
        ([{"vendor": "qemu"}], 0),  # case ignored
        ([{"product": "Standard PC (Q35*"}], 0),
        ([{"vendor": "QEMU", "product": "*i440FX*"}], None),  # every key given must match
        ([{"vendor": "Dell*"}, {"vendor": "Q?MU", "product": "*Q35*"}], 1),
        ([{"vendor": "[Qq]EMU"}, {"vendor": "*"}], 0),
    ],
)
def test_platform_patterns(patterns: list[dict[str, str]], index: int | None) -> None:
    assert matching(QEMU, config(**{"deny-platforms": patterns}).exec.deny_platforms) == index


def test_a_denied_platform_names_the_entry() -> None:
    deny = [{"vendor": "Dell*"}, {"vendor": "QEMU", "product": "Standard PC*"}]
    allow_all = {"deny-platforms": deny, "allow-tpm2-unlock": True}
    [(reason, message)] = reasons(VolumeScan((TPM_DATA,)), allow_all)
    assert reason == "platform-denied"
    assert message.startswith(
        "this machine (vendor 'QEMU', product 'Standard PC (Q35 + ICH9, 2009)') matches entry "
        "2 of [exec] deny-platforms (vendor 'QEMU', product 'Standard PC*') in "
    )
    assert reasons(VolumeScan(()), {"deny-platforms": deny}, Dmi("", "")) == []


def test_platform_first_then_volumes() -> None:
    found = reasons(VolumeScan((TPM_DATA,)), {"deny-platforms": [{"vendor": "QEMU"}]})
    assert [r for r, _ in found] == ["platform-denied", "tpm2-unlock"]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"allow-tpm2-unlock": "yes"}, "allow-tpm2-unlock"),
        ({"allow-tpm2-unlock": "tpmdata"}, "allow-tpm2-unlock"),
        ({"allow-tpm2-unlock": [""]}, "allow-tpm2-unlock"),
        ({"deny-platforms": [{}]}, "empty pattern: give vendor, product or both"),
        ({"deny-platforms": [{"vendor": ""}]}, "deny-platforms"),
        ({"deny-platforms": [{"model": "x"}]}, "model"),
    ],
)
def test_bad_config_values(value: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        config(**value)

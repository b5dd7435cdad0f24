"""Machines that would not come back from a kexec: each refused for a named reason (pure).

Preflight (``preflight.py``) says whether kexec can work here at all
(``kexec-load-disabled`` among its reasons); these say whether the machine
would come back from one:

* ``tpm2-unlock``: the root filesystem's volume or a volume in /etc/crypttab
  is LUKS2 with a ``systemd-tpm2`` token.  A kexec does not reset the TPM's
  PCRs, so the new initrd's TPM unlock fails (the PCRs no longer match the
  token's policy) and the boot waits for a passphrase at the console.
  ``[exec] allow-tpm2-unlock`` overrides it: ``true`` for every volume, or a
  list of crypttab names or devices;
* ``luks-unreadable``: a LUKS volume whose header could not be read (or
  /etc/crypttab itself): liveupd cannot tell whether a TPM unlocks it.  The
  same key overrides it;
* ``platform-denied``: DMI's vendor/product match an entry of ``[exec]
  deny-platforms`` (shipped empty: the admin lists the platforms where kexec
  is known not to come back).

Each reaches ``Refusals`` and ``Unsupported`` (so ``CanLiveUpdate`` says
``na``), a Stage error and ``liveupctl status``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from enum import StrEnum

from liveupd.backends.base import Dmi, EncryptedVolume, LuksKind, Refusal, VolumeScan
from liveupd.config import Config
from liveupd.config.model import PlatformPattern
from liveupd.quoting import quote
from liveupd.storage.luks import TPM2_TOKEN

OVERRIDE = "[exec] allow-tpm2-unlock"
DENY_LIST = "[exec] deny-platforms"


class Reason(StrEnum):
    TPM2_UNLOCK = "tpm2-unlock"
    LUKS_UNREADABLE = "luks-unreadable"
    PLATFORM_DENIED = "platform-denied"


def describe(volume: EncryptedVolume) -> str:
    """``/dev/vda2 (the root filesystem's volume; crypttab name 'root_crypt')``."""
    what = []
    if volume.root:
        what.append("the root filesystem's volume")
    if volume.crypttab:
        names = ", ".join(quote(n) for n in volume.names)
        what.append(f"crypttab name {names}" if names else "in /etc/crypttab")
        if volume.crypttab != volume.device:
            what.append(f"listed as {quote(volume.crypttab)}")
    elif volume.names:
        what.append(f"mapped as /dev/mapper/{volume.names[0]}")
    return f"{volume.device} ({'; '.join(what)})" if what else volume.device


def allowed(volume: EncryptedVolume, config: Config) -> bool:
    """The override covers it: ``true``, or one of its names or devices is listed."""
    allow = config.exec.allow_tpm2_unlock
    if isinstance(allow, bool):
        return allow
    ids = {volume.device, *volume.names}
    if volume.crypttab:
        ids.add(volume.crypttab)
    return bool(ids.intersection(allow))


def _override(volume: EncryptedVolume, config: Config) -> str:
    name = volume.names[0] if volume.names else volume.device
    return (
        f'set {OVERRIDE} = true, or = ["{name}"] for this volume only, in a drop-in '
        f"(/etc/liveupd/liveupd.conf.d/) of {config.source}, and restart liveupd"
    )


def tpm2_refusals(scan: VolumeScan, config: Config) -> list[Refusal]:
    out = []
    for v in scan.volumes:
        if allowed(v, config):
            continue
        if v.kind is LuksKind.LUKS2 and TPM2_TOKEN in v.tokens:
            out.append(
                Refusal(
                    Reason.TPM2_UNLOCK,
                    f"{describe(v)} is LUKS2 with a {TPM2_TOKEN} token: a kexec does not "
                    "reset the TPM's PCRs, so the new kernel could not unlock it with the TPM "
                    "and its boot would wait for a passphrase at the console. Reboot "
                    "normally; or, if someone can type the passphrase or another key slot "
                    f"unlocks it unattended, {_override(v, config)}",
                )
            )
        elif v.kind is LuksKind.UNREADABLE:
            out.append(
                Refusal(
                    Reason.LUKS_UNREADABLE,
                    f"cannot tell whether a TPM unlocks {describe(v)}: {v.problem}. Make "
                    f"'cryptsetup luksDump --dump-json-metadata {v.device}' work, or "
                    f"{_override(v, config)}",
                )
            )
    if scan.problems and config.exec.allow_tpm2_unlock is not True:
        out.append(
            Refusal(
                Reason.LUKS_UNREADABLE,
                "cannot tell which volumes the boot unlocks: "
                + "; ".join(scan.problems)
                + f". Fix that, or set {OVERRIDE} = true",
            )
        )
    return out


def _matches(pattern: str | None, value: str) -> bool:
    return pattern is None or fnmatch.fnmatchcase(value.casefold(), pattern.casefold())


def matching(dmi: Dmi, patterns: Sequence[PlatformPattern]) -> int | None:
    """The index of the first pattern this machine matches (None: none does)."""
    for i, p in enumerate(patterns):
        if _matches(p.vendor, dmi.vendor) and _matches(p.product, dmi.product):
            return i
    return None


def platform_refusals(dmi: Dmi, config: Config) -> list[Refusal]:
    i = matching(dmi, config.exec.deny_platforms)
    if i is None:
        return []
    p = config.exec.deny_platforms[i]
    given = ", ".join(
        f"{k} {quote(v)}" for k, v in (("vendor", p.vendor), ("product", p.product)) if v
    )
    return [
        Refusal(
            Reason.PLATFORM_DENIED,
            f"this machine (vendor {quote(dmi.vendor)}, product {quote(dmi.product)}) matches "
            f"entry {i + 1} of {DENY_LIST} ({given}) in {config.source} or its drop-ins: "
            "kexec is listed as not coming back on this platform. Reboot normally, or "
            "remove the entry",
        )
    ]


def refusals(dmi: Dmi, scan: VolumeScan, config: Config) -> list[Refusal]:
    return platform_refusals(dmi, config) + tpm2_refusals(scan, config)

"""The ``kernel.signature`` policy (pure).

* ``auto`` (default): liveupd does not judge signatures; the running kernel
  decides.  When lockdown is on (Secure Boot usually turns it on) or the kernel
  was built with CONFIG_KEXEC_SIG_FORCE, it verifies the image's embedded
  signature against its trusted keys and refuses a kernel without a valid one;
  that refusal is reported as SignatureRejected.  Otherwise anything loads.
* ``require``: only a verified kernel may be staged.  liveupd refuses an image
  without an embedded signature itself, and refuses to stage at all when the
  running kernel would not enforce verification (lockdown ``none`` and no
  CONFIG_KEXEC_SIG_FORCE), because then a present-but-invalid signature would
  load silently.
* ``off``: liveupd never inspects signatures and reports nothing about them;
  the kernel still enforces its own rules, which liveupd cannot switch off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class SignaturePolicy(StrEnum):
    AUTO = "auto"
    REQUIRE = "require"
    OFF = "off"


class Lockdown(StrEnum):
    NONE = "none"
    INTEGRITY = "integrity"
    CONFIDENTIALITY = "confidentiality"


@dataclass(frozen=True)
class Enforcement:
    enforced: bool
    why: str  # what makes the kernel verify, or why it would not


def enforcement(lockdown: Lockdown | None, kernel_config: Mapping[str, str] | None) -> Enforcement:
    """Would the running kernel refuse an image whose signature does not verify?"""
    if lockdown in (Lockdown.INTEGRITY, Lockdown.CONFIDENTIALITY):
        return Enforcement(True, f"lockdown is {lockdown}")
    if kernel_config is not None and kernel_config.get("CONFIG_KEXEC_SIG_FORCE") == "y":
        return Enforcement(True, "the kernel was built with CONFIG_KEXEC_SIG_FORCE=y")
    mode = str(lockdown) if lockdown is not None else "not available (no lockdown LSM)"
    force = (
        "unknown (no kernel config found)"
        if kernel_config is None
        else ("not set" if kernel_config.get("CONFIG_KEXEC_SIG_FORCE") != "y" else "y")
    )
    return Enforcement(False, f"lockdown is {mode} and CONFIG_KEXEC_SIG_FORCE is {force}")


def image_problem(policy: SignaturePolicy, path: str, signed: bool, extracted: bool) -> str:
    """Why ``policy`` refuses this image before it is loaded ("" when it does not)."""
    if policy is not SignaturePolicy.REQUIRE:
        return ""
    if extracted:
        return (
            f"{path}: kernel.signature is 'require', but this image must be decompressed "
            "before loading and the decompressed kernel carries no signature the kernel could "
            "verify. Use a signed, directly loadable image, or set kernel.signature = auto"
        )
    if not signed:
        return (
            f"{path}: kernel.signature is 'require' and this image has no embedded signature "
            "(its PE certificate table is empty). Install the distribution's signed kernel "
            "(not an -unsigned package), sign it (sbsign), or set kernel.signature = auto"
        )
    return ""

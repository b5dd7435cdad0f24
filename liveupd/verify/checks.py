"""Pure checks of a boot against a transition's record: did it land, did devices return?

Nothing here touches the machine; the caller passes in what it read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from liveupd.backends.base import Binding, Device

CMDLINE_KEY = "liveupd.transition"


class Check(StrEnum):
    KERNEL = "kernel"  # the running kernel is the target
    BOOT_ID = "boot-id"  # the boot changed
    CHECKPOINT = "checkpoint"  # the transition's record is readable
    SETTLE = "udev-settle"  # udev settled within verify.settle-timeout
    DEVICE = "device"  # each recorded device is bound to its driver again
    INTERFACE = "interface"  # each recorded network interface is back
    MAC = "mac"  # ... with the same MAC address
    HOOK = "hook"  # the verify and restore hooks succeeded


@dataclass(frozen=True)
class Problem:
    check: Check
    message: str

    def to_json(self) -> dict[str, str]:
        return {"check": str(self.check), "message": self.message}


def transition_on_cmdline(cmdline: str) -> str | None:
    """The id in ``liveupd.transition=ID`` (the last one wins, as for the kernel)."""
    found = None
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if sep and key == CMDLINE_KEY:
            found = value
    return found


def superseded_reason(
    transition_id: str, target_release: str | None, cmdline: str, running_release: str
) -> str | None:
    """Why this boot did not come from the transition's kexec; None if it did."""
    if transition_on_cmdline(cmdline) == transition_id:
        return None
    if target_release is not None and running_release != target_release:
        return (
            f"the machine runs {running_release}, not the target {target_release}, and its "
            f"command line has no {CMDLINE_KEY}={transition_id}: it was rebooted some other way"
        )
    return (
        f"the kernel command line has no {CMDLINE_KEY}={transition_id}: this boot did not "
        "come from the transition's kexec (the machine was rebooted some other way)"
    )


def kernel_problems(
    target_release: str | None, old_boot_id: str, running_release: str, boot_id: str
) -> list[Problem]:
    """The boot carries the transition's id: is it the target kernel, and a new boot?"""
    problems = []
    if target_release is not None and running_release != target_release:
        problems.append(
            Problem(
                Check.KERNEL,
                f"wrong kernel: the running kernel is {running_release}, not the target "
                f"{target_release}, although the command line names this transition; "
                "check the image that was staged (liveupctl history)",
            )
        )
    if boot_id == old_boot_id:
        problems.append(
            Problem(
                Check.BOOT_ID,
                f"boot_id {boot_id} is unchanged: the jump into the new kernel did not happen",
            )
        )
    return problems


def _under(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor + "/")


def device_problems(bindings: Sequence[Binding], devices: Sequence[Device]) -> list[Problem]:
    """Every recorded device bound to its driver again, every interface back with its MAC."""
    by_path = {d.sys_path: d for d in devices}
    nets = [d.net for d in devices if d.net is not None]
    problems = []
    for b in bindings:
        d = by_path.get(b.sys_path)
        if d is None:
            problems.append(
                Problem(
                    Check.DEVICE,
                    f"{b.sys_path} is missing; before the transition it was bound to "
                    f"{b.driver}. Check the kernel log (dmesg) of this boot",
                )
            )
        elif d.driver != b.driver:
            problems.append(
                Problem(
                    Check.DEVICE,
                    f"{b.sys_path} is bound to {d.driver or 'no driver'}, expected {b.driver}; "
                    f"check that this kernel has the {b.driver} driver (modprobe {b.driver}) "
                    "and the kernel log (dmesg)",
                )
            )
        for want in b.net:
            if any(n.mac.lower() == want.mac.lower() for n in nets):
                continue
            same_name = next((n for n in nets if n.ifname == want.ifname), None)
            if same_name is not None:
                problems.append(
                    Problem(
                        Check.MAC,
                        f"interface {want.ifname} has MAC {same_name.mac}, expected {want.mac} "
                        f"(device {b.sys_path})",
                    )
                )
            else:
                problems.append(
                    Problem(
                        Check.INTERFACE,
                        f"interface {want.ifname} (MAC {want.mac}) of {b.sys_path} did not "
                        "come back",
                    )
                )
    return problems

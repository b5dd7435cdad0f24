"""Pure checks of a boot against a transition's record: did it land, did devices return?

Nothing here touches the machine; the caller passes in what it read.
"""

from __future__ import annotations

from collections.abc import Sequence

from liveupd.backends.base import Binding, Device
from liveupd.transition.checkpoint import Checkpoint
from liveupd.transition.phases import TransitionState
from liveupd.transition.records import Check, Problem

__all__ = [
    "CMDLINE_KEY",
    "Check",
    "Problem",
    "device_problems",
    "kernel_problems",
    "subsystems_to_check",
]

CMDLINE_KEY = "liveupd.transition"


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


def fell_back(
    transition_id: str,
    *,
    state: TransitionState,
    exec_stamped: bool,
    checkpoint: Checkpoint | None,
    pending: str | None,
    running_release: str,
    boot_id: str,
    cmdline: str,
) -> bool:
    """Did the jump happen and the machine come back on the old kernel?

    The transition reached the jump (its checkpoint written, the pending record
    pointing at it, and its state ``exec`` or, in ``direct`` mode, where the
    state directory is frozen before the jump and the state never reaches the
    disk, its exec stamp written, just before the last freeze), and this boot
    is a new one, of the old kernel, without the transition's id on its
    command line: the firmware booted the old kernel again (a watchdog reset,
    a panic reboot, a power cycle) instead of the new kernel reaching
    verification.
    """
    return (
        (state is TransitionState.EXEC or (state is TransitionState.RUNNING and exec_stamped))
        and checkpoint is not None
        and pending == transition_id
        and boot_id != checkpoint.old.boot_id
        and running_release == checkpoint.old.release
        and transition_on_cmdline(cmdline) != transition_id
    )


def kernel_problems(
    target_release: str | None, old_boot_id: str, running_release: str, boot_id: str
) -> list[Problem]:
    """The boot carries the transition's id: is it the target kernel, and a new boot?"""
    problems = []
    if target_release is not None and running_release != target_release:
        problems.append(
            Problem(
                check=Check.KERNEL,
                message=f"wrong kernel: the running kernel is {running_release}, not the target "
                f"{target_release}, although the command line names this transition; "
                "check the image that was staged (liveupctl history)",
            )
        )
    if boot_id == old_boot_id:
        problems.append(
            Problem(
                check=Check.BOOT_ID,
                message=f"boot_id {boot_id} is unchanged: the jump into the new kernel did not "
                "happen",
            )
        )
    return problems


def _under(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor + "/")


SIMULATED = "(the machine is simulated: see its description, LIVEUPD_DRY_RUN_MACHINE)"


def subsystems_to_check(bindings: Sequence[Binding]) -> frozenset[str] | None:
    """What :func:`device_problems` needs enumerated for ``bindings``: their subsystems
    and the network interfaces (a binding records those below it); None: nothing."""
    if not bindings:
        return None
    return frozenset({"net", *(b.subsystem for b in bindings)})


def device_problems(
    bindings: Sequence[Binding], devices: Sequence[Device], *, simulated: bool = False
) -> list[Problem]:
    """Every recorded device bound to its driver again, every interface back with its MAC.

    ``simulated``: the dry run's machine, for which no command of a real one helps.
    """
    by_path = {d.sys_path: d for d in devices}
    nets = [d.net for d in devices if d.net is not None]
    problems = []
    for b in bindings:
        d = by_path.get(b.sys_path)
        if d is None:
            problems.append(
                Problem(
                    check=Check.DEVICE,
                    message=f"{b.sys_path} is missing; before the transition it was bound to "
                    f"{b.driver}. "
                    + (SIMULATED if simulated else "Check the kernel log (dmesg) of this boot"),
                    sys_path=b.sys_path,
                )
            )
        elif d.driver != b.driver:
            problems.append(
                Problem(
                    check=Check.DEVICE,
                    message=f"{b.sys_path} is bound to {d.driver or 'no driver'}, expected "
                    f"{b.driver}; "
                    + (
                        SIMULATED
                        if simulated
                        else f"check that this kernel has the {b.driver} driver (modprobe "
                        f"{b.driver}) and the kernel log (dmesg)"
                    ),
                    sys_path=b.sys_path,
                )
            )
        for want in b.net:
            if any(n.mac.lower() == want.mac.lower() for n in nets):
                continue
            same_name = next((n for n in nets if n.ifname == want.ifname), None)
            if same_name is not None:
                problems.append(
                    Problem(
                        check=Check.MAC,
                        message=f"interface {want.ifname} has MAC {same_name.mac}, expected "
                        f"{want.mac} (device {b.sys_path})",
                        sys_path=b.sys_path,
                    )
                )
            else:
                problems.append(
                    Problem(
                        check=Check.INTERFACE,
                        message=f"interface {want.ifname} (MAC {want.mac}) of {b.sys_path} did "
                        "not come back",
                        sys_path=b.sys_path,
                    )
                )
    return problems

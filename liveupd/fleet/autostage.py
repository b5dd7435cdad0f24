"""What the kernel install hooks do over D-Bus: stage a new kernel, cancel a removed one.

**Installed** (``[kernel] auto-stage = true`` only): the new kernel is staged
when it is the kernel a firmware reboot would boot, i.e. the newest installed
one, and newer than the running one, unless a transition fell back from it
(it is quarantined: never a loop).  An older kernel installed alongside
(a fallback, a reinstall) is never staged: a fast reboot must not quietly go
back in time.  A transition staged by someone else is left alone; one this
hook staged for an older kernel is replaced (its id is kept in
``<state-dir>/auto-staged.json``), so a machine that installs several kernel
updates without rebooting stays staged on the newest.

**Removed** (whatever auto-stage says): a staged transition to that kernel is
cancelled: its modules are being deleted, so booting it would fail.  This
also happens when the same package is reinstalled (dpkg runs postrm with
``upgrade``); its postinst stages it again when auto-stage is on.

Each function returns a :class:`Result`: what was done and why, for the log.
Nothing here raises for a condition of the machine; the hooks never fail a
package installation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveupd import fsio
from liveupd.config import Config
from liveupd.ctl.client import Client, RemoteError
from liveupd.kernel.versions import version_key
from liveupd.service import names

RECORD = "auto-staged.json"
BUSY = "org.liveupd.LiveUpdate1.Error.Busy"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"


@dataclass(frozen=True)
class Result:
    event: str  # autostage.staged, autostage.skipped, unstage.cancelled, ...
    message: str  # one sentence: what happened, why, and what to do
    level: int = logging.INFO
    fields: dict[str, Any] = field(default_factory=dict)


def _skip(release: str, why: str, **fields: Any) -> Result:
    return Result(
        "autostage.skipped", f"not staging {release}: {why}", fields={"why": why, **fields}
    )


def record_path(config: Config) -> Path:
    return config.state_dir / RECORD


def read_record(config: Config) -> dict[str, Any]:
    try:
        data = fsio.read_json(record_path(config))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------- installed --


def auto_stage_off(release: str) -> Result:
    return _skip(
        release,
        "auto-stage is off ([kernel] auto-stage in liveupd.conf). Stage it with "
        f"'liveupctl stage {release}', or set auto-stage = true",
    )


async def kernel_installed(client: Client, config: Config, release: str) -> Result:
    if not config.kernel.auto_stage:
        return auto_stage_off(release)
    try:
        return await _stage_if_newest(client, config, release)
    except RemoteError as e:
        if e.unreachable:
            return Result(
                "autostage.skipped",
                f"not staging {release}: {e.message}",
                level=logging.WARNING,
                fields={"why": "unreachable", "error": e.name},
            )
        return Result(
            "autostage.failed",
            f"staging {release} failed: {e.message}",
            level=logging.WARNING,
            fields={"error": e.name},
        )


async def _stage_if_newest(client: Client, config: Config, release: str) -> Result:
    manager = await client.properties()
    unsupported = str(manager.get("Unsupported") or "")
    if unsupported:
        return _skip(release, f"kexec cannot work on this machine: {unsupported}")
    running = str(manager.get("RunningKernel") or "")
    latest = str(manager.get("LatestKernel") or "")
    if release == running:
        return _skip(release, "it is the running kernel")
    held = await _quarantined(client, release, running)
    if held:
        return _skip(release, held)
    if version_key(release) < version_key(running):
        return _skip(
            release,
            f"it is older than the running kernel ({running}); auto-stage only moves forward. "
            f"To switch to it anyway: 'liveupctl stage {release}'",
        )
    if latest and latest != release and version_key(latest) > version_key(release):
        return _skip(
            release, f"a newer kernel ({latest}) is installed; auto-stage stages the newest only"
        )
    state = str(manager.get("State") or "")
    staged_path = str(manager.get("StagedTransition") or names.NO_TRANSITION)
    replaced: dict[str, Any] = {}
    if state == "staged" and staged_path != names.NO_TRANSITION:
        staged = await client.transition(staged_path)
        tid, target = str(staged.get("Id", "")), str(staged.get("TargetRelease", ""))
        if target == release:
            return Result(
                "autostage.unchanged",
                f"{release} is already staged (transition {tid})",
                fields={"transition": tid},
            )
        ours = read_record(config).get("transition") == tid
        if not ours or version_key(target) > version_key(release):
            return _skip(
                release,
                f"transition {tid} to {target} is already staged, and auto-stage does not "
                f"replace what it did not stage. To switch to {release} instead: "
                f"'liveupctl cancel && liveupctl stage {release}'",
                staged=target,
            )
        await client.cancel()
        replaced = {"replaced": tid, "replaced_release": target}
    elif state in ("running", "exec"):
        return _skip(
            release,
            f"a transition is {'running' if state == 'running' else 'jumping'}; stage it "
            f"afterwards with 'liveupctl stage {release}'",
            state=state,
        )
    try:
        tid, _ = await client.stage(release)
    except RemoteError as e:
        if e.name == BUSY:
            return _skip(release, e.message, error=e.name)
        raise
    note = ""
    try:
        fsio.atomic_write_json(
            record_path(config), {"transition": tid, "release": release}, mode=0o600
        )
    except OSError as e:
        note = f" (could not record it in {record_path(config)}: {e.strerror})"
    instead = f" instead of {replaced['replaced_release']}" if replaced else ""
    return Result(
        "autostage.staged",
        f"staged {release}{instead} as transition {tid}; 'liveupctl reboot' switches to it "
        f"without a firmware reboot{note}",
        fields={"transition": tid, **replaced},
    )


async def _quarantined(client: Client, release: str, running: str) -> str:
    """Why ``release`` must not be staged automatically ("" when it may): a transition
    fell back from it (never a loop)."""
    try:
        held, problem = await client.quarantine()
    except RemoteError as e:
        if e.name == UNKNOWN_METHOD:
            return ""  # an older daemon: it quarantines nothing
        raise
    if problem:
        return (
            f"the list of quarantined kernels cannot be read ({problem}), so every kernel but "
            "the running one counts as quarantined; 'liveupctl unquarantine --all' rewrites it"
        )
    q = next((q for q in held if q.release == release), None)
    if q is None:
        return ""
    return (
        f"it is quarantined: transition {q.transition} fell back from it ({q.reason}). Once "
        f"the cause is fixed: 'liveupctl unquarantine {release}'"
    )


# --------------------------------------------------------------- removed --


async def kernel_removed(client: Client, release: str, image: str = "") -> Result:
    try:
        return await _cancel_if_target(client, release, image)
    except RemoteError as e:
        if e.unreachable:
            return Result(
                "unstage.untouched",
                f"cannot tell whether {release} is staged: {e.message}",
                level=logging.WARNING,
                fields={"why": "unreachable", "error": e.name},
            )
        return Result(
            "unstage.failed",
            f"cancelling the transition to {release} failed: {e.message}. Cancel it with "
            "'liveupctl cancel' before you reboot",
            level=logging.ERROR,
            fields={"error": e.name},
        )


async def _cancel_if_target(client: Client, release: str, image: str) -> Result:
    manager = await client.properties()
    state = str(manager.get("State") or "")
    staged_path = str(manager.get("StagedTransition") or names.NO_TRANSITION)
    if state == "staged" and staged_path != names.NO_TRANSITION:
        staged = await client.transition(staged_path)
        tid, target = str(staged.get("Id", "")), str(staged.get("TargetRelease", ""))
        if target != release and not (image and staged.get("KernelPath") == image):
            return Result(
                "unstage.untouched",
                f"{release} is removed; the staged transition {tid} goes to {target}, so it stays",
                fields={"transition": tid, "staged": target},
            )
        await client.cancel()
        return Result(
            "unstage.cancelled",
            f"cancelled transition {tid}: its kernel {release} is being removed or replaced. "
            f"If it is reinstalled, stage it again with 'liveupctl stage {release}'",
            fields={"transition": tid},
        )
    if state in ("running", "exec"):
        newest = (await client.history(1) or [{}])[0]
        if newest.get("new_release") == release and newest.get("state") == "running":
            await client.cancel()
            return Result(
                "unstage.cancelled",
                f"rolled back the running transition {newest.get('id')}: its kernel "
                f"{release} is being removed",
                level=logging.WARNING,
                fields={"transition": newest.get("id")},
            )
        if newest.get("new_release") == release:
            return Result(
                "unstage.failed",
                f"the machine is jumping into {release} while its package is being removed",
                level=logging.ERROR,
                fields={"transition": newest.get("id")},
            )
    return Result(
        "unstage.untouched",
        f"{release} is removed; no transition to it is staged",
        level=logging.DEBUG,
    )

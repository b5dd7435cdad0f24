"""What stands in the way of a live update right now (``ListBlockers``).

The same things Stage and Execute would refuse for, asked without changing
anything: kexec unsupported here, a transition under way (or start-up
recovery, or the daemon stopping), a logind ``block`` inhibitor on shutdown,
hook manifests that do not validate, and services ``[preserve] units`` lists
that CRIU cannot checkpoint (``liveupd.preserve``).  Who may start one is not here: that
depends on the caller and is ``CanLiveUpdate``'s answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dbus_fast.aio import MessageBus

from liveupd.errors import ConfigError
from liveupd.manager import Manager, ManagerState
from liveupd.service import inhibit


class BlockerKind(StrEnum):
    UNSUPPORTED = "unsupported"  # refused here: kexec cannot work, or would not come back
    BUSY = "busy"  # a transition is being staged, runs, or is past its jump
    STARTING = "starting"  # start-up recovery is not finished, or the daemon is stopping
    INHIBITOR = "inhibitor"  # a logind block inhibitor on shutdown (or logind did not answer)
    HOOKS = "hooks"  # a hook manifest is invalid: Stage and Execute would refuse
    PRESERVE = "preserve"  # a service [preserve] units lists cannot be checkpointed


@dataclass(frozen=True)
class Blocker:
    kind: BlockerKind
    message: str

    def as_tuple(self) -> tuple[str, str]:
        return str(self.kind), self.message


def _busy(manager: Manager) -> Blocker | None:
    t = manager.current
    if manager.rehearsing and t is not None:
        return Blocker(
            BlockerKind.BUSY,
            f"the dry run is verifying transition {t.id} on the simulated new boot",
        )
    state = manager.state
    if state is ManagerState.RUNNING:
        if manager.staging or t is None:
            return Blocker(BlockerKind.BUSY, "a kernel is being staged")
        return Blocker(BlockerKind.BUSY, f"transition {t.id} is running ({t.phase or 'starting'})")
    if state is ManagerState.EXEC and t is not None:
        return Blocker(BlockerKind.BUSY, f"transition {t.id} is past its jump")
    return None


async def _hooks(manager: Manager) -> Blocker | None:
    try:
        await manager.engine.discover_hooks()  # off the event loop, bounded in time
    except ConfigError as e:
        return Blocker(BlockerKind.HOOKS, "invalid hooks: " + "; ".join(e.problems))
    return None


async def _preserve(manager: Manager) -> Blocker | None:
    if not manager.config.preserve.units:
        return None
    from liveupd.preserve.step import find_problems

    _, found = await find_problems(manager.config, manager.engine.backends.services)
    if found:
        return Blocker(BlockerKind.PRESERVE, "[preserve] units: " + "; ".join(found))
    return None


async def blockers(
    manager: Manager, bus: MessageBus, *, ready: bool, stopping: bool
) -> list[Blocker]:
    found: list[Blocker] = []
    refusals = await manager.refusals()
    if refusals:
        text = "; ".join(r.text() for r in refusals)
        found.append(Blocker(BlockerKind.UNSUPPORTED, f"refused here: {text}"))
    if stopping:
        found.append(Blocker(BlockerKind.STARTING, "liveupd is stopping"))
    elif not ready:
        found.append(Blocker(BlockerKind.STARTING, "liveupd is still recovering after its start"))
    busy = _busy(manager)
    if busy is not None:
        found.append(busy)
    try:
        held = await inhibit.shutdown_blockers(bus)
    except inhibit.InhibitorsUnknown as e:
        found.append(Blocker(BlockerKind.INHIBITOR, f"cannot tell whether one is held ({e})"))
    else:
        found += [
            Blocker(BlockerKind.INHIBITOR, f"a shutdown inhibitor is held by {i.describe()}")
            for i in held
        ]
    hooks = await _hooks(manager)
    if hooks is not None:
        found.append(hooks)
    preserve = await _preserve(manager)
    if preserve is not None:
        found.append(preserve)
    return found

"""The built-in device steps: plan at stage; record, link down, unbind; rebind on undo.

At stage (check phase) the plan is computed once so that a selection that
would unbind the root filesystem's device is refused before anything is
done.  In the unbind phase the plan is computed again (devices may have
changed since), each binding is recorded, the undo record journaled, and
then, children first: processes holding the device's nodes are named,
network interfaces are set down, the device is unbound and its removal
awaited.  A failure binds back what was unbound, in reverse order.  In
``systemd`` mode the bindings are only recorded: the shutdown helper unbinds
them from the checkpoint late in shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from liveupd.backends.base import Binding, Device
from liveupd.config.model import DeviceSelector
from liveupd.devices.select import UnbindPlan, plan_unbind, subsystems_needed
from liveupd.errors import Failed
from liveupd.hooks.manifest import Hook
from liveupd.transition.context import Fact, TransitionContext
from liveupd.transition.phases import ExecMode, Phase
from liveupd.transition.steps import MIDDLE, BuiltinStep
from liveupd.transition.undo import AnyUndo, RebindUndo

# Handed to the checkpoint step (what the new kernel must find bound again).
BINDINGS: Fact[tuple[Binding, ...]] = Fact("devices.bindings")
KEPT: Fact[tuple[str, ...]] = Fact("devices.kept")


def requested_selectors(hooks: tuple[Hook, ...]) -> list[DeviceSelector]:
    """Devices hooks ask for (their manifest's ``unbind``), on top of the configured ones."""
    return [s for h in hooks for s in h.manifest.unbind]


def plan_for(ctx: TransitionContext, requested: list[DeviceSelector]) -> UnbindPlan:
    """The plan, from one enumeration of only the subsystems the selectors can match."""
    backend = ctx.backends.devices
    selectors = list(ctx.config.devices.unbind) + requested
    keep = ctx.config.devices.keep
    return plan_unbind(
        backend.devices(subsystems_needed(selectors, keep)),
        selectors,
        keep,
        backend.root_devices(),
        config_file=str(ctx.config_file),
    )


def current_ifname(devices: list[Device], mac: str, fallback: str) -> str:
    """The interface's name now (udev may have renamed it after a rebind)."""
    for d in devices:
        if d.net is not None and d.net.mac.lower() == mac.lower():
            return d.net.ifname
    return fallback


def describe(b: Binding) -> dict[str, Any]:
    return {
        "sys_path": b.sys_path,
        "subsystem": b.subsystem,
        "driver": b.driver,
        "driver_override": b.driver_override,
        "interfaces": ",".join(f"{n.ifname}/{n.mac}/{'up' if n.up else 'down'}" for n in b.net)
        or None,
    }


class DevicesCheckStep(BuiltinStep):
    """At stage: compute the plan, refusing the root device before anything is done."""

    kind = "devices-check"
    name = "devices-check"
    phase = Phase.CHECK
    order = MIDDLE

    def __init__(self, hooks: tuple[Hook, ...] = ()) -> None:
        self.requested = requested_selectors(hooks)

    async def apply(self, ctx: TransitionContext) -> None:
        plan = await asyncio.to_thread(plan_for, ctx, self.requested)
        for path in plan.kept:
            ctx.log("devices.kept", sys_path=path)
        ctx.log("devices.planned", devices=",".join(b.sys_path for b in plan.bindings) or None)


class UnbindStep(BuiltinStep):
    kind = "devices"
    name = "devices"
    phase = Phase.UNBIND
    order = MIDDLE

    def __init__(self, hooks: tuple[Hook, ...] = ()) -> None:
        self.requested = requested_selectors(hooks)

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        # Raises InvalidArgument for the root device: before anything is journaled or done.
        plan = plan_for(ctx, self.requested)
        ctx.facts.set(BINDINGS, plan.bindings)
        ctx.facts.set(KEPT, plan.kept)
        if ctx.mode is ExecMode.SYSTEMD or not plan.bindings:
            return None  # the shutdown helper unbinds from the checkpoint
        # The rollback information, stored once: the journal's undo record.
        return RebindUndo(bindings=plan.bindings)

    async def apply(self, ctx: TransitionContext) -> None:
        bindings = ctx.facts.get_or(BINDINGS, ())
        kept = ctx.facts.get_or(KEPT, ())
        devices = ctx.backends.devices
        for path in kept:
            ctx.log("devices.kept", sys_path=path)
        for b in bindings:
            ctx.log("devices.recorded", **describe(b))
        if ctx.mode is ExecMode.SYSTEMD:
            if bindings:
                ctx.log("devices.deferred", reason="the shutdown helper unbinds them")
            return
        done: list[Binding] = []
        for b in bindings:
            try:
                holders = await asyncio.to_thread(devices.holders, b.sys_path)
                if holders:
                    ctx.log(
                        "devices.in-use",
                        level=logging.WARNING,
                        sys_path=b.sys_path,
                        holders=", ".join(holders),
                    )
                for net in b.net:
                    if net.up:
                        await asyncio.to_thread(devices.set_link, net.ifname, False)
                        ctx.log("devices.link-down", ifname=net.ifname, mac=net.mac)
                await asyncio.to_thread(devices.unbind, b, ctx.config.devices.timeout)
            except OSError as e:
                failures = await rebind(ctx, [b, *reversed(done)])
                see = ctx.on_machine("see the kernel log (dmesg) for the driver's side")
                message = (
                    f"unbinding {b.sys_path} from driver {b.driver} failed: "
                    f"{e.strerror or e}; the devices unbound so far were bound again. "
                    f"{see[0].upper()}{see[1:]}, or leave the device out with [devices] keep "
                    f"in {ctx.config_file}"
                )
                if failures:
                    message += ". Binding back also failed: " + "; ".join(failures)
                raise Failed(message) from e
            done.append(b)
            ctx.log("devices.unbound", sys_path=b.sys_path, driver=b.driver)


async def rebind(ctx: TransitionContext, bindings: list[Binding]) -> list[str]:
    """Bind each device back (in the order given) and bring its interfaces up; failures."""
    devices = ctx.backends.devices
    failures = []
    for b in bindings:
        try:
            if await asyncio.to_thread(devices.bound_driver, b.sys_path) != b.driver:
                await asyncio.to_thread(devices.bind, b, ctx.config.devices.timeout)
                ctx.log("devices.bound", sys_path=b.sys_path, driver=b.driver)
            if any(n.up for n in b.net):
                now = await asyncio.to_thread(devices.devices, frozenset({"net"}))
                for net in b.net:
                    if net.up:
                        ifname = current_ifname(now, net.mac, net.ifname)
                        await asyncio.to_thread(devices.set_link, ifname, True)
                        ctx.log("devices.link-up", ifname=ifname, mac=net.mac)
        except OSError as e:
            failures.append(f"{b.sys_path} -> {b.driver}: {e.strerror or e}")
            ctx.log(
                "devices.bind-failed",
                level=logging.ERROR,
                sys_path=b.sys_path,
                driver=b.driver,
                error=e.strerror or str(e),
            )
    return failures


async def undo_rebind(ctx: TransitionContext, record: RebindUndo) -> None:
    bindings = list(reversed(record.bindings))
    failures = await rebind(ctx, bindings)
    if failures:
        raise Failed(
            "binding devices again failed: "
            + "; ".join(failures)
            + "; "
            + ctx.on_machine(
                "bind them by hand with: echo DEVICE > /sys/bus/SUBSYSTEM/drivers/DRIVER/bind"
            )
        )

"""The built-in unbind step: record bindings, link down, unbind; rebind on undo."""

from __future__ import annotations

import asyncio
import logging

from liveupd.backends.base import Binding
from liveupd.config.model import DeviceSelector
from liveupd.devices.select import UnbindPlan, plan_unbind
from liveupd.errors import Failed
from liveupd.hooks.manifest import Hook
from liveupd.transition.context import TransitionContext
from liveupd.transition.phases import ExecMode, Phase
from liveupd.transition.steps import MIDDLE, BuiltinStep, UndoRecord, undo_handler


class UnbindStep(BuiltinStep):
    kind = "devices"
    name = "devices"
    phase = Phase.UNBIND
    order = MIDDLE

    def __init__(self, hooks: tuple[Hook, ...] = ()) -> None:
        # Devices hooks ask for, on top of the configured ones.
        self.requested: list[DeviceSelector] = [s for h in hooks for s in h.manifest.unbind]

    def plan(self, ctx: TransitionContext) -> UnbindPlan:
        devices = ctx.backends.devices
        return plan_unbind(
            devices.devices(),
            list(ctx.config.devices.unbind) + self.requested,
            ctx.config.devices.keep,
            devices.root_devices(),
        )

    def prepare(self, ctx: TransitionContext) -> UndoRecord | None:
        plan = self.plan(ctx)
        ctx.facts["bindings"] = plan.bindings
        for path in plan.kept:
            ctx.log("devices.kept", sys_path=path)
        if ctx.mode is ExecMode.SYSTEMD or not plan.bindings:
            return None  # the shutdown helper unbinds from the checkpoint
        return {"kind": "rebind", "bindings": [b.to_json() for b in plan.bindings]}

    async def apply(self, ctx: TransitionContext) -> None:
        bindings: tuple[Binding, ...] = ctx.facts.get("bindings", ())
        devices = ctx.backends.devices
        for b in bindings:
            ctx.log(
                "devices.recorded",
                sys_path=b.sys_path,
                driver=b.driver,
                interfaces=",".join(f"{n.ifname}/{n.mac}" for n in b.net) or None,
            )
        if ctx.mode is ExecMode.SYSTEMD:
            return
        done: list[Binding] = []
        try:
            for b in bindings:
                by_path = {d.sys_path: d for d in devices.devices()}
                holders = [
                    h
                    for p, d in by_path.items()
                    if p.startswith(b.sys_path)
                    for h in devices.holders(d)
                ]
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
                await asyncio.to_thread(devices.unbind, b, ctx.config.devices.timeout)
                done.append(b)
                ctx.log("devices.unbound", sys_path=b.sys_path, driver=b.driver)
        except OSError as e:
            await _rebind(ctx, list(reversed(done)) + ([b] if b not in done else []))
            raise Failed(
                f"unbinding {b.name} from {b.driver} failed: {e.strerror or e}; "
                "the devices unbound so far were bound again"
            ) from e


async def _rebind(ctx: TransitionContext, bindings: list[Binding]) -> list[str]:
    devices = ctx.backends.devices
    failures = []
    for b in bindings:
        try:
            if devices.bound_driver(b.sys_path) != b.driver:
                await asyncio.to_thread(devices.bind, b, ctx.config.devices.timeout)
                ctx.log("devices.bound", sys_path=b.sys_path, driver=b.driver)
            for net in b.net:
                if net.up:
                    await asyncio.to_thread(devices.set_link, net.ifname, True)
        except OSError as e:
            failures.append(f"{b.sys_path} -> {b.driver}: {e.strerror or e}")
    return failures


@undo_handler("rebind")
async def undo_rebind(ctx: TransitionContext, record: UndoRecord) -> None:
    bindings = [Binding.from_json(b) for b in reversed(record["bindings"])]
    failures = await _rebind(ctx, bindings)
    if failures:
        raise Failed(
            "binding devices again failed: "
            + "; ".join(failures)
            + "; bind them by hand with: echo DEVICE > /sys/bus/SUBSYSTEM/drivers/DRIVER/bind"
        )

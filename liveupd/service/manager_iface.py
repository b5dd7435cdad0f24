"""org.liveupd.LiveUpdate1.Manager at /org/liveupd/LiveUpdate1.

A changing method checks, in this order: the sizes of its arguments
(``limits``: lengths only, cheap), who calls (``caller``) and whether they may
(``auth``), and only then validates the arguments and hands over to
``liveupd.manager.Manager``; so what an unauthorized caller sent is never
parsed or echoed.  Every failure leaves as a named D-Bus error
(``boundary``), quoting the caller's input at most about 200 characters.
Reading is open to everyone.  Work that touches the disk runs in a worker
thread, never on the event loop.
"""

# D-Bus members are CamelCase by convention (busctl, systemd, every D-Bus API).
# ruff: noqa: N802

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dbus_fast import PropertyAccess
from dbus_fast import introspection as intr
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from liveupd import __version__, logs, memory
from liveupd.errors import Busy, Inhibited, InvalidArgument
from liveupd.manager import Manager, ManagerState
from liveupd.quoting import clip, quote
from liveupd.service import caller, inhibit, limits, names
from liveupd.service.auth import Authorizer
from liveupd.service.blockers import blockers
from liveupd.service.boundary import dbus_errors
from liveupd.service.dbustypes import (
    BlockerList,
    Bool,
    HookFinishedArgs,
    IdAndPath,
    KernelDetails,
    KernelList,
    Nothing,
    ObjectPath,
    Options,
    PhaseChangedArgs,
    QuarantineList,
    RecoveredArgs,
    RefusalList,
    Str,
    StrList,
    TransitionFailedArgs,
    UInt32,
    dbus_method,
    dbus_property,
    dbus_signal,
)
from liveupd.service.exec_gate import ExecGate
from liveupd.service.introspection import EMITS_CHANGED, annotate_property, arg_names
from liveupd.service.kernel_details import kernel_details
from liveupd.service.options import parse as parse_options
from liveupd.service.transition_iface import TransitionRegistry
from liveupd.service.writer_guard import GuardedWriter
from liveupd.transition.context import StageRequest
from liveupd.transition.phases import ExecMode

LOG = logs.get("service")

RECOVERY_WAIT = 90.0  # seconds a change waits for start-up recovery
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
STAGE_OPTIONS = {"append": "s", "sha256": "s", "interactive": "b", "profile": "s"}
EXECUTE_OPTIONS = {"mode": "s", "ignore-inhibitors": "b", "interactive": "b"}


@dataclass
class ServiceParts:
    """What the Manager object works with (built by ``server``)."""

    bus: MessageBus
    manager: Manager
    authorizer: Authorizer
    registry: TransitionRegistry
    gate: ExecGate
    guard: GuardedWriter | None
    status: Callable[[str], object]


class ManagerInterface(ServiceInterface):
    def __init__(self, parts: ServiceParts) -> None:
        super().__init__(names.MANAGER_INTERFACE)
        self.parts = parts
        self.manager = parts.manager
        self._ready = asyncio.Event()  # set once start-up recovery is done
        self.stopping = False
        self._published: dict[str, Any] = {}
        self._status = ""
        self.manager.latest.on_change = self._latest_changed
        self.named = False  # set by the server after export, before it asks for the name

    @classmethod
    def describe(cls) -> intr.Interface:
        iface = cls.__new__(cls)
        ServiceInterface.__init__(iface, names.MANAGER_INTERFACE)
        return iface.introspect()

    # ------------------------------------------------------------ helpers --

    def set_ready(self) -> None:
        self._ready.set()

    async def _wait_until_ready(self, call: caller.Call) -> None:
        """Changes wait for start-up recovery (the call that activated us comes first)."""
        if self.stopping:
            raise Busy("liveupd is stopping; call again once it has (it restarts on demand)")
        if self._ready.is_set():
            return
        logs.event(LOG, "method.waiting-for-recovery", member=call.member, sender=call.sender)
        try:
            await asyncio.wait_for(self._ready.wait(), RECOVERY_WAIT)
        except TimeoutError:
            raise Busy(
                f"liveupd is still recovering after it started (finishing or undoing an "
                f"earlier transition) after {RECOVERY_WAIT:.0f} s; see 'systemctl status "
                "liveupd' and try again"
            ) from None
        if self.stopping:
            raise Busy("liveupd is stopping; call again once it has (it restarts on demand)")

    def _staged_path(self) -> str:
        t = self.manager.staged
        return names.transition_path(t.id) if t is not None else names.NO_TRANSITION

    def snapshot(self, *, full: bool = True) -> dict[str, Any]:
        values: dict[str, Any] = {
            "State": str(self.manager.state),
            "StagedTransition": self._staged_path(),
        }
        # LatestKernel as last found (kernel/latest.py: found in a worker thread,
        # signalled by _latest_changed); absent until someone first read it.
        latest = self.manager.latest.known()
        if latest is not None:
            values["LatestKernel"] = latest
        if full:  # this reads the disk: not on every engine event
            refusals = self._known_refusals()
            values["Unsupported"] = self._unsupported(refusals)
            values["Refusals"] = refusals
            values["Watchdog"] = self._watchdog()
        return values

    def _latest_changed(self, before: str | None, now: str) -> None:
        if before is None:  # the first value found: nothing was signalled before it
            self._published.setdefault("LatestKernel", now)
        else:
            self.publish(full=False)

    def publish(self, *, full: bool = True) -> None:
        """Signal the Manager properties that changed, and tell systemd the status.

        ``full=False`` (for engine events) looks at State, StagedTransition and
        LatestKernel as last found, none of which reads the disk.
        """
        if full and self.manager.latest.known() is not None:
            self.manager.latest.refresh()  # in the background; signalled if it changed
        now = self.snapshot(full=full)
        changed = {k: v for k, v in now.items() if self._published.get(k) != v}
        if changed:
            self._published.update(changed)
            self.emit_properties_changed(changed)
        text = self.status_text()
        if text != self._status:
            self._status = text
            self.parts.status(text)

    def seen(self) -> None:
        self._published = self.snapshot()

    # Properties read the disk; a failure must not fail GetAll (a status display):
    # it is logged, and the value errs on the safe side (LatestKernel: kernel/latest.py).
    # Unsupported and Refusals: as last looked at for signals (the LUKS volumes are not
    # read again), looked at now (cryptsetup, as a subprocess) when read.
    def _known_refusals(self) -> list[tuple[str, str]]:
        try:
            return [(r.reason, r.message) for r in self.manager.known_refusals()]
        except Exception as e:
            return self._refusals_failed(e)

    async def _refusals(self) -> list[tuple[str, str]]:
        if not self.named:
            # dbus-fast reads every property when the object is exported (see LatestKernel).
            return self._known_refusals()
        try:
            return [(r.reason, r.message) for r in await self.manager.refusals()]
        except Exception as e:
            return self._refusals_failed(e)

    @staticmethod
    def _refusals_failed(e: Exception) -> list[tuple[str, str]]:
        logs.event(LOG, "property.failed", level=logging.WARNING, name="Unsupported", error=repr(e))
        return [
            (
                "unknown",
                f"cannot tell whether kexec works here ({e}); see 'journalctl -u liveupd'",
            )
        ]

    @staticmethod
    def _unsupported(refusals: list[tuple[str, str]]) -> str:
        return "; ".join(message for _, message in refusals)

    def _watchdog(self) -> str:
        try:
            return self.manager.watchdog()
        except Exception as e:
            logs.event(
                LOG, "property.failed", level=logging.WARNING, name="Watchdog", error=repr(e)
            )
            return f"cannot tell which watchdog guards the jump ({e})"

    def status_text(self) -> str:
        state = self.manager.state
        t = self.manager.current
        release = t.ctx.target.release if t is not None and t.ctx.target else "?"
        if state is ManagerState.STAGED and t is not None:
            return f"Staged {release} (transition {t.id}); waiting for Execute"
        if state is ManagerState.RUNNING:
            if self.manager.staging or t is None:
                return "Staging a kernel"
            phase = t.phase or "starting"
            return f"Transition {t.id} to {release}: {phase} ({t.progress}%)"
        if self.manager.rehearsing and t is not None:
            return f"Dry run: verifying {release} on the simulated new boot (transition {t.id})"
        if state is ManagerState.EXEC and t is not None:
            return f"Jumping into {release} (transition {t.id})"
        if state is ManagerState.FAILED and t is not None:
            why = t.error.message if t.error is not None else str(t.state)
            return f"Idle; transition {t.id} ended {t.state}: {why}"[:200]
        return f"Idle; running {self.manager.running_release()}"

    # ------------------------------------------------------------ methods --

    @arg_names("result")
    @dbus_method()
    @dbus_errors
    async def CanLiveUpdate(self) -> Str:
        call = caller.current()
        if await self.manager.refusals():
            return "na"
        return await self.parts.authorizer.can(call, names.ACTION_EXECUTE)

    @arg_names("kernels")
    @dbus_method()
    @dbus_errors
    async def ListKernels(self) -> KernelList:
        kernels = await asyncio.to_thread(self.manager.kernels)
        return [(k.release, k.kernel_path, k.initrd_path or "", k.running) for k in kernels]

    @arg_names("kernels")
    @dbus_method()
    @dbus_errors
    async def ListKernelDetails(self) -> KernelDetails:
        rows = await asyncio.to_thread(self.manager.kernel_verdicts)
        held = await asyncio.to_thread(self.manager.quarantine)
        latest = next((k.release for k, v in reversed(rows) if v.ok), "")
        return [
            kernel_details(k, v, k.release == latest and v.ok, held.entry(k.release))
            for k, v in rows
        ]

    @arg_names("kernels", "problem")
    @dbus_method()
    @dbus_errors
    async def ListQuarantine(self) -> QuarantineList:
        held = await asyncio.to_thread(self.manager.quarantine)
        rows = [(k.release, k.kernel, k.transition, k.reason, k.since) for k in held.kernels]
        return rows, held.problem

    @arg_names("cleared")
    @dbus_method()
    @dbus_errors
    async def ClearQuarantine(self, release: Str) -> StrList:
        call = caller.current()
        await self._check_sizes(
            call, lambda: limits.check_string("ClearQuarantine", "the release", release, 256)
        )
        await self._wait_until_ready(call)
        uid = await self.parts.authorizer.require(
            call, names.ACTION_STAGE, interactive=call.interactive
        )
        if release and ("/" in release or not release.isprintable()):
            raise InvalidArgument(
                f"ClearQuarantine: {quote(release)} is not a kernel release; give one as "
                "'liveupctl kernels' shows it, or \"\" for every kernel"
            )
        try:
            cleared = await asyncio.to_thread(self.manager.clear_quarantine, release)
        finally:
            self.publish()
        logs.event(
            LOG,
            "quarantine.clear",
            sender=call.sender,
            uid=uid,
            release=clip(release or "all"),
            cleared=len(cleared.kernels),
        )
        return [k.release for k in cleared.kernels]

    @arg_names("id", "transition")
    @dbus_method()
    @dbus_errors
    async def Stage(self, kernel: Str, initrd: Str, cmdline: Str, options: Options) -> IdAndPath:
        call = caller.current()

        def sizes() -> None:
            limits.check_string("Stage", "the kernel", kernel, limits.MAX_PATH)
            limits.check_string("Stage", "the initrd", initrd, limits.MAX_PATH)
            limits.check_string("Stage", "the command line", cmdline, limits.MAX_CMDLINE)
            limits.check_options("Stage", options)

        await self._check_sizes(call, sizes)
        await self._wait_until_ready(call)
        interactive = limits.peek_bool(options, "interactive") or call.interactive
        uid = await self.parts.authorizer.require(call, names.ACTION_STAGE, interactive=interactive)
        opts = parse_options("Stage", options, STAGE_OPTIONS)
        sha256 = str(opts.get("sha256", ""))
        if sha256 and not SHA256.match(sha256):
            raise InvalidArgument(
                f"Stage: option 'sha256' must be 64 hexadecimal digits, not {quote(sha256)}; "
                "compute it with sha256sum"
            )
        request = StageRequest(
            kernel=kernel,
            initrd=initrd,
            cmdline=cmdline,
            append=str(opts.get("append", "")),
            sha256=sha256,
            profile=str(opts.get("profile", "")),
        )
        logs.event(
            LOG, "stage.requested", sender=call.sender, uid=uid, kernel=clip(kernel or "latest")
        )
        try:
            t = await self.manager.stage(request)
        finally:
            self.publish()
        logs.event(LOG, "stage.done", transition=t.id, sender=call.sender, uid=uid)
        return t.id, names.transition_path(t.id)

    @arg_names("id", "transition")
    @dbus_method()
    @dbus_errors
    async def Execute(self, options: Options) -> IdAndPath:
        call = caller.current()
        await self._check_sizes(call, lambda: limits.check_options("Execute", options))
        await self._wait_until_ready(call)
        interactive = limits.peek_bool(options, "interactive") or call.interactive
        uid = await self.parts.authorizer.require(
            call, names.ACTION_EXECUTE, interactive=interactive
        )
        opts = parse_options("Execute", options, EXECUTE_OPTIONS)
        try:
            mode = ExecMode(str(opts.get("mode", ExecMode.DIRECT)))
        except ValueError:
            raise InvalidArgument(
                f"Execute: option 'mode' must be 'direct' or 'systemd', not {quote(opts['mode'])}"
            ) from None
        self.manager.executable()  # Busy / NotStaged before asking logind
        await self._check_inhibitors(call, uid, bool(opts.get("ignore-inhibitors")), interactive)
        # The hooks are found (and checked) off the event loop, within a time bound.
        hooks = await self.manager.engine.discover_hooks()
        # The caller's login session is ended last (liveupd/sessions/step.py).
        caller_pid = await caller.unix_pid(self.parts.bus, call.sender)
        if self.parts.guard is not None:
            # The jump waits until this call's reply is in the socket.
            self.parts.gate.hold(self.parts.guard.reply_written(call.sender, call.serial))
        try:
            t = self.manager.execute(mode, hooks, caller_pid=caller_pid)
        finally:
            # Not full: Execute changes neither the installed kernels (LatestKernel) nor
            # whether kexec works (Unsupported), and the old side is under way.
            self.publish(full=False)
        logs.event(LOG, "execute.started", transition=t.id, mode=str(mode), uid=uid)
        return t.id, names.transition_path(t.id)

    async def _check_sizes(self, call: caller.Call, check: Callable[[], None]) -> None:
        """The cheap size checks, first of all; a refusal is logged under the caller's uid."""
        try:
            check()
        except InvalidArgument:
            # What the caller sent may be megabytes, held in dbus-fast's reference
            # cycles until the garbage collector runs: make it run.
            memory.collect_soon()
            with contextlib.suppress(Exception):  # only for the refusal log's key
                await caller.unix_user(self.parts.bus, call.sender)
            raise

    async def _check_inhibitors(
        self, call: caller.Call, uid: int, ignore: bool, interactive: bool
    ) -> None:
        try:
            blockers = [b.describe() for b in await inhibit.shutdown_blockers(self.parts.bus)]
        except inhibit.InhibitorsUnknown as e:
            blockers = [f"unknown ({e})"]
        if not blockers:
            return
        held = "; ".join(blockers)
        if not ignore:
            raise Inhibited(
                f"a shutdown inhibitor blocks the transition: {held}. Wait until it is "
                "released (systemd-inhibit --list), or call again with ignore-inhibitors "
                "(liveupctl exec --ignore-inhibitors) if you are allowed to"
            )
        await self.parts.authorizer.require(
            call, names.ACTION_EXECUTE_IGNORE_INHIBITORS, interactive=interactive
        )
        logs.event(LOG, "inhibitors.ignored", level=logging.WARNING, uid=uid, inhibitors=held)

    @dbus_method()
    @dbus_errors
    async def Cancel(self) -> Nothing:
        call = caller.current()
        await self._wait_until_ready(call)
        uid = await self.parts.authorizer.require(
            call, names.ACTION_STAGE, interactive=call.interactive
        )
        logs.event(LOG, "cancel.requested", sender=call.sender, uid=uid)
        try:
            t = await self.manager.cancel()
        finally:
            self.publish()
        logs.event(LOG, "cancel.done", transition=t.id, state=str(t.state))

    @arg_names("blockers")
    @dbus_method()
    @dbus_errors
    async def ListBlockers(self) -> BlockerList:
        found = await blockers(
            self.manager, self.parts.bus, ready=self._ready.is_set(), stopping=self.stopping
        )
        return [b.as_tuple() for b in found]

    @arg_names("history")
    @dbus_method()
    @dbus_errors
    async def GetHistory(self, limit: UInt32) -> Str:
        entries = await asyncio.to_thread(self.manager.history, limit)
        return json.dumps(entries, sort_keys=True)

    # --------------------------------------------------------- properties --

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> Str:
        return str(self.manager.state)

    @dbus_property(access=PropertyAccess.READ)
    def StagedTransition(self) -> ObjectPath:
        return self._staged_path()

    @dbus_property(access=PropertyAccess.READ)
    def RunningKernel(self) -> Str:
        return self.manager.running_release()

    @dbus_property(access=PropertyAccess.READ)
    async def LatestKernel(self) -> Str:
        if not self.named:
            # dbus-fast reads every property when the object is exported, for an
            # InterfacesAdded signal sent before the name is owned (no client asked
            # by that name yet): no search for that.
            return self.manager.latest.known() or ""
        return await self.manager.latest.get()  # Stage's checks run in a worker thread

    @dbus_property(access=PropertyAccess.READ)
    async def Unsupported(self) -> Str:
        return self._unsupported(await self._refusals())

    @dbus_property(access=PropertyAccess.READ)
    async def Refusals(self) -> RefusalList:
        return await self._refusals()

    @dbus_property(access=PropertyAccess.READ)
    def Watchdog(self) -> Str:
        return self._watchdog()

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> Str:
        return __version__

    @dbus_property(access=PropertyAccess.READ)
    def DryRun(self) -> Bool:
        return self.manager.backends.dry_run

    # ------------------------------------------------------------ signals --

    @arg_names("transition", "phase")
    @dbus_signal()
    def PhaseChanged(self, transition: str, phase: str) -> PhaseChangedArgs:
        return transition, phase

    @arg_names("transition", "hook", "phase", "result", "usec")
    @dbus_signal()
    def HookFinished(
        self, transition: str, hook: str, phase: str, result: str, usec: int
    ) -> HookFinishedArgs:
        return transition, hook, phase, result, usec

    @arg_names("transition", "error", "message")
    @dbus_signal()
    def TransitionFailed(self, transition: str, error: str, message: str) -> TransitionFailedArgs:
        return transition, error, message

    @arg_names("transition", "ok", "report")
    @dbus_signal()
    def Recovered(self, transition: str, ok: bool, report: str) -> RecoveredArgs:
        return transition, ok, report


annotate_property(ManagerInterface.RunningKernel, EMITS_CHANGED, "const")
annotate_property(ManagerInterface.Version, EMITS_CHANGED, "const")
annotate_property(ManagerInterface.DryRun, EMITS_CHANGED, "const")

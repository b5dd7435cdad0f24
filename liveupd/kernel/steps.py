"""The built-in kernel steps: check (resolve and validate), load (undo: unload), exec."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from liveupd.errors import Failed, InvalidArgument
from liveupd.kernel.cmdline import Additions, transition_param
from liveupd.kernel.resolve import Resolved, open_target, resolve
from liveupd.transition.checkpoint import EXEC_STAMP_NS, load_checkpoint, write_exec_stamp
from liveupd.transition.context import Fact, TransitionContext
from liveupd.transition.journal import transitions_dir
from liveupd.transition.phases import Phase
from liveupd.transition.steps import FIRST, BuiltinStep
from liveupd.transition.undo import AnyUndo, UnloadUndo

# The initrd's digest as checked at stage: the load opens it again and compares.
INITRD_SHA256: Fact[str] = Fact("kernel.initrd-sha256")


def carried_words(ctx: TransitionContext) -> tuple[str, ...]:
    """The words liveupd added to the running kernel's command line, when this boot came
    from one of its transitions (``liveupd.transition=ID``, its checkpoint still there)."""
    try:
        tid = transition_param(ctx.backends.system.cmdline())
    except InvalidArgument:  # an unbalanced quote: resolve reports it if the line is used
        return ()
    if tid is None or "/" in tid or tid in ("", ".", ".."):
        return ()
    checkpoint = load_checkpoint(transitions_dir(ctx.config.state_dir) / tid)
    return checkpoint.new.added if checkpoint is not None else ()


class CheckStep(BuiltinStep):
    kind = "kernel-check"
    name = "kernel-check"
    phase = Phase.CHECK
    order = FIRST

    def __init__(
        self, additions: Callable[[TransitionContext, str], Additions] | None = None
    ) -> None:
        # The words other parts of liveupd add to the command line (given by assembly).
        self.additions = additions

    def _resolve(self, ctx: TransitionContext) -> Resolved:
        ours = self.additions

        def additions(release: str) -> Additions:  # for the release resolve chose
            return ours(ctx, release) if ours is not None else Additions()

        return resolve(
            ctx.request,
            ctx.config,
            ctx.backends.system,
            ctx.id,
            additions=additions,
            carried=carried_words(ctx),
        )

    async def apply(self, ctx: TransitionContext) -> None:
        resolved = await asyncio.to_thread(self._resolve, ctx)
        target = resolved.target
        ctx.target = target
        ctx.facts.set(INITRD_SHA256, resolved.initrd_sha256)
        ctx.journal.update(target=target.to_json())
        ctx.log(
            "kernel.resolved",
            release=target.release,
            kernel=target.kernel_path,
            initrd=target.initrd_path,
            cmdline=target.cmdline,
            sha256=target.sha256,
            initrd_sha256=resolved.initrd_sha256 or None,
            image=resolved.image.describe(),
            signed=resolved.image.signed,
            extracted=resolved.extracted or None,
            uki_profile=(
                resolved.uki.profile.label if resolved.uki and resolved.uki.profile else None
            ),
            initrd_parts=list(resolved.initrd_parts) or None,
        )
        for warning in resolved.warnings:  # what a unified kernel image brings that is left out
            ctx.log("kernel.uki-left-out", level=logging.WARNING, what=warning)


class LoadStep(BuiltinStep):
    kind = "kernel-load"
    name = "kernel-load"
    phase = Phase.LOAD
    order = FIRST

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        return UnloadUndo()

    async def apply(self, ctx: TransitionContext) -> None:
        assert ctx.target is not None
        target = ctx.target
        initrd_sha256 = ctx.facts.get_or(INITRD_SHA256, "")

        def load() -> None:
            with open_target(target, ctx.config, initrd_sha256=initrd_sha256) as opened:
                ctx.backends.kexec.load(opened, target.cmdline)

        await asyncio.to_thread(load)
        ctx.log("kernel.loaded", release=target.release, kernel=target.kernel_path)


async def undo_load(ctx: TransitionContext, record: UnloadUndo) -> None:
    await asyncio.to_thread(ctx.backends.kexec.unload)
    ctx.log("kernel.unloaded", loaded=ctx.backends.kexec.is_loaded())


class ExecStep(BuiltinStep):
    kind = "exec"
    name = "exec"
    phase = Phase.EXEC
    order = FIRST

    async def apply(self, ctx: TransitionContext) -> None:
        if EXEC_STAMP_NS not in ctx.facts:
            write_exec_stamp(ctx)
        ctx.log("exec.jump", mode=str(ctx.mode), level=logging.WARNING)
        try:
            await asyncio.to_thread(ctx.backends.kexec.jump, ctx.mode)
        except OSError as e:
            raise Failed(f"the jump into the new kernel failed: {e.strerror or e}") from e

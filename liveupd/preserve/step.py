"""The preserve steps: refuse what CRIU cannot dump (check), dump (checkpoint).

``preserve-check`` (check phase) inspects every service ``[preserve] units``
lists: it must run, be one process tree, hold no device file open and share
the host's mount namespace, and its images must fit in the state directory's
free space; otherwise the stage is refused, naming the service, before
anything changed.  ``preserve`` (checkpoint phase, before the checkpoint
record) checks again and dumps each service with ``--leave-stopped`` into
``<transition>/preserve/<unit>/``, through ``systemd-run`` (CRIU cannot run
inside liveupd's sandbox).  Its undo resumes the services (SIGCONT, sent by
systemd to the whole unit) and removes the images.  A failed dump fails the
step: CRIU itself resumes a tree it did not dump, and the rollback resumes
the services dumped before it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from pathlib import Path

from liveupd.backends.base import ServiceBackend, ServiceTree
from liveupd.config import Config
from liveupd.errors import Failed, Unsupported
from liveupd.fsio import atomic_write_json
from liveupd.preserve.plan import (
    DUMP_LOG,
    PRESERVE_DIR,
    RECORD_NAME,
    RestoreRecord,
    dump_argv,
    estimate,
    images_dir,
    problems,
)
from liveupd.transition.context import TransitionContext
from liveupd.transition.phases import Phase
from liveupd.transition.records import PreservedService
from liveupd.transition.steps import FIRST, MIDDLE, BuiltinStep
from liveupd.transition.undo import AnyUndo, PreserveUndo

INSPECT_TIMEOUT = 30.0  # seconds to inspect one service
RESUME_TIMEOUT = 30.0
LOG_TAIL = 3  # lines of CRIU's log quoted in an error
_STAMP = re.compile(r"^\(\s*[0-9.]+\)\s*")


async def find_problems(
    config: Config, backend: ServiceBackend
) -> tuple[list[ServiceTree], list[str]]:
    """Every listed service, inspected; and why CRIU cannot dump them (empty: it can)."""
    trees, found = [], []
    for unit in config.preserve.units:
        try:
            tree = await asyncio.wait_for(backend.inspect(unit), INSPECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            found.append(f"{unit}: cannot be inspected: {getattr(e, 'strerror', None) or e}")
            continue
        trees.append(tree)
        found += problems(tree)
    state_dir = str(config.state_dir)
    need = sum(estimate(t) for t in trees)
    if trees and not found:
        free = backend.free_bytes(state_dir)
        if need > free:
            found.append(
                f"the checkpoint of {', '.join(t.unit for t in trees)} needs about "
                f"{need >> 20} MiB, {state_dir} has {free >> 20} MiB free"
            )
    return trees, found


async def inspect_all(ctx: TransitionContext) -> list[ServiceTree]:
    """Every listed service, checked; Unsupported naming each one that cannot be dumped."""
    trees, found = await find_problems(ctx.config, ctx.backends.services)
    if found:
        raise Unsupported(
            "[preserve] units cannot be preserved: "
            + "; ".join(found)
            + f". Stop them, or remove them from [preserve] units in {ctx.config_file}"
        )
    return trees


class PreserveCheckStep(BuiltinStep):
    kind = "preserve"
    name = "preserve-check"
    phase = Phase.CHECK
    order = FIRST - 1  # before kernel-check: a refusal costs no kernel validation

    async def apply(self, ctx: TransitionContext) -> None:
        if not ctx.config.preserve.units:
            return
        trees = await inspect_all(ctx)
        for t in trees:
            ctx.log(
                "preserve.checked",
                unit=t.unit,
                pid=t.main_pid,
                processes=len(t.tasks),
                estimate_bytes=sum(x.anon_bytes for x in t.tasks),
            )


class PreserveStep(BuiltinStep):
    kind = "preserve"
    name = "preserve"
    phase = Phase.CHECKPOINT
    order = MIDDLE

    def prepare(self, ctx: TransitionContext) -> AnyUndo | None:
        units = tuple(ctx.config.preserve.units)
        return PreserveUndo(units=units) if units else None

    async def apply(self, ctx: TransitionContext) -> None:
        if not ctx.config.preserve.units:
            return
        trees = await inspect_all(ctx)
        dumped: list[PreservedService] = []
        for tree in trees:
            try:
                dumped.append(await self._dump(ctx, tree))
            except Failed as e:
                # A failed step undoes its own work: resume those dumped before.
                try:
                    await undo_preserve(ctx, PreserveUndo(units=tuple(ctx.config.preserve.units)))
                except Failed as undo:
                    raise Failed(f"{e.message}; {undo.message}") from e
                raise
        # Their durations in the transition's report (verification adds the restores).
        ctx.journal.update(preserved=tuple(dumped))

    async def _dump(self, ctx: TransitionContext, tree: ServiceTree) -> PreservedService:
        conf = ctx.config.preserve
        images = images_dir(ctx.dir, tree.unit)
        images.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = dump_argv(conf.criu, tree, images)
        ctx.log("preserve.dumping", unit=tree.unit, pid=tree.main_pid, argv=argv)
        started = time.monotonic()
        name = f"liveupd-criu-dump-{ctx.id}-{tree.main_pid}"
        try:
            run = await ctx.backends.services.run_outside(name, argv, conf.dump_timeout)
        except (OSError, TimeoutError) as e:
            raise Failed(
                f"the checkpoint of {tree.unit} failed: systemd-run: "
                f"{getattr(e, 'strerror', None) or e or 'timed out'}"
            ) from e
        usec = int((time.monotonic() - started) * 1e6)
        if run.rc != 0:
            why = log_tail(images / DUMP_LOG) or run.output or f"criu exited with {run.rc}"
            raise Failed(
                f"the checkpoint of {tree.unit} (pid {tree.main_pid}) failed: criu dump: {why}. "
                f"Remove it from [preserve] units in {ctx.config_file}, or see {images / DUMP_LOG}"
            )
        size = sum(p.stat().st_size for p in images.iterdir() if p.is_file())
        record = RestoreRecord(
            unit=tree.unit,
            transition=ctx.id,
            pid=tree.main_pid,
            images=str(images),
            criu=conf.criu,
            sockets=tree.stdio_sockets,
            dumped=time.time(),
            dump_usec=usec,
            image_bytes=size,
        )
        atomic_write_json(images / RECORD_NAME, record.to_json(), mode=0o600)
        ctx.log(
            "preserve.dumped",
            level=logging.WARNING,
            unit=tree.unit,
            pid=tree.main_pid,
            dump_usec=usec,
            image_bytes=size,
            note="left stopped until the jump; a rollback resumes it",
        )
        return PreservedService(unit=tree.unit, dump_usec=usec, image_bytes=size)


async def undo_preserve(ctx: TransitionContext, record: PreserveUndo) -> None:
    """Resume every listed service whose dump started (SIGCONT: harmless to one that
    was not stopped: CRIU resumes a tree it failed to dump) and remove the images;
    Failed naming the services that could not be resumed."""
    failed = []
    for unit in record.units:
        if not images_dir(ctx.dir, unit).exists():
            continue  # never dumped: nothing stopped it
        try:
            await asyncio.wait_for(ctx.backends.services.resume(unit), RESUME_TIMEOUT)
        except (OSError, TimeoutError) as e:
            failed.append(f"{unit} ({getattr(e, 'strerror', None) or e or 'timed out'})")
            continue
        ctx.log("preserve.resumed", unit=unit)
    shutil.rmtree(ctx.dir / PRESERVE_DIR, ignore_errors=True)
    if failed:
        raise Failed(
            "resuming the services left stopped by their checkpoint failed: "
            + ", ".join(failed)
            + ". "
            + ctx.on_machine("Resume them: systemctl kill --signal=SIGCONT UNIT")
        )


def log_tail(path: Path) -> str:
    """CRIU's last error lines in its log (or its last lines), without timestamps."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    # CRIU's lines start with a timestamp, "(00.012345) ": dropped.
    lines = [_STAMP.sub("", line).strip() for line in lines]
    errors = [line for line in lines if "Error" in line] or lines
    return " | ".join(errors[-LOG_TAIL:])[:600]

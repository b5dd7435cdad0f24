"""Random sequences of Stage, Execute and Cancel against one Manager (seeded, repeatable).

Calls arrive as they would from several D-Bus clients: concurrently, with and
without time in between, whatever state the Manager is in.  After every call
the Manager's answer must be consistent with the machine, and at the end
every transition is finished and the machine is as it was:

* whenever the Manager says ``idle`` or ``failed`` (no Stage under way),
  no kernel is loaded, nothing is unbound, down or frozen;
* at most one transition is staged or running;
* every hook that ran was undone (most recent first) unless its transition
  reached exec; refused calls are Busy or NotStaged, nothing else.

(hypothesis' stateful testing would shrink a failing sequence; it is not in
the test environment, so the sequences come from fixed seeds instead.)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from pathlib import Path

import pytest

from liveupd.backends import dryrun
from liveupd.config import Config
from liveupd.errors import Busy, Failed, NotStaged
from liveupd.manager import Manager, ManagerState
from liveupd.transition.context import StageRequest
from liveupd.transition.phases import ExecMode, TransitionState
from tests.conftest import HookFactory
from tests.faults.plan import machine_problems

TARGET = "6.1.0-56-cloud-amd64"
OPS = ("stage", "stage", "execute", "execute", "cancel", "cancel", "pause", "yield", "settle")


async def refusable(call: Awaitable[object]) -> str:
    """Run a call a client made; how it ended (refusals are part of the protocol)."""
    try:
        await call
    except (Busy, NotStaged) as e:
        return e.kind
    except Failed as e:  # a Cancel that came too late (exec)
        assert "can no longer be cancelled" in e.message, e.message
        return "too-late"
    return "ok"


def check(manager: Manager, state_dir: Path) -> None:
    live = [
        t
        for t in manager.transitions.values()
        if t.state in (TransitionState.STAGED, TransitionState.RUNNING)
    ]
    assert len(live) <= 1, [t.id for t in live]
    if manager.state in (ManagerState.IDLE, ManagerState.FAILED) and not manager.staging:
        assert machine_problems(state_dir) == [], manager.state


@pytest.mark.parametrize("seed", range(8))
def test_random_calls_keep_the_manager_and_the_machine_consistent(
    seed: int, config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    make_hook("10-q", "quiesce", f"sleep 0.02; echo run q >> {log}", f"echo undo q >> {log}")
    make_hook("10-u", "unbind", f"echo run u >> {log}", f"echo undo u >> {log}")
    rng = random.Random(seed)
    manager = Manager(config, dryrun.make(config.state_dir))
    outcomes: list[str] = []

    async def go() -> None:
        await manager.start()
        calls: list[asyncio.Task[str]] = []
        for _ in range(40):
            op = rng.choice(OPS)
            if op == "stage":
                calls.append(
                    asyncio.create_task(refusable(manager.stage(StageRequest(kernel=TARGET))))
                )
            elif op == "cancel":
                calls.append(asyncio.create_task(refusable(manager.cancel())))
            elif op == "execute":
                try:
                    manager.execute(ExecMode.DIRECT)
                    outcomes.append("execute ok")
                except (Busy, NotStaged) as e:
                    outcomes.append(f"execute {e.kind}")
            elif op == "pause":
                await asyncio.sleep(rng.random() * 0.06)
            elif op == "settle":  # the clients wait for their replies
                outcomes.extend(await asyncio.gather(*calls))
                calls.clear()
            else:
                await asyncio.sleep(0)
            check(manager, config.state_dir)
            if any(t.state is TransitionState.EXEC for t in manager.transitions.values()):
                break  # the (simulated) machine jumped: this sequence is over
        outcomes.extend(await asyncio.gather(*calls))
        for t in list(manager.transitions.values()):
            if t.task is not None:
                await t.task
        if manager.staged is not None:
            await manager.cancel()
        check(manager, config.state_dir)

    asyncio.run(go())
    states = {t.state for t in manager.transitions.values()}
    assert not states & {TransitionState.STAGED, TransitionState.RUNNING}, states
    assert manager.state is not ManagerState.RUNNING
    if TransitionState.EXEC not in states:
        assert machine_problems(config.state_dir) == []
    # Every hook that completed in a transition that did not reach exec was undone
    # once, and only those.
    steps = [
        s
        for t in manager.transitions.values()
        if t.state is not TransitionState.EXEC
        for s in t.ctx.journal.steps()
        if s.key.startswith("hook:")
    ]
    assert not [s.key for s in steps if s.status in ("done", "undoing", "undo-failed")]
    lines = log.read_text().splitlines() if log.exists() else []
    for hook in ("q", "u"):
        undone = sum(1 for s in steps if s.key == f"hook:10-{hook}" and s.status == "undone")
        assert lines.count(f"undo {hook}") == undone, (hook, lines)

"""The fault-injection matrix: every operation of the plan fails once, at every call.

A reference run of the plan (two hooks per phase, the jump failing so that
everything is undone) counts the calls of each operation the dry-run machine
can fail: device enumeration, unbind, bind, set link, sync, syncfs, freeze,
thaw, kexec load and unload, the jump, stopping and starting the remote-login
listeners, hook spawns, and journal writes (with
ENOSPC, where part of the record reaches the file, and with EIO, where all of
it does before the error).  Then, for each operation and each call N, a fresh
daemon-side Manager runs the same plan with the Nth call failing, and must
end with:

* the machine as it was: no kernel loaded, every device bound and link up,
  every filesystem thawed, the listeners running, and each hook that ran undone once, most recent
  first;
* the Manager not busy, the transition in a final state, its journal readable
  and naming the fault;
* a new Stage accepted.

The matrix size and how many scenarios returned to the prior state are
printed (and shown in pytest's summary).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveupd.backends import dryrun
from liveupd.backends.faults import Fault, FaultPlan
from liveupd.config.load import load_config
from liveupd.errors import LiveUpdError
from liveupd.manager import Manager, ManagerState
from liveupd.transition.context import StageRequest
from liveupd.transition.phases import ExecMode
from tests.faults import tally
from tests.faults.plan import (
    JUMP_FAILS,
    TARGET,
    Setup,
    as_text,
    completed_hooks,
    fast_root,
    hook_problems,
    journals,
    machine_problems,
    make_setup,
)

# Operation -> the errnos it fails with.  Journal writes: both disk-full and I/O error.
OPS: dict[str, tuple[str, ...]] = {
    "enumerate": ("ENODEV",),
    "unbind": ("EBUSY",),
    "bind": ("EBUSY",),
    "set-link": ("EIO",),
    "sync": ("EIO",),
    "syncfs": ("EIO",),
    "freeze": ("EIO",),
    "thaw": ("EIO",),
    "kexec-load": ("ENOMEM",),
    "kexec-unload": ("EBUSY",),
    "jump": ("EIO",),
    "unit-stop": ("EIO",),
    "unit-start": ("EIO",),
    "hook-spawn": ("EAGAIN",),
    "journal-write": ("ENOSPC", "EIO"),
}
LANES = 4  # scenarios run side by side (each on its own simulated machine)


@dataclasses.dataclass(frozen=True)
class Result:
    fault: Fault
    problems: tuple[str, ...]

    @property
    def returned(self) -> bool:
        return not self.problems


@dataclasses.dataclass
class Run:
    manager: Manager
    problems: list[str]
    stage_error: str = ""


async def run_plan(setup: Setup, faults: list[Fault]) -> Run:
    """Stage and execute the plan on a fresh Manager; what went wrong with the Manager."""
    config = load_config(setup.config)
    backends = dryrun.make(config.state_dir, setup.machine_file(faults))
    manager = Manager(config, backends)
    await manager.start()
    run = Run(manager, [])
    try:
        t = await manager.stage(StageRequest(kernel=TARGET))
    except LiveUpdError as e:
        t = None  # a failed Stage undid itself; nothing more to run
        run.stage_error = e.message
    if t is not None:
        manager.execute(ExecMode.DIRECT)
        assert t.task is not None
        await t.task
    if manager.state in (ManagerState.RUNNING, ManagerState.STAGED):
        run.problems.append(f"the Manager is left {manager.state}")
    return run


def reference_counts(root: Path) -> dict[str, int]:
    setup = make_setup(root)
    run = asyncio.run(run_plan(setup, [JUMP_FAILS]))
    assert run.problems == [], run.problems
    assert machine_problems(setup.state_dir) == []
    faults = run.manager.backends.faults
    assert isinstance(faults, FaultPlan)
    return {op: faults.calls[op] for op in OPS}


async def scenario(setup: Setup, fault: Fault) -> Result:
    setup.reset()
    run = await run_plan(setup, [JUMP_FAILS, fault])
    problems = run.problems + machine_problems(setup.state_dir)
    marker = f"{fault.op} call {fault.call})"
    found = journals(setup.state_dir)
    if not found:  # the journal itself could not be created: the Stage said why
        if marker not in run.stage_error:
            problems.append(f"no journal, and the Stage error does not name the fault: {marker}")
        problems += hook_problems(setup.hook_lines(), [])
    else:
        ((_, record),) = found
        if not record.state.terminal:
            problems.append(f"the transition is left {record.state}")
        problems += hook_problems(setup.hook_lines(), completed_hooks(record))
        if marker not in as_text(record) and fault != JUMP_FAILS:
            problems.append(f"the journal does not name the fault ({marker})")
    problems += await stage_again(run.manager, setup)
    return Result(fault, tuple(problems))


async def stage_again(manager: Manager, setup: Setup) -> list[str]:
    """The same Manager accepts a new Stage (then cancelled: the machine is as it was)."""
    try:
        await manager.stage(StageRequest(kernel=TARGET))
    except LiveUpdError as e:
        return [f"a new Stage was refused: {e.message}"]
    await manager.cancel()
    return machine_problems(setup.state_dir)


async def run_all(work: Path, faults: list[Fault], lanes: int = LANES) -> list[Result]:
    """Run the scenarios, ``lanes`` at a time (each lane its own machine and state)."""
    queue: asyncio.Queue[tuple[int, Fault]] = asyncio.Queue()
    for item in enumerate(faults):
        queue.put_nowait(item)
    results: dict[int, Result] = {}

    async def lane(n: int) -> None:
        lane_dir = work / f"lane{n}"
        lane_dir.mkdir()
        setup = make_setup(lane_dir)
        while not queue.empty():
            i, fault = queue.get_nowait()
            results[i] = await scenario(setup, fault)

    await asyncio.gather(*(lane(n) for n in range(min(lanes, len(faults)))))
    return [results[i] for i in range(len(faults))]


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with fast_root("liveupd-faults-") as path:
        yield path


@pytest.fixture(scope="module")
def counts(root: Path) -> dict[str, int]:
    return reference_counts(root / "reference")


def faults_of(op: str, counts: dict[str, int]) -> list[Fault]:
    return [Fault(op, n, error) for n in range(1, counts[op] + 1) for error in OPS[op]]


@pytest.mark.parametrize("op", list(OPS))
def test_every_call_of_every_operation_fails_once_and_the_machine_ends_as_it_was(
    op: str, counts: dict[str, int], root: Path
) -> None:
    assert counts[op] > 0, f"the plan never calls {op}: the matrix would not test it"
    work = root / op
    work.mkdir()
    results = asyncio.run(run_all(work, faults_of(op, counts)))
    tally.add(op, len(results), sum(r.returned for r in results))
    print(f"\n[faults] {op}: {len(results)} injected, {sum(r.returned for r in results)} returned")
    failed = [f"{r.fault.to_json()}: {'; '.join(r.problems)}" for r in results if not r.returned]
    assert failed == [], "\n".join(failed)

"""The transition engine on dry-run backends: order, concurrency, rollback, cancel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from liveupd.assembly import make_engine
from liveupd.backends import dryrun
from liveupd.config import Config
from liveupd.errors import ConfigError, HookFailed
from liveupd.transition.context import StageRequest
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.events import Event, PhaseChanged, StepFinished, TransitionFailed
from liveupd.transition.journal import read as read_journal
from liveupd.transition.phases import ExecMode, TransitionState
from tests.conftest import HookFactory

TARGET = "6.1.0-56-cloud-amd64"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def phases(self) -> list[str]:
        return [str(e.phase) for e in self.events if isinstance(e, PhaseChanged)]

    def steps(self) -> list[tuple[str, str, str]]:
        return [(e.name, e.action, e.result) for e in self.events if isinstance(e, StepFinished)]


def engine_for(config: Config) -> tuple[Engine, Recorder]:
    rec = Recorder()
    return make_engine(config, dryrun.make(config.state_dir), events=rec), rec


async def run_transition(engine: Engine, mode: ExecMode = ExecMode.DIRECT) -> Transition:
    t = await engine.stage(StageRequest(kernel=TARGET))
    task = engine.start_execute(t, mode)
    await task
    return t


def calls(config: Config) -> list[dict[str, object]]:
    return dryrun.SimMachine(config.state_dir).calls()


def ops(config: Config) -> list[str]:
    return [str(c["op"]) for c in calls(config)]


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_phases_run_in_order_with_builtins_between_hooks(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    log = tmp_path / "order.log"
    for name, phase in [
        ("10-flush", "flush"),
        ("10-quiesce", "quiesce"),
        ("60-late-unbind", "unbind"),
        ("10-early-unbind", "unbind"),
        ("10-checkpoint", "checkpoint"),
    ]:
        make_hook(name, phase, f"echo {name} >> {log}")
    engine, rec = engine_for(config)
    t = asyncio.run(run_transition(engine))

    assert t.state is TransitionState.EXEC
    assert rec.phases() == ["check", "load", "quiesce", "unbind", "checkpoint", "flush", "exec"]
    assert lines(log) == [
        "10-quiesce",
        "10-early-unbind",
        "60-late-unbind",
        "10-checkpoint",
        "10-flush",
    ]
    names = [s[0] for s in rec.steps()]
    # The device step (order 50) sits between the 10- and the 60- unbind hooks.
    assert names.index("10-early-unbind") < names.index("devices") < names.index("60-late-unbind")
    # The checkpoint follows the checkpoint hooks, the freeze follows the flush hooks.
    assert names.index("10-checkpoint") < names.index("checkpoint")
    assert names.index("10-flush") < names.index("storage") < names.index("exec")
    # The machine saw: load, link down, unbind, sync, freezes (root last), jump.
    seen = ops(config)
    assert seen[0] == "kexec_file_load"
    assert seen.index("set_link") < seen.index("unbind") < seen.index("sync") < seen.index("freeze")
    frozen = [c["mountpoint"] for c in calls(config) if c["op"] == "freeze"]
    assert frozen == ["/data", "/"]
    assert seen[-1] == "jump"


def test_hooks_sharing_a_prefix_run_concurrently(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    # Each of the 20- hooks waits (with a deadline) until the other has started:
    # that can only succeed if they run at the same time.
    a, b = tmp_path / "a.started", tmp_path / "b.started"
    wait = "i=0; while [ ! -e {f} ]; do i=$((i+1)); [ $i -gt 200 ] && exit 7; sleep 0.05; done"
    make_hook("20-a", "quiesce", f"touch {a}; " + wait.format(f=b))
    make_hook("20-b", "quiesce", f"touch {b}; " + wait.format(f=a))
    # Hooks with different prefixes never overlap: 30- starts after both 20- ended.
    spans = tmp_path / "spans"
    make_hook("30-x", "quiesce", f"date +%s%N >> {spans}; sleep 1; date +%s%N >> {spans}")
    make_hook("31-y", "quiesce", f"date +%s%N >> {spans}; sleep 1; date +%s%N >> {spans}")
    engine, rec = engine_for(config)
    t = asyncio.run(run_transition(engine))

    assert t.state is TransitionState.EXEC, t.error
    assert ("20-a", "run", "success") in rec.steps() and ("20-b", "run", "success") in rec.steps()
    x_start, x_end, y_start, y_end = map(int, lines(spans))
    assert x_end <= y_start, "hooks with different prefixes overlapped"
    assert y_end - x_start >= 2e9


def test_same_prefix_hooks_finish_together_in_about_one_sleep(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    spans = tmp_path / "spans"
    for name in ("40-one", "40-two"):
        make_hook(name, "quiesce", f"date +%s%N >> {spans}; sleep 1; date +%s%N >> {spans}")
    engine, _ = engine_for(config)
    asyncio.run(run_transition(engine))
    stamps = sorted(map(int, lines(spans)))
    starts, ends = stamps[:2], stamps[2:]
    assert max(starts) < min(ends), "the two hooks of one prefix did not overlap"


def test_failing_hook_rolls_back_everything_in_reverse_order(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    log = tmp_path / "undo.log"
    make_hook("10-q1", "quiesce", "true", f"echo q1 >> {log}")
    make_hook("20-q2", "quiesce", "true", f"echo q2 >> {log}")
    make_hook("10-u1", "unbind", "true", f"echo u1 >> {log}")
    make_hook("70-bad", "unbind", "echo it broke >&2; exit 3", f"echo bad >> {log}")
    make_hook("10-c1", "checkpoint", "true", f"echo c1 >> {log}")
    engine, rec = engine_for(config)
    t = asyncio.run(run_transition(engine))

    assert t.state is TransitionState.FAILED
    assert isinstance(t.error, HookFailed)
    assert t.error.hook == "70-bad"
    assert "70-bad" in t.error.message and "exited with status 3" in t.error.message
    assert "it broke" in t.error.message
    # Undo in reverse: the failed hook's own undo does not run, later phases never ran.
    assert lines(log) == ["u1", "q2", "q1"]
    seen = ops(config)
    # Devices were bound again and the link brought up; the kernel was unloaded last.
    assert seen[-3:] == ["bind", "set_link", "kexec_unload"]
    state = dryrun.SimMachine(config.state_dir).state()
    assert state["loaded"] is None and state["unbound"] == {} and state["frozen"] == []
    assert state["links_down"] == []
    failed = [e for e in rec.events if isinstance(e, TransitionFailed)]
    assert len(failed) == 1 and failed[0].error.endswith("HookFailed")
    journal = json.loads((t.ctx.dir / "journal.json").read_text())
    assert journal["error"]["step"] == "hook:70-bad"
    assert journal["undone"] == [
        "devices:devices",
        "hook:10-u1",
        "hook:20-q2",
        "hook:10-q1",
        "kernel-load:kernel-load",
    ]


def test_failure_after_freeze_thaws_before_anything_else(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    # A jump that fails (nothing loaded any more) after the freeze: thaw comes first.
    engine, _ = engine_for(config)

    async def go() -> Transition:
        t = await engine.stage(StageRequest(kernel=TARGET))
        engine.backends.kexec.unload()  # the jump will now fail
        await engine.start_execute(t, ExecMode.DIRECT)
        return t

    t = asyncio.run(go())
    assert t.state is TransitionState.FAILED
    assert t.error is not None and "jump" in t.error.message
    seen = ops(config)
    after = seen[seen.index("freeze") :]
    assert after.index("thaw") < after.index("bind")
    state = dryrun.SimMachine(config.state_dir).state()
    assert state["frozen"] == [] and state["unbound"] == {}
    # Held journal writes reached the disk after the thaw.
    journal = json.loads((t.ctx.dir / "journal.json").read_text())
    assert journal["state"] == "failed"
    assert not (config.state_dir / "pending").exists()


def test_on_failure_continue_goes_on(config: Config, make_hook: HookFactory) -> None:
    make_hook("10-flaky", "quiesce", "exit 1", extra='on-failure = "continue"')
    engine, rec = engine_for(config)
    t = asyncio.run(run_transition(engine))
    assert t.state is TransitionState.EXEC
    assert ("10-flaky", "run", "failed") in rec.steps()


def test_cancel_during_a_hook_kills_it_and_rolls_back(
    config: Config, make_hook: HookFactory, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    log = tmp_path / "undo.log"
    make_hook("10-first", "quiesce", "true", f"echo first >> {log}")
    make_hook("20-slow", "quiesce", f"touch {started}; sleep 60")
    engine, _ = engine_for(config)

    async def go() -> Transition:
        t = await engine.stage(StageRequest(kernel=TARGET))
        engine.start_execute(t, ExecMode.DIRECT)
        async with asyncio.timeout(20):
            while not started.exists():
                await asyncio.sleep(0.02)
        await engine.cancel(t)
        return t

    t = asyncio.run(go())
    assert t.state is TransitionState.CANCELLED
    assert lines(log) == ["first"]
    assert dryrun.SimMachine(config.state_dir).state()["loaded"] is None


def test_cancel_of_a_staged_transition_unloads(config: Config) -> None:
    engine, _ = engine_for(config)

    async def go() -> Transition:
        t = await engine.stage(StageRequest(kernel=TARGET))
        assert engine.backends.kexec.is_loaded()
        await engine.cancel(t)
        return t

    t = asyncio.run(go())
    assert t.state is TransitionState.CANCELLED
    assert not engine.backends.kexec.is_loaded()


def test_bad_hook_refuses_stage_and_changes_nothing(config: Config, make_hook: HookFactory) -> None:
    path = make_hook("10-bad", "quiesce", "true", extra="colour = 'red'")
    engine, _ = engine_for(config)
    with pytest.raises(ConfigError) as e:
        asyncio.run(engine.stage(StageRequest(kernel=TARGET)))
    assert f"{path}: colour: unknown key" in e.value.message
    assert calls(config) == []


def test_systemd_mode_neither_unbinds_nor_freezes(config: Config) -> None:
    engine, _ = engine_for(config)
    t = asyncio.run(run_transition(engine, ExecMode.SYSTEMD))
    assert t.state is TransitionState.EXEC
    seen = ops(config)
    assert "unbind" not in seen and "freeze" not in seen
    last = calls(config)[-1]
    assert last["op"] == "jump" and last["mode"] == "systemd"
    checkpoint = json.loads((t.ctx.dir / "checkpoint.json").read_text())
    # The shutdown helper and the verifier still know which devices to handle.
    assert [b["name"] for b in checkpoint["bindings"]] == ["virtio0"]


def test_a_failed_thaw_keeps_writes_held_rather_than_block_on_a_frozen_fs(
    config: Config, tmp_path: Path
) -> None:
    machine = json.loads(json.dumps(dryrun.DEFAULT_MACHINE))
    machine["errors"] = {"thaw": {"/": "EIO"}}
    machine_file = tmp_path / "machine.json"
    machine_file.write_text(json.dumps(machine))
    rec = Recorder()
    engine = make_engine(config, dryrun.make(config.state_dir, machine_file), events=rec)

    async def go() -> Transition:
        t = await engine.stage(StageRequest(kernel=TARGET))
        engine.backends.kexec.unload()  # the jump fails after the freeze
        await engine.start_execute(t, ExecMode.DIRECT)
        return t

    t = asyncio.run(go())
    assert t.state is TransitionState.ROLLBACK_FAILED
    assert t.error is not None
    failed = [e for e in rec.events if isinstance(e, TransitionFailed)]
    # The machine is simulated: no command for a real one (issue 18, case 6).
    assert "fsfreeze" not in failed[0].message
    assert "the machine is simulated (liveupd --dry-run)" in failed[0].message
    assert str(config.state_dir / "dry-run" / "machine.json") in failed[0].message
    # "/" holds the state directory and is still frozen: nothing was written to it
    # after the freeze, so the journal on disk still says running.
    assert read_journal(t.ctx.journal.path).state is TransitionState.RUNNING


def test_history_reports_devices_and_frozen_filesystems(config: Config) -> None:
    from liveupd.transition.history import history

    engine, _ = engine_for(config)
    t = asyncio.run(run_transition(engine))
    (entry,) = history(config.state_dir)
    assert entry["id"] == t.id and entry["state"] == "exec"
    assert entry["frozen"] == ["/data", "/"]
    (device,) = entry["devices"]
    assert device["driver"] == "virtio_net"
    assert device["interfaces"] == ["eth0 52:54:00:12:34:56"]
    assert device["bound_again"] is None  # not verified yet: that happens on the new kernel


def test_flush_duration_is_derived_when_the_frozen_journal_could_not_record_it(
    config: Config,
) -> None:
    from liveupd.transition.history import history
    from liveupd.transition.journal import Journal

    engine, _ = engine_for(config)
    t = asyncio.run(run_transition(engine))
    # On a real machine the journal is frozen before the flush phase ends.
    journal = Journal.load(t.ctx.journal.path)
    del journal.record.phases["flush"]
    journal.flush()
    (entry,) = history(config.state_dir)
    started = min(s.started for s in journal.steps() if s.phase == "flush")
    stamp = int((t.ctx.dir / "exec-stamp").read_text()) / 1e9
    assert entry["phases_usec"]["flush"] == int((stamp - started) * 1e6)
    assert entry["phases_usec"]["flush"] > 0

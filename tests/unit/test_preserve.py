"""[preserve] units (issue 16) on the host: the pure planning, the generator, and the
steps on the dry-run machine with a fake service backend (no CRIU, no real process)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liveupd.assembly import make_engine
from liveupd.backends import dryrun
from liveupd.backends.base import ProgramRun, ServiceTask, ServiceTree, UnitStatus
from liveupd.config import Config
from liveupd.errors import ConfigError, Unsupported
from liveupd.preserve import dropins
from liveupd.preserve.plan import (
    DROPIN_NAME,
    PER_TASK_BYTES,
    RestoreRecord,
    dropin,
    dump_argv,
    estimate,
    images_dir,
    problems,
    restore_argv,
)
from liveupd.transition.context import StageRequest
from liveupd.transition.engine import Transition
from liveupd.transition.phases import ExecMode, TransitionState
from liveupd.transition.records import PreservedService, PreserveOutcome, TransitionRecord
from tests.conftest import HookFactory

TARGET = "6.1.0-56-cloud-amd64"
KV = "kv.service"


def tree(unit: str = KV, **changes: object) -> ServiceTree:
    base = ServiceTree(
        unit=unit,
        active="active",
        main_pid=4242,
        tasks=(
            ServiceTask(pid=4242, ppid=1, devices=("/dev/null",), anon_bytes=8 << 20),
            ServiceTask(pid=4250, ppid=4242, anon_bytes=1 << 20),
        ),
        stdio_sockets=(31337,),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def record(tmp: Path, **changes: object) -> RestoreRecord:
    base = RestoreRecord(
        unit=KV,
        transition="t1",
        pid=4242,
        images=str(tmp / "transitions" / "t1" / "preserve" / KV),
        criu="/usr/sbin/criu",
        sockets=(31337,),
        dumped=1.5,
        dump_usec=1200,
        image_bytes=4096,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------- config ----


def test_units_must_be_service_names_listed_once(write_config: Callable[[str], Config]) -> None:
    assert write_config('[preserve]\nunits = ["kv.service", "w@1.service"]\n').preserve.units == [
        "kv.service",
        "w@1.service",
    ]
    for bad, said in [
        ('["kv"]', "expected service unit names"),
        ('["x.socket"]', "expected service unit names"),
        ('["a b.service"]', "expected service unit names"),
        ('["kv.service\\n"]', "expected service unit names"),  # re.match's $ let it in
        ('["w@.service"]', "expected service unit names"),  # a template runs nothing
        (f'["{"k" * 248}.service"]', "expected service unit names"),  # 256 characters
        ('["kv.service", "kv.service"]', "listed twice"),
    ]:
        with pytest.raises(ConfigError, match=said):
            write_config(f"[preserve]\nunits = {bad}\n")
    with pytest.raises(ConfigError, match="absolute path"):
        write_config('[preserve]\ncriu = "criu"\n')


# ------------------------------------------------------------- planning ----


def test_a_single_tree_without_devices_can_be_dumped() -> None:
    assert problems(tree()) == []
    assert estimate(tree()) == (9 << 20) + 2 * PER_TASK_BYTES


def test_what_criu_cannot_dump_is_named_with_the_service() -> None:
    kmsg = tree(
        tasks=(
            ServiceTask(pid=4242, ppid=1, devices=("/dev/kmsg", "/dev/null")),
            ServiceTask(pid=777, ppid=1, own_mount_ns=True),
        )
    )
    found = problems(kmsg)
    assert found == [
        "kv.service: process 4242 holds the device file(s) /dev/kmsg open; "
        "CRIU cannot dump device state",
        "kv.service: process 777 is not a descendant of the main process 4242; "
        "CRIU dumps one process tree",
        "kv.service: process 777 has its own mount namespace (PrivateTmp=, ProtectSystem=, ... "
        "in the unit); CRIU cannot dump it from the host's",
    ]
    stopped = problems(tree(active="inactive", main_pid=0))
    assert stopped == ["kv.service is not running (ActiveState=inactive, no main PID)"]


def test_dump_and_restore_command_lines(tmp_path: Path) -> None:
    images = tmp_path / "img"
    assert dump_argv("/usr/sbin/criu", tree(), images) == [
        "/usr/sbin/criu", "dump", "-t", "4242", "-D", str(images), "-o", "dump.log",
        "--leave-stopped", "--tcp-close", "--external", "unix[31337]",
    ]  # fmt: skip
    r = record(tmp_path)
    assert restore_argv(r) == [
        "/usr/sbin/criu", "restore", "-D", r.images, "-o", "restore.log", "-d",
        "--pidfile", f"{r.images}/restored.pid", "--manage-cgroups=ignore", "--tcp-close",
        "--inherit-fd", "fd[1]:socket:[31337]",
    ]  # fmt: skip


def test_the_dropin_restores_inside_the_unit_and_quotes_what_systemd_would_expand(
    tmp_path: Path,
) -> None:
    r = record(tmp_path)
    text = dropin(r)
    assert "[Service]\nType=forking\n" in text
    assert f"PIDFile={r.images}/restored.pid\n" in text
    assert "ExecStart=\nExecStart=+/usr/sbin/criu restore -D " in text
    assert "--inherit-fd fd[1]:socket:[31337]\n" in text
    odd = dropin(record(tmp_path, images="/var/lib/odd dir %n $HOME/kv.service"))
    assert '"/var/lib/odd dir %%n $$HOME/kv.service"' in odd
    assert "PIDFile=/var/lib/odd dir %%n $HOME/kv.service/restored.pid" in odd


def test_the_restore_record_round_trips_and_refuses_bad_fields(tmp_path: Path) -> None:
    r = record(tmp_path)
    assert RestoreRecord.from_json(json.loads(json.dumps(r.to_json()))) == r
    for change, said in [
        ({"pid": 1}, "pid"),
        ({"pid": True}, "pid"),
        ({"unit": "../x.service"}, "unit"),
        ({"images": "relative"}, "images"),
        ({"sockets": ["1"]}, "sockets"),
        ({"transition": "../.."}, "transition"),
        ({"extra": 1}, "unexpected"),
    ]:
        assert isinstance(change, dict)
        with pytest.raises(ValueError, match=said):
            RestoreRecord.from_json({**r.to_json(), **change})


# ------------------------------------------------------------ generator ----


def dumped(state: Path, r: RestoreRecord) -> None:
    (state / "pending").write_text(json.dumps({"id": r.transition}))
    d = Path(r.images)
    d.mkdir(parents=True)
    (d / "restore.json").write_text(json.dumps(r.to_json()))


def test_the_generator_writes_a_dropin_only_on_the_transitions_boot(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "generator"
    state.mkdir(mode=0o700)
    r = record(state)
    dumped(state, r)
    assert dropins.generate(out, state, "root=/dev/vda1 quiet") == []
    assert not out.exists()
    notes = dropins.generate(out, state, "root=/dev/vda1 liveupd.transition=t1")
    assert notes == [f"kv.service: restored from {r.images} (pid 4242)"]
    assert (out / "kv.service.d" / DROPIN_NAME).read_text() == dropin(r)


def test_the_generator_skips_records_that_do_not_match_their_place(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "generator"
    state.mkdir(mode=0o700)
    r = record(state)
    dumped(state, r)
    moved = dataclasses.replace(r, images="/etc")
    (Path(r.images) / "restore.json").write_text(json.dumps(moved.to_json()))
    notes = dropins.generate(out, state, "liveupd.transition=t1")
    assert len(notes) == 1 and "names another unit, transition or directory" in notes[0]
    assert not out.exists()


# ---------------------------------------------------------- the steps ----


class FakeServices:
    """Service units as the steps see them; criu 'dumps' by writing an image file."""

    def __init__(self, trees: dict[str, ServiceTree], dump_rc: int = 0) -> None:
        self.trees = trees
        self.dump_rc = dump_rc
        self.calls: list[tuple[str, str]] = []

    async def inspect(self, unit: str) -> ServiceTree:
        self.calls.append(("inspect", unit))
        return self.trees[unit]

    async def run_outside(self, name: str, argv: list[str], timeout: float) -> ProgramRun:
        self.calls.append(("run", argv[1]))
        images = Path(argv[argv.index("-D") + 1])
        if self.dump_rc == 0:
            (images / "pages-1.img").write_bytes(b"x" * 100)
        else:
            (images / "dump.log").write_text("Error (criu/files-ext.c:94): Can't dump file 4\n")
        return ProgramRun(rc=self.dump_rc, output="")

    async def resume(self, unit: str) -> None:
        self.calls.append(("resume", unit))

    async def start(self, unit: str, timeout: float) -> UnitStatus:
        raise AssertionError("not on the old kernel")

    async def reload(self) -> None:
        raise AssertionError("not on the old kernel")

    async def start_fresh(self, unit: str, timeout: float) -> UnitStatus:
        raise AssertionError("not on the old kernel")

    def free_bytes(self, path: str) -> int:
        return 1 << 40


def run(config: Config, services: FakeServices) -> Transition:
    backends = dataclasses.replace(dryrun.make(config.state_dir), services=services)
    engine = make_engine(config, backends, events=lambda e: None)

    async def go() -> Transition:
        t = await engine.stage(StageRequest(kernel=TARGET))
        if t.state is TransitionState.STAGED:
            await engine.start_execute(t, ExecMode.DIRECT)
        return t

    return asyncio.run(go())


def test_a_service_that_cannot_be_dumped_refuses_the_stage(
    write_config: Callable[[str], Config],
) -> None:
    config = write_config('[preserve]\nunits = ["kv.service"]\n')
    bad = tree(tasks=(ServiceTask(pid=4242, ppid=1, devices=("/dev/kmsg",)),))
    services = FakeServices({KV: bad})
    with pytest.raises(Unsupported, match=r"kv\.service: process 4242 holds .*/dev/kmsg"):
        run(config, services)
    assert [c[0] for c in services.calls] == ["inspect"]  # nothing dumped


def test_too_little_free_space_refuses_the_stage(write_config: Callable[[str], Config]) -> None:
    config = write_config('[preserve]\nunits = ["kv.service"]\n')
    services = FakeServices({KV: tree()})
    services.free_bytes = lambda path: 1 << 20  # type: ignore[method-assign]
    with pytest.raises(Unsupported, match=r"needs about 11 MiB, .* has 1 MiB free"):
        run(config, services)


def test_dumped_before_the_jump_and_resumed_by_a_rollback(
    write_config: Callable[[str], Config], make_hook: HookFactory
) -> None:
    config = write_config('[preserve]\nunits = ["kv.service"]\n')
    services = FakeServices({KV: tree()})
    t = run(config, services)
    assert t.state is TransitionState.EXEC, t.ctx.journal.record.error
    assert services.calls == [("inspect", KV), ("inspect", KV), ("run", "dump")]
    saved = RestoreRecord.from_json(
        json.loads((images_dir(t.ctx.dir, KV) / "restore.json").read_text())
    )
    assert (saved.unit, saved.pid, saved.sockets, saved.image_bytes) == (KV, 4242, (31337,), 100)
    # The dump's duration and size in the transition's report, not yet restored.
    [kept] = t.ctx.journal.record.preserved
    assert (kept.unit, kept.dump_usec, kept.image_bytes) == (KV, saved.dump_usec, 100)
    assert (kept.outcome, kept.restore_usec) == (PreserveOutcome.DUMPED, None)
    # A failing flush hook after the dump: rolled back, the service resumed, images gone.
    make_hook("10-fail", "flush", "exit 3")
    services = FakeServices({KV: tree()})
    t = run(config, services)
    assert t.state is TransitionState.FAILED
    assert services.calls[-1] == ("resume", KV)
    assert not (t.ctx.dir / "preserve").exists()


def test_a_failed_dump_fails_the_transition_naming_the_service(
    write_config: Callable[[str], Config],
) -> None:
    config = write_config('[preserve]\nunits = ["kv.service"]\n')
    services = FakeServices({KV: tree()}, dump_rc=1)
    t = run(config, services)
    failure = t.ctx.journal.record.error
    assert t.state is TransitionState.FAILED and failure is not None
    assert "the checkpoint of kv.service (pid 4242) failed: criu dump: Error" in failure.message
    assert services.calls[-1] == ("resume", KV)  # the step undid its own work
    assert not (t.ctx.dir / "preserve").exists()


# ------------------------------------------------------- liveupd --check ----


def test_liveupd_check_names_criu_check_and_the_services_criu_cannot_dump(
    write_config: Callable[[str], Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from liveupd.daemon import check as daemon_check
    from liveupd.preserve.systemd import SystemdServices

    fake_criu = tmp_path / "criu"
    fake_criu.write_text("#!/bin/sh\necho 'Error: no CHECKPOINT_RESTORE' >&2\nexit 1\n")
    fake_criu.chmod(0o755)
    config = write_config(f'[preserve]\nunits = ["kv.service"]\ncriu = "{fake_criu}"\n')
    bad = tree(tasks=(ServiceTask(pid=4242, ppid=1, devices=("/dev/kmsg",)),))

    async def inspect(self: SystemdServices, unit: str) -> ServiceTree:
        return bad

    monkeypatch.setattr(SystemdServices, "inspect", inspect)
    assert daemon_check.preserve_problems(config) == [
        f"preserve.criu: {fake_criu} check failed: Error: no CHECKPOINT_RESTORE",
        "preserve.units: kv.service: process 4242 holds the device file(s) /dev/kmsg open; "
        "CRIU cannot dump device state",
    ]
    assert daemon_check.preserve_problems(write_config("")) == []


# ------------------------------------------------------- the new kernel ----


class NewBootServices(FakeServices):
    """The new boot: the unit's start restored it (``restored``) or failed."""

    def __init__(self, restored: bool) -> None:
        super().__init__({})
        self.restored = restored

    async def start(self, unit: str, timeout: float) -> UnitStatus:
        self.calls.append(("start", unit))
        if self.restored:
            return UnitStatus("active", 4242, "success", start_usec=1000, ready_usec=41000)
        return UnitStatus("failed", 0, "exit-code")

    async def reload(self) -> None:
        self.calls.append(("reload", ""))

    async def start_fresh(self, unit: str, timeout: float) -> UnitStatus:
        self.calls.append(("start_fresh", unit))
        return UnitStatus("active", 999, "success")


class FakeJournal:
    def __init__(self, preserved: list[PreservedService]) -> None:
        self.record = TransitionRecord(id="t1", state=TransitionState.EXEC, created=1.0)
        self.record.preserved = preserved

    def update(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self.record, name, list(value))


class Ctx:
    """What check_restored uses of a TransitionContext."""

    def __init__(self, config: Config, services: NewBootServices) -> None:
        self.config = config
        self.dir = config.state_dir / "transitions" / "t1"
        self.backends = dataclasses.replace(dryrun.make(config.state_dir), services=services)
        self.logged: list[tuple[str, dict[str, object]]] = []
        # The journal as the preserve step left it: the dump, and one it never checks.
        other = PreservedService(unit="other.service", dump_usec=1, image_bytes=2)
        self.journal = FakeJournal([PreservedService(unit=KV, dump_usec=1, image_bytes=2), other])

    def log(self, event: str, /, **fields: object) -> None:
        self.logged.append((event, fields))


@pytest.mark.parametrize("restored", [True, False])
def test_verification_keeps_a_restore_or_starts_the_service_fresh_with_a_warning(
    write_config: Callable[[str], Config], restored: bool
) -> None:
    from typing import cast

    from liveupd.preserve.restore import check_restored
    from liveupd.transition.context import TransitionContext

    config = write_config('[preserve]\nunits = ["kv.service"]\n')
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    r = record(config.state_dir)
    dumped(config.state_dir, r)
    (Path(r.images) / "restore.log").write_text(
        "(00.1) Error (criu/cr-restore.c:1237): Can't fork for 4242: File exists\n"
    )
    services = NewBootServices(restored)
    ctx = Ctx(config, services)
    warnings = asyncio.run(
        check_restored(cast(TransitionContext, ctx), "quiet liveupd.transition=t1")
    )
    assert not Path(r.images).exists()  # the images go either way
    assert services.calls[-1] == ("reload", "")  # a later restart is an ordinary start
    kv, other = ctx.journal.record.preserved
    assert (kv.unit, kv.dump_usec, kv.image_bytes) == (KV, r.dump_usec, r.image_bytes)
    assert other.outcome is PreserveOutcome.DUMPED  # left as it was
    if restored:
        assert warnings == []
        assert ctx.logged[0][0] == "preserve.restored"
        assert ctx.logged[0][1]["restore_usec"] == 40000
        assert (kv.outcome, kv.restore_usec) == (PreserveOutcome.RESTORED, 40000)
    else:
        assert warnings == [
            "state of kv.service lost: started fresh (Error (criu/cr-restore.c:1237): "
            "Can't fork for 4242: File exists)"
        ]
        assert ("start_fresh", KV) in services.calls
        assert (kv.outcome, kv.restore_usec) == (PreserveOutcome.STARTED_FRESH, None)


def test_the_generator_imports_nothing_of_liveupd_on_an_ordinary_boot(tmp_path: Path) -> None:
    # systemd runs generators one after another before any unit starts, at every
    # boot and daemon-reload: on a boot that is not a live update's (this host's
    # /proc/cmdline has no liveupd.transition=) the entry point reads the command
    # line and stops, before the records, the backends or the safe open are imported.
    assert "liveupd.transition=" not in Path("/proc/cmdline").read_text()
    probe = (
        "import sys; from liveupd.preserve.generator import main; "
        f"rc = main([{str(tmp_path)!r}]); "
        "print(rc, sorted(m for m in sys.modules if m.startswith('liveupd')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split(" ", 1) == [
        "0",
        "['liveupd', 'liveupd.preserve', 'liveupd.preserve.generator']\n",
    ]
    assert list(tmp_path.iterdir()) == []

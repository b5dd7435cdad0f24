"""The plan every fault scenario runs, and what "the machine as it was" means.

A default configuration on the dry-run machine, with two hooks in each phase
of the old kernel (quiesce, unbind, checkpoint, flush), each with an undo; each
hook appends ``run NAME`` or ``undo NAME`` to one log, so a test can check that
exactly the hooks that ran were undone, in reverse order.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveupd import schema
from liveupd.backends import dryrun
from liveupd.backends.faults import Fault
from liveupd.transition.journal import JOURNAL_NAME, read, transitions_dir
from liveupd.transition.records import TransitionRecord
from tests.kernels import install_kernel

RUNNING = "6.1.0-55-cloud-amd64"
TARGET = "6.1.0-56-cloud-amd64"
# Two hooks per phase, on either side of the built-in steps (order 50, or last).
HOOKS = (
    ("10-q1", "quiesce"),
    ("60-q2", "quiesce"),
    ("10-u1", "unbind"),
    ("60-u2", "unbind"),
    ("10-c1", "checkpoint"),
    ("60-c2", "checkpoint"),
    ("10-f1", "flush"),
    ("60-f2", "flush"),
)
# Every scenario's jump fails: the run always ends in a rollback, so "as it was" is
# always what it must end as, and the undo operations are reached as well.
JUMP_FAILS = Fault("jump", 1, "EIO")
# The remote-login listeners, running: the sessions step stops them (undo: start).
UNITS = {"ssh.socket": "active", "ssh.service": "active"}


@dataclass(frozen=True)
class Setup:
    root: Path
    config: Path
    state_dir: Path
    hook_log: Path

    def machine_file(self, faults: Sequence[Fault], name: str = "machine.json") -> Path:
        path = self.root / name
        # The matrices end at the jump (as a real daemon does): no dry-run rehearsal of
        # the new boot, whose writes are verification's, tested in tests/verify.
        desc = {
            **dryrun.DEFAULT_MACHINE,
            "after_jump": "halt",
            "units": UNITS,
            "faults": [f.to_json() for f in faults],
        }
        path.write_text(json.dumps(desc))
        return path

    def hook_lines(self) -> list[str]:
        return self.hook_log.read_text().splitlines() if self.hook_log.exists() else []

    def reset(self) -> None:
        """A fresh state directory and hook log (same config), for the next scenario."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.hook_log.unlink(missing_ok=True)


def _argv(script: str) -> str:
    return json.dumps(["/bin/sh", "-c", script])


def make_setup(root: Path) -> Setup:
    boot = root / "boot"
    install_kernel(boot, RUNNING)
    install_kernel(boot, TARGET)
    hooks = root / "hooks.d"
    hooks.mkdir()
    log = root / "hooks.log"
    for name, phase in HOOKS:
        (hooks / f"{name}.hook").write_text(
            f'phase = "{phase}"\n'
            f"run = {_argv(f'echo run {name} >> {log}')}\n"
            f"undo = {_argv(f'echo undo {name} >> {log}')}\n"
        )
    state = root / "state"
    conf = root / "liveupd.conf"
    conf.write_text(
        textwrap.dedent(
            f"""
            [kernel]
            allowed-dirs = ["{boot}"]
            [hooks]
            dirs = ["{hooks}"]
            timeout = 30
            [daemon]
            state-dir = "{state}"
            """
        )
    )
    return Setup(root, conf, state, log)


@contextmanager
def fast_root(prefix: str) -> Iterator[Path]:
    """A directory on tmpfs when there is one: these tests fsync a lot, and the
    durability of the disk is not what they test (SIGKILL keeps the page cache)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------- the prior state --


def machine_problems(state_dir: Path) -> list[str]:
    """How the simulated machine differs from how it was before any Stage."""
    state = dryrun.SimMachine(state_dir).state()
    problems = []
    if state["loaded"] is not None:
        problems.append("a kernel is still loaded")
    if state["unbound"]:
        problems.append(f"still unbound: {sorted(state['unbound'])}")
    if state["links_down"]:
        problems.append(f"links still down: {state['links_down']}")
    if state["frozen"]:
        problems.append(f"still frozen: {state['frozen']}")
    stopped = sorted(u for u, s in state.get("units", {}).items() if s != UNITS.get(u))
    if stopped:
        problems.append(f"units still stopped: {stopped}")
    return problems


def hook_problems(lines: Sequence[str], completed: Sequence[str]) -> list[str]:
    """Every hook that completed its run was undone once, most recent first; no other."""
    ran = [line.split()[1] for line in lines if line.startswith("run ")]
    undone = [line.split()[1] for line in lines if line.startswith("undo ")]
    done = [h for h in ran if h in completed]
    if undone != list(reversed(done)):
        return [f"hooks run {ran} (completed {list(completed)}), undone {undone}"]
    return []


def journals(state_dir: Path) -> list[tuple[Path, TransitionRecord]]:
    """Every transition's journal, oldest first (each must read back: none is corrupt)."""
    out = []
    for d in transitions_dir(state_dir).iterdir() if transitions_dir(state_dir).is_dir() else []:
        path = d / JOURNAL_NAME
        out.append((path, read(path)))
    return sorted(out, key=lambda pr: pr[1].created)


def completed_hooks(record: TransitionRecord) -> list[str]:
    """Hooks whose run the journal shows as finished (whatever happened next)."""
    return [
        s.key.split(":", 1)[1]
        for s in record.steps
        if s.key.startswith("hook:") and s.status in ("done", "undoing", "undone", "undo-failed")
    ]


def as_text(record: Any) -> str:
    return json.dumps(schema.dump(record))

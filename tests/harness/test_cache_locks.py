"""The VM cache's file locks: one process at a time, re-entrant within a thread.

Two xdist workers starting on a cold cache both ran `apt-get update` on the
private lists, and the second failed on apt's own lock (33 VM tests errored).
Every apt command on those lists now runs under one flock.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.vm import cache, recipe

# A second process: take the lock without waiting, say whether it got it.
TRY_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a+") as f:
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("busy")
    else:
        print("got it")
"""

# A second process holding the lock until its stdin closes.
HOLD_LOCK = """
import fcntl, sys
with open(sys.argv[1], "a+") as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.read()
"""


def other_process_gets(path: Path) -> bool:
    out = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, str(path)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip() == "got it"


def held_in_this_process(path: Path) -> bool:
    with path.open("a+") as f:  # another open file description: flock sees a rival
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def test_the_lock_excludes_other_processes_until_released(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.lock"
    with cache.file_lock(path):
        assert not other_process_gets(path)
        with cache.file_lock(path):  # re-entrant: would block here otherwise
            assert not other_process_gets(path)
        assert not other_process_gets(path)  # the inner exit did not release it
    assert other_process_gets(path)


def test_a_waiter_says_so_and_gets_the_lock_once_it_is_free(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    said: list[str] = []
    got = threading.Event()
    waiting = threading.Event()

    def log(msg: str) -> None:
        said.append(msg)
        waiting.set()

    def take() -> None:
        with cache.file_lock(path, "waiting for the other one", log):
            got.set()

    t = threading.Thread(target=take)
    t.start()
    assert waiting.wait(30)
    assert not got.is_set()
    holder.stdin.close()  # the holder exits: its lock goes with it
    holder.wait(30)
    t.join(30)
    assert got.is_set() and said == ["waiting for the other one"]


def test_every_apt_command_runs_under_the_apt_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEUPD_VM_CACHE", str(tmp_path))
    lock = recipe.apt_dir() / "liveupd.lock"
    seen: list[bool] = []

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.append(held_in_this_process(lock))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)  # the module recipe calls
    recipe.apt_update()
    recipe.apt("apt-cache", "policy", "linux-image-amd64")
    assert seen == [True, True]
    assert not held_in_this_process(lock)

"""Hook manifests, discovery (override, mask), trust checks, and the runner."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import psutil
import pytest

from liveupd.errors import ConfigError
from liveupd.hooks.discovery import EntryStatus, effective_hooks, scan
from liveupd.hooks.manifest import load_manifest
from liveupd.hooks.runner import Outcome, ProgramResult, hook_environment, run_program
from tests.conftest import HookFactory

# ------------------------------------------------------------- manifests ----


def manifest(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_manifest_with_every_key(tmp_path: Path) -> None:
    p = manifest(
        tmp_path,
        "20-net.hook",
        'phase = "unbind"\nrun = ["/bin/true", "x"]\nundo = ["/bin/false"]\ntimeout = 5\n'
        'on-failure = "continue"\ndescription = "d"\nunbind = [{ driver = "e1000e" }]\n',
    )
    hook = load_manifest(p)
    assert hook.name == "20-net" and hook.prefix == 20
    m = hook.manifest
    assert m.run == ["/bin/true", "x"] and m.undo == ["/bin/false"]
    assert m.timeout == 5 and m.on_failure == "continue" and m.unbind[0].driver == "e1000e"
    assert hook.timeout(30) == 5


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("10-a.hook", 'phase = "quiesce"\nrun = ["/bin/true"]\nrn = 1\n', "rn: unknown key"),
        ("10-a.hook", 'run = ["/bin/true"]\n', "phase: required key is missing"),
        ("10-a.hook", 'phase = "exec"\nrun = ["/bin/true"]\n', "phase: expected one of quiesce"),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = []\n',
            "run: Value error, expected a non-empty list",
        ),
        ("10-a.hook", 'phase = "quiesce"\nrun = "true"\n', "run: Input should be a valid list"),
        ("10-a.hook", 'phase = "quiesce"\n', "a hook needs 'run'"),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = ["/bin/true"]\ntimeout = 0\n',
            "timeout: Input should be greater than 0",
        ),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = ["/bin/true"]\non-failure = "retry"\n',
            "on-failure: Input should be 'abort' or 'continue'",
        ),
        ("10-a.hook", "phase = \n", "not valid TOML"),
        # Strictly typed: no bool or string is taken for a number of seconds.
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = ["/bin/true"]\ntimeout = true\n',
            "timeout: Input should be a valid number (got True)",
        ),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = ["/bin/true"]\ntimeout = "5"\n',
            "timeout: Input should be a valid number (got '5')",
        ),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = ["/bin/true"]\ntimeout = 3601\n',
            "timeout: Input should be less than or equal to 3600",
        ),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = ["/bin/true"]\ntimeout = inf\n',
            "timeout: Input should be a finite number",
        ),
        ("10-a.hook", 'phase = 1\nrun = ["/bin/true"]\n', "phase: expected one of quiesce"),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = ["/bin/true", 5]\n',
            "run[1]: Input should be a valid string",
        ),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = ["/bin/true"]\ndescription = 5\n',
            "description: Input should be a valid string",
        ),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = ["/bin/true"]\non-failure = true\n',
            "on-failure: Input should be 'abort' or 'continue'",
        ),
        (
            "10-a.hook",
            'phase = "quiesce"\nrun = [' + ", ".join(['"x"'] * 65) + "]\n",
            "run: List should have at most 64 items",
        ),
        (
            "a-10.hook",
            'phase = "quiesce"\nrun = ["/bin/true"]\n',
            "file name: expected 'NN-name.hook'",
        ),
    ],
)
def test_bad_manifest_names_file_and_key(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    p = manifest(tmp_path, name, text)
    with pytest.raises(ConfigError) as e:
        load_manifest(p)
    assert e.value.problems[0].startswith(f"{p}: ")
    assert expected.replace("Value error, ", "") in e.value.problems[0], e.value.problems


# ------------------------------------------------------------- discovery ----


def test_admin_hook_overrides_vendor_hook_of_same_name(
    make_hook: HookFactory, hook_dirs: tuple[Path, Path]
) -> None:
    vendor = make_hook("10-net", "quiesce", "echo vendor")
    admin = make_hook("10-net", "unbind", "echo admin", admin=True)
    make_hook("20-only-vendor", "quiesce")
    entries = {e.name: e for e in scan(list(hook_dirs))}
    assert entries["10-net"].path == admin and entries["10-net"].overrides == (vendor,)
    hooks = effective_hooks(list(hook_dirs))
    assert [(h.name, str(h.phase)) for h in hooks] == [
        ("10-net", "unbind"),
        ("20-only-vendor", "quiesce"),
    ]


def test_dev_null_symlink_masks_a_vendor_hook(
    make_hook: HookFactory, hook_dirs: tuple[Path, Path]
) -> None:
    make_hook("10-net", "quiesce")
    (hook_dirs[1] / "10-net.hook").symlink_to("/dev/null")
    entries = scan(list(hook_dirs))
    assert [(e.name, e.status) for e in entries] == [("10-net", EntryStatus.MASKED)]
    assert effective_hooks(list(hook_dirs)) == []


def test_non_hook_files_are_ignored(hook_dirs: tuple[Path, Path]) -> None:
    (hook_dirs[0] / "README").write_text("x")
    (hook_dirs[0] / "net-quiesce").write_text("#!/bin/sh\n")
    assert scan(list(hook_dirs)) == []


def test_group_writable_hook_is_refused(
    make_hook: HookFactory, hook_dirs: tuple[Path, Path]
) -> None:
    path = make_hook("10-net", "quiesce", mode=0o664)
    with pytest.raises(ConfigError) as e:
        effective_hooks(list(hook_dirs))
    assert e.value.problems == [
        f"{path}: refusing hook: writable by group (mode 0664); only root may be able to change "
        f"it or the directories holding it. Fix: chmod go-w {path}"
    ]


def test_hook_owned_by_another_user_is_refused(
    make_hook: HookFactory, hook_dirs: tuple[Path, Path]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a file to another user")
    path = make_hook("10-net", "quiesce")
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError) as e:
        effective_hooks(list(hook_dirs))
    assert f"{path}: refusing hook: owned by uid 65534, not root" in e.value.message


def test_untrusted_program_and_missing_program_are_refused(
    hook_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    prog = tmp_path / "prog"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o777)
    (hook_dirs[0] / "10-a.hook").write_text(f'phase = "quiesce"\nrun = ["{prog}"]\n')
    (hook_dirs[0] / "20-b.hook").write_text('phase = "quiesce"\nrun = ["no-such-program-xyz"]\n')
    (hook_dirs[0] / "30-c.hook").write_text('phase = "quiesce"\nrun = ["relative/prog"]\n')
    with pytest.raises(ConfigError) as e:
        effective_hooks(list(hook_dirs))
    problems = e.value.problems
    assert f"refusing program {prog}: writable by group and others (mode 0777)" in problems[0]
    assert "program 'no-such-program-xyz' not found in /usr/local/sbin" in problems[1]
    assert "expected an absolute path or a program name, got 'relative/prog'" in problems[2]


def test_world_writable_hook_directory_is_refused(
    make_hook: HookFactory, hook_dirs: tuple[Path, Path]
) -> None:
    make_hook("10-a", "quiesce", admin=True)
    hook_dirs[1].chmod(0o777)
    with pytest.raises(ConfigError) as e:
        effective_hooks(list(hook_dirs))
    assert (
        f"{hook_dirs[1]}: refusing hook directory: writable by group and others" in e.value.message
    )


# ----------------------------------------------------------------- trust ----


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")


def user_dir(tmp_path: Path) -> Path:
    """A directory an unprivileged user (nobody) owns and can rename files in."""
    d = tmp_path / "users-dir"
    d.mkdir()
    os.chown(d, 65534, 65534)
    return d


def test_a_root_program_in_a_directory_another_user_owns_is_refused(
    hook_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Issue 13, case 3: the user could rename their own script over the program."""
    needs_root()
    d = user_dir(tmp_path)
    prog = d / "prog"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)  # root's, 0755: only its directory is wrong
    hook = hook_dirs[1] / "10-a.hook"
    hook.write_text(f'phase = "quiesce"\nrun = ["{prog}"]\n')
    with pytest.raises(ConfigError) as e:
        effective_hooks(list(hook_dirs))
    assert e.value.problems == [
        f"{hook}: run: refusing program {prog}: {d}: owned by uid 65534, not root; a file "
        f"another user can change is not trusted, nor a directory holding one. If it is "
        f"genuine: chown root:root {d}"
    ]


def test_a_manifest_symlinked_into_a_user_writable_directory_is_refused(
    hook_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    needs_root()
    d = user_dir(tmp_path)
    (d / "10-a.hook").write_text('phase = "quiesce"\nrun = ["/bin/true"]\n')
    link = hook_dirs[1] / "10-a.hook"
    link.symlink_to(d / "10-a.hook")
    with pytest.raises(ConfigError) as e:
        effective_hooks(list(hook_dirs))
    assert e.value.problems == [
        f"{link}: refusing hook: {d}: owned by uid 65534, not root; a file another user can "
        f"change is not trusted, nor a directory holding one. If it is genuine: "
        f"chown root:root {d}"
    ]


def test_fifo_and_device_manifests_are_refused_at_once(hook_dirs: tuple[Path, Path]) -> None:
    """Issue 13, case 4: a FIFO froze discovery, /dev/zero ate memory."""
    os.mkfifo(hook_dirs[0] / "10-fifo.hook")
    (hook_dirs[0] / "20-zero.hook").symlink_to("/dev/zero")
    (hook_dirs[0] / "30-big.hook").write_text("#" * (64 * 1024 + 1))
    problems = [e.problems for e in scan(list(hook_dirs))]
    assert problems == [
        (
            f"{hook_dirs[0] / '10-fifo.hook'}: refusing hook: is a FIFO, not a regular file; "
            "give the hook manifest itself",
        ),
        (
            f"{hook_dirs[0] / '20-zero.hook'}: refusing hook: /dev/zero: is a device, not a "
            "regular file; give the hook manifest itself",
        ),
        (
            f"{hook_dirs[0] / '30-big.hook'}: refusing hook: is 65537 bytes, larger than a hook "
            "manifest may be (64 KiB); that is not a genuine one",
        ),
    ]


def test_discovery_for_the_daemon_is_bounded_in_time(
    hook_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook file on a filesystem that never answers: an error, not a frozen daemon."""
    import threading

    from liveupd.hooks import discovery

    hung = threading.Event()
    monkeypatch.setattr(discovery, "effective_hooks", lambda dirs: hung.wait(60))
    try:
        with pytest.raises(ConfigError) as e:
            asyncio.run(discovery.discover(list(hook_dirs), timeout=0.2))
    finally:
        hung.set()
    assert "hook discovery did not finish within 0.2 s" in e.value.message


def test_what_runs_is_the_program_that_was_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renaming another file over the program right after the check changes nothing."""
    from liveupd.hooks import trust

    d = tmp_path / "progs"
    d.mkdir()
    prog, other = d / "prog", d / "other"
    prog.write_text("#!/bin/sh\necho verified\n")
    other.write_text("#!/bin/sh\necho swapped\n")
    prog.chmod(0o755)
    other.chmod(0o755)
    verify = trust.verify_program

    def verify_then_swap(argv0: str) -> trust.Program:
        program = verify(argv0)
        other.replace(prog)  # the race a user won before: now too late
        return program

    monkeypatch.setattr(trust, "verify_program", verify_then_swap)
    result = run([str(prog)])
    assert result.stdout == "verified\n"
    assert prog.read_text() == "#!/bin/sh\necho swapped\n"


def test_the_program_is_verified_again_when_it_runs(tmp_path: Path) -> None:
    """Checked at stage, made writable before it runs: refused, not run."""
    prog = tmp_path / "prog"
    marker = tmp_path / "ran"
    prog.write_text(f"#!/bin/sh\ntouch {marker}\n")
    prog.chmod(0o757)
    result = run([str(prog)])
    assert result.outcome is Outcome.ERROR
    assert result.message.startswith(
        f"not started: refusing program {prog}: writable by others (mode 0757)"
    )
    assert not marker.exists()


# ---------------------------------------------------------------- runner ----


def process_ends(pid: int, deadline: float = 10) -> bool:
    """True once ``pid`` is gone or a zombie (SIGKILL is delivered asynchronously)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def run(argv: list[str], timeout: float = 10, **env: str) -> ProgramResult:
    return asyncio.run(run_program(argv, env=hook_environment(env), timeout=timeout))


def test_runner_gives_a_clean_environment_and_dev_null_stdin() -> None:
    os.environ["LIVEUPD_SHOULD_NOT_LEAK"] = "1"
    try:
        result = asyncio.run(
            run_program(
                ["/bin/sh", "-c", "env | sort; pwd; cat; echo oops >&2"],
                env=hook_environment({"LIVEUPD_PHASE": "quiesce"}),
                timeout=10,
            )
        )
    finally:
        del os.environ["LIVEUPD_SHOULD_NOT_LEAK"]
    assert result.outcome is Outcome.SUCCESS
    keys = {line.split("=", 1)[0] for line in result.stdout.splitlines() if "=" in line}
    assert keys <= {"PATH", "LANG", "LIVEUPD_PHASE", "LIVEUPD_HOOK_PROGRAM", "PWD", "SHLVL", "_"}
    # The program that ran, as it was verified (symlinks resolved: /bin/sh -> dash).
    assert f"LIVEUPD_HOOK_PROGRAM={os.path.realpath('/bin/sh')}" in result.stdout
    assert "LIVEUPD_PHASE=quiesce" in result.stdout
    assert result.stdout.splitlines()[-1] == "/"
    assert result.stderr == "oops\n"


def test_runner_reports_exit_status_and_caps_output() -> None:
    result = asyncio.run(
        run_program(
            ["/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; exit 4"],
            env=hook_environment({}),
            timeout=10,
            output_cap=1000,
        )
    )
    assert result.outcome is Outcome.FAILED and result.returncode == 4
    assert result.message == "exited with status 4"
    assert len(result.stdout) == 1000 and result.truncated


def test_timeout_kills_the_whole_process_group_grandchild_included(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # The hook starts a grandchild that ignores SIGTERM, then hangs.
    script = f"(trap '' TERM; exec sleep 300) & echo $! > {pidfile}; sleep 300"
    start = time.monotonic()
    result = asyncio.run(
        run_program(["/bin/sh", "-c", script], env=hook_environment({}), timeout=1)
    )
    assert result.outcome is Outcome.TIMEOUT
    assert "timed out after 1s" in result.message
    assert time.monotonic() - start < 60
    assert process_ends(int(pidfile.read_text()))


def test_processes_left_behind_by_a_finished_hook_are_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    result = asyncio.run(
        run_program(
            ["/bin/sh", "-c", f"sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}"],
            env=hook_environment({}),
            timeout=10,
        )
    )
    assert result.outcome is Outcome.SUCCESS
    assert process_ends(int(pidfile.read_text()))


def test_program_that_cannot_start_is_an_error() -> None:
    result = asyncio.run(run_program(["/nonexistent/prog"], env=hook_environment({}), timeout=5))
    assert result.outcome is Outcome.ERROR
    assert result.message == "not started: /nonexistent/prog does not exist"


def test_hook_env_documents_transition_facts(
    config: object, make_hook: HookFactory, tmp_path: Path
) -> None:
    from liveupd.assembly import make_engine
    from liveupd.backends import dryrun
    from liveupd.config import Config
    from liveupd.transition.context import StageRequest
    from liveupd.transition.phases import ExecMode

    assert isinstance(config, Config)
    out = tmp_path / "env"
    make_hook("10-env", "checkpoint", f"env > {out}; echo saved > $LIVEUPD_STATE_DIR/data")

    async def go() -> str:
        engine = make_engine(config, dryrun.make(config.state_dir), events=lambda e: None)
        t = await engine.stage(StageRequest(kernel="6.1.0-56-cloud-amd64"))
        await engine.start_execute(t, ExecMode.DIRECT)
        return t.id

    tid = asyncio.run(go())
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["LIVEUPD_PHASE"] == "checkpoint"
    assert env["LIVEUPD_ACTION"] == "run"
    assert env["LIVEUPD_TRANSITION_ID"] == tid
    assert env["LIVEUPD_TARGET_RELEASE"] == "6.1.0-56-cloud-amd64"
    assert env["LIVEUPD_DRY_RUN"] == "1"
    state_dir = Path(env["LIVEUPD_STATE_DIR"])
    assert state_dir == config.state_dir / "transitions" / tid / "hooks" / "10-env"
    assert (state_dir / "data").read_text() == "saved\n"


def _trusted_program(tmp_path: Path, body: str) -> Path:
    prog = tmp_path / "prog"
    prog.write_text(f"#!/bin/sh\n{body}\n")
    prog.chmod(0o755)
    return prog


def test_nothing_of_the_hook_runs_before_its_group_is_recorded(tmp_path: Path) -> None:
    """on_start runs while the child is still the gate (bash blocked on its pipe), not
    the program: a daemon killed before recording the group leaves nothing running."""
    marker = tmp_path / "ran"
    prog = _trusted_program(tmp_path, f"touch {marker}")
    seen: list[tuple[str, bool]] = []

    def on_start(pgid: int, started: float | None) -> None:
        exe = os.path.basename(psutil.Process(pgid).exe())
        seen.append((exe, marker.exists()))

    result = asyncio.run(
        run_program([str(prog)], env=hook_environment({}), timeout=10, on_start=on_start)
    )
    assert result.outcome is Outcome.SUCCESS, result.message
    assert seen == [("bash", False)]
    assert marker.exists()


def test_a_failed_record_means_the_hook_never_ran(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    prog = _trusted_program(tmp_path, f"touch {marker}")

    def on_start(pgid: int, started: float | None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        asyncio.run(
            run_program([str(prog)], env=hook_environment({}), timeout=10, on_start=on_start)
        )
    assert not marker.exists()

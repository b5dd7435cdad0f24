"""Issue 18, case 1: the quick start works as written (make try, the by-hand recipe).

* ``make try`` (``python -m tryout``) in a real terminal: the commands it
  prints, typed into the shell it opens, stage, execute and show a rehearsal;
* the same for a user who is not root (the stand-in polkit says yes);
* the by-hand recipe of docs/try.md and docs/dbus-api.md, run as written;
* the shipped simulated machine is the documented one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from liveupd.backends.dryrun import DEFAULT_MACHINE
from tests.ctl.terminal import terminal
from tests.dbus.buses import NOBODY, REPO, as_user

VENV_BIN = Path(sys.executable).parent
RUNNING = "6.1.0-55-cloud-amd64"
TARGET = "6.1.0-56-cloud-amd64"


def python() -> str:
    return sys.executable


def test_make_try_runs_the_printed_commands_in_its_shell(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "SHELL": "/bin/bash", "HOME": str(tmp_path)}
    argv = ["sh", "-c", f"cd {REPO} && exec {python()} -m tryout"]
    with terminal(argv, term="screen", env=env) as pane:
        pane.wait_for("(liveupd try)", "the shell's prompt")
        screen = pane.screen()
        assert f"machine: it runs kernel {RUNNING}, and {TARGET} is installed" in screen
        assert "liveupctl exec                    # switch to it" in screen
        pane.type("liveupctl stage && liveupctl exec && liveupctl show | head -3")
        pane.wait_for("passed verification", "the rehearsal")
        pane.wait_for(f"  kernel     {RUNNING} -> {TARGET} (direct mode)", "the report")
        pane.type(f"liveupctl stage {RUNNING} && liveupctl exec --quiet && liveupctl history")
        rows = pane.wait_for(f"{TARGET} -> {RUNNING}", "the second rehearsal in history")
        assert len(re.findall(r" completed .* dry run", rows)) == 2, rows
        pane.type("exit")
        assert pane.exit_status() == 0


def python_for(uid: int) -> tuple[str, dict[str, str]]:
    """An interpreter ``uid`` can run, whose children can run it too, and its environment.

    The virtualenv's python when it can; when its base interpreter sits where that
    user cannot go (a pyenv build under /root), the system's python of the same
    version with the virtualenv's packages on PYTHONPATH.
    """
    env = {**os.environ, "HOME": "/"}
    nested = "import subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)"
    probe = subprocess.run(
        as_user(uid, [python(), "-c", nested]), capture_output=True, timeout=60, check=False
    )
    if probe.returncode == 0:
        return python(), env
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not Path(system).exists():
        pytest.fail(f"uid {uid} cannot run {python()} and there is no {system}")
    packages = next(p for p in sys.path if p.endswith("site-packages"))
    return system, {**env, "PYTHONPATH": f"{packages}:{REPO}"}


def test_a_user_who_is_not_root_can_try_it() -> None:
    interpreter, env = python_for(NOBODY)
    result = subprocess.run(
        as_user(
            NOBODY,
            [
                interpreter,
                "-m",
                "tryout",
                "--command",
                "liveupctl stage && liveupctl exec && liveupctl show",
            ],
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"the simulated new boot runs {TARGET} and passed verification" in result.stdout
    assert "Verification on the new kernel (simulated): passed" in result.stdout


def recipe(doc: Path) -> list[str]:
    """The by-hand recipe's commands, as written in ``doc`` (``$`` lines and their rest)."""
    text = doc.read_text()
    block = text[text.index("python -m tryout --prepare") :]
    block = block[: block.index("```")]
    commands: list[str] = []
    for line in ("$ " + block).splitlines():
        if line.startswith("$ "):
            commands.append(line[2:])
        elif line.strip():
            commands[-1] += "\n" + line
    return commands


@pytest.mark.parametrize("doc", ["try.md", "dbus-api.md"])
def test_the_by_hand_recipe_runs_as_written(doc: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the recipe is for root (a non-root caller needs polkit on the bus)")
    commands = recipe(REPO / "docs" / doc)
    assert commands[0] == "python -m tryout --prepare /tmp/liveupd-try"
    assert "gdbus wait --session --timeout 10 org.liveupd.LiveUpdate1" in commands[1]
    where = tmp_path / "try"
    script = "\n".join(commands).replace("/tmp/liveupd-try", str(where))
    result = subprocess.run(
        ["sh", "-ec", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Staged {TARGET} as transition" in result.stdout
    assert "passed verification" in result.stdout
    assert "Verification on the new kernel (simulated): passed" in result.stdout


def test_the_recipe_does_not_wait_forever_for_a_daemon_that_fails(tmp_path: Path) -> None:
    """gdbus wait --timeout: a daemon that cannot start ends the recipe with its error."""
    subprocess.run([python(), "-m", "tryout", "--prepare", str(tmp_path)], cwd=REPO, check=True)
    (tmp_path / "liveupd.conf").write_text("[daemon]\nstate-dir = 'relative'\n")
    script = recipe(REPO / "docs" / "try.md")[1].replace("/tmp/liveupd-try", str(tmp_path))
    result = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"},
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "liveupd: refusing to start: the configuration is invalid" in result.stderr


def test_the_shipped_machine_is_the_documented_one() -> None:
    shipped = json.loads((REPO / "tryout" / "machine.json").read_text())
    assert shipped == DEFAULT_MACHINE
    doc = (REPO / "docs" / "try.md").read_text()
    assert f"it runs kernel **`{shipped['system']['release']}`**" in doc
    assert shipped["system"]["boot_id"] in doc
    for mount in shipped["mounts"]:
        assert f"`{mount['mountpoint']}`" in doc
    assert "LIVEUPD_DRY_RUN_MACHINE" in doc
    config = (REPO / "tryout" / "liveupd.conf").read_text()
    assert "@DIR@/boot" in config and "@DIR@/state" in config


def test_make_try_runs_tryout() -> None:
    out = subprocess.run(
        ["make", "-n", "try"], capture_output=True, text=True, cwd=REPO, timeout=60, check=True
    ).stdout
    assert re.search(r"python -m tryout$", out, re.MULTILINE), out

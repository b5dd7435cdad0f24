"""``make try``: liveupd in a dry run on a private bus, and a shell to type commands in.

    python -m tryout                 # prepare, start, open a shell; exit it to stop
    python -m tryout --command CMD   # ... run CMD in that shell's environment instead
    python -m tryout --prepare DIR   # only write the files (for the by-hand recipe)

It writes into a directory of its own (a temporary one unless ``--dir``): two
small kernel images in ``boot/`` (the simulated machine runs the first), the
sample configuration with its paths filled in, the simulated machine and the
sample hooks.  It then starts a dbus-daemon of its own, a stand-in polkit that
says yes when you are not root (a non-root caller is otherwise denied, as on
a real system without a polkit rule), and ``liveupd --dry-run`` on that bus,
and prints the commands to type.  In the shell ``DBUS_SYSTEM_BUS_ADDRESS``
points at the private bus, so ``liveupctl`` and ``busctl`` talk to this
daemon exactly as they would to the real one (``bin/`` first on ``PATH`` has
this checkout's ``liveupctl``, run by the interpreter running the try-out).
Nothing on this machine is touched: the daemon records what it would do in
``state/dry-run/``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.dbus.buses import Daemon, PrivateBus, Processes, dbusmock, processes
from tests.kernels import install_kernel

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUNNING = "6.1.0-55-cloud-amd64"  # machine.json's kernel
NEWER = "6.1.0-56-cloud-amd64"
POLKIT = "org.freedesktop.PolicyKit1"
ACTIONS = ("org.liveupd.stage", "org.liveupd.execute", "org.liveupd.execute-ignore-inhibitors")


def prepare(where: Path) -> Path:
    """Write the try-out's files into ``where``; the configuration file's path."""
    where = where.absolute()
    where.mkdir(parents=True, exist_ok=True)
    for release in (RUNNING, NEWER):
        install_kernel(where / "boot", release)
    hooks = where / "hooks.d"
    hooks.mkdir(exist_ok=True)
    hooks.chmod(0o755)
    for hook in sorted((HERE / "hooks.d").glob("*.hook")):
        target = hooks / hook.name
        shutil.copyfile(hook, target)
        target.chmod(0o644)  # hooks must not be writable by group or others
    shutil.copyfile(HERE / "machine.json", where / "machine.json")
    config = where / "liveupd.conf"
    config.write_text((HERE / "liveupd.conf").read_text().replace("@DIR@", str(where)))
    return config


def banner(where: Path, bus: PrivateBus) -> str:
    return f"""
liveupd runs in a dry run, on a private D-Bus of its own, against a simulated
machine: it runs kernel {RUNNING}, and {NEWER} is installed beside it.
Nothing on this computer is touched.

  configuration   {where}/liveupd.conf   (tryout/liveupd.conf, paths filled in)
  machine         {where}/machine.json   (tryout/machine.json: LIVEUPD_DRY_RUN_MACHINE)
  kernels         {where}/boot/
  hooks           {where}/hooks.d/       (tryout/hooks.d)
  daemon's log    {where}/daemon.log
  bus             DBUS_SYSTEM_BUS_ADDRESS={bus.address}

Type these; liveupctl and busctl talk to this daemon in this shell:

  liveupctl                         # the status (what a bare systemctl would show)
  liveupctl kernels
  liveupctl stage                   # check and load the newest kernel
  liveupctl exec                    # switch to it; Ctrl-C before the jump cancels
  liveupctl show                    # the report: phases, hooks, devices, verification
  liveupctl stage {RUNNING} && liveupctl exec   # and back: rehearse as often as you like
  liveupctl history
  busctl introspect org.liveupd.LiveUpdate1 /org/liveupd/LiveUpdate1

Then 'exit' stops the daemon and the bus. docs/try.md explains what you see.
"""


def commands(where: Path) -> Path:
    """``liveupctl`` and ``liveupd`` of this checkout, run by this interpreter."""
    bin_dir = where / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, module in (("liveupctl", "liveupd.ctl.main"), ("liveupd", "liveupd.daemon.main")):
        script = bin_dir / name
        script.write_text(
            f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}} "
            f'exec {shlex.quote(sys.executable)} -m {module} "$@"\n'
        )
        script.chmod(0o755)
    return bin_dir


def shell_env(bus: PrivateBus, where: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
    env["PATH"] = f"{commands(where)}:{env.get('PATH', '/usr/bin:/bin')}"
    env["LIVEUPD_TRY"] = "1"
    env.pop("LIVEUPCTL_PAGER", None)
    return env


def start(procs: Processes, where: Path) -> PrivateBus:
    config = prepare(where)
    bus = PrivateBus(procs)
    if os.geteuid() != 0:
        dbusmock(procs, bus, "polkitd", POLKIT)
        bus.busctl(
            "call", POLKIT, "/org/freedesktop/PolicyKit1/Authority",
            "org.freedesktop.DBus.Mock", "SetAllowed", "as", str(len(ACTIONS)), *ACTIONS,
        )  # fmt: skip
    env = {"LIVEUPD_DRY_RUN_MACHINE": str(where / "machine.json")}
    Daemon(procs, bus, config, where / "state", env=env).start()
    return bus


def interactive_shell(env: dict[str, str]) -> list[str]:
    shell = env.get("SHELL") or "/bin/sh"
    if Path(shell).name == "bash":
        env["PS1"] = r"(liveupd try) \w\$ "
        return [shell, "--norc", "-i"]
    env["PS1"] = "(liveupd try) $ "
    return [shell, "-i"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tryout", description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, help="work in DIR (kept) instead of a temporary one")
    p.add_argument("--command", metavar="CMD", help="run CMD (sh -c) instead of a shell")
    p.add_argument("--prepare", type=Path, metavar="DIR", help="only write the files into DIR")
    args = p.parse_args(argv)
    if args.prepare is not None:
        config = prepare(args.prepare)
        print(f"wrote {config}, {args.prepare.absolute()}/machine.json, boot/ and hooks.d/")
        return 0
    where = args.dir or Path(tempfile.mkdtemp(prefix="liveupd-try-"))
    try:
        with processes() as procs:
            bus = start(procs, where)
            env = shell_env(bus, where)
            if args.command is not None:
                return subprocess.run(["sh", "-c", args.command], env=env, check=False).returncode
            print(banner(where.absolute(), bus), flush=True)
            argv_ = interactive_shell(env)
            print(f"[try] starting {shlex.join(argv_)}", flush=True)
            return subprocess.run(argv_, env=env, check=False).returncode
    finally:
        if args.dir is None:
            shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

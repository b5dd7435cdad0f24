"""``liveupctl``: the command-line client of org.liveupd.LiveUpdate1.

Every command except ``hooks`` talks to the daemon over D-Bus, exactly as any
other client would.  Exit codes: 0 success, 1 failed, 2 usage, 3 nothing to
do, 4 not authorized, 5 unsupported here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from liveupd import __version__
from liveupd.cli import die, die_with
from liveupd.ctl import agent, hooks, render
from liveupd.ctl.client import BusChoice, Client, RemoteError
from liveupd.ctl.progress import Follower, renderer_for
from liveupd.errors import ExitCode, LiveUpdError
from liveupd.fleet.reboot_required import newer_kernel, reboot_required
from liveupd.service import names

FALLBACK_ENV = "LIVEUPCTL_FALLBACK_COMMAND"
HOST_TEST_ENV = "LIVEUPD_HOST_TEST"
DEFAULT_FALLBACK = ("systemctl", "reboot")
# Never run as a fallback on a test host (LIVEUPD_HOST_TEST), injected or not.
REBOOTING_PROGRAMS = frozenset(
    {"systemctl", "reboot", "shutdown", "halt", "poweroff", "kexec", "init", "telinit"}
)
# Stage errors after which `reboot --fallback` does not reboot the slow way.
NO_FALLBACK = frozenset(
    {
        names.ACCESS_DENIED,
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
        "org.liveupd.LiveUpdate1.Error.Busy",
        "org.liveupd.LiveUpdate1.Error.InvalidArgument",
    }
)


# ------------------------------------------------------------------ parser --


def _bus_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--system",
        dest="bus_kind",
        action="store_const",
        const="system",
        default=argparse.SUPPRESS if suppress else "system",
        help="talk to liveupd on the system bus (default)",
    )
    group.add_argument(
        "--session",
        dest="bus_kind",
        action="store_const",
        const="session",
        default=argparse.SUPPRESS,
        help="talk to liveupd on the session bus (tests)",
    )
    group.add_argument(
        "--bus",
        dest="bus_address",
        metavar="ADDRESS",
        default=default,
        help="talk to liveupd on the bus at ADDRESS (tests)",
    )
    p.add_argument(
        "--no-ask-password",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="never ask for a password (polkit) on a terminal",
    )


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _bus_options(common, suppress=True)
    json_opt = argparse.ArgumentParser(add_help=False)
    json_opt.add_argument("--json", action="store_true", help="print JSON")

    p = argparse.ArgumentParser(
        prog="liveupctl",
        description="Control liveupd: stage a kernel and switch to it without a firmware reboot.",
        epilog="Exit codes: 0 success, 1 failed, 2 usage, 3 nothing to do, "
        "4 not authorized, 5 unsupported here.",
    )
    p.add_argument("--version", action="version", version=f"liveupctl {__version__}")
    _bus_options(p, suppress=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser(
        "status", parents=[common, json_opt], help="daemon state, staged kernel, kernels"
    )
    sub.add_parser("kernels", parents=[common, json_opt], help="installed kernels")

    stage = sub.add_parser("stage", parents=[common], help="check and load a kernel")
    stage.add_argument("kernel", nargs="?", default="", help="path or release (default: latest)")
    stage.add_argument("--initrd", default="", metavar="PATH", help="initrd (default: paired)")
    line = stage.add_mutually_exclusive_group()
    line.add_argument("--cmdline", default="", metavar="S", help="replace the command line")
    line.add_argument("--append", default="", metavar="S", help="append to the running one")
    stage.add_argument("--sha256", default="", metavar="HEX", help="expected kernel SHA-256")
    stage.add_argument(
        "--profile",
        default="",
        metavar="P",
        help="a unified kernel image's profile: @N or its ID (default: @0)",
    )

    exe = sub.add_parser("exec", parents=[common], help="switch to the staged kernel")
    _exec_options(exe)
    exe.add_argument(
        "--no-wait", action="store_true", help="start the transition and return at once"
    )

    sub.add_parser("cancel", parents=[common], help="unload the staged kernel or roll back")

    hist = sub.add_parser("history", parents=[common, json_opt], help="past transitions")
    hist.add_argument("--limit", type=int, default=0, metavar="N", help="newest N only")

    hk = sub.add_parser(
        "hooks", parents=[json_opt], help="effective hooks (read locally), or check one file"
    )
    hk.add_argument("--config", type=Path, help="liveupd.conf (default /etc/liveupd/liveupd.conf)")
    hsub = hk.add_subparsers(dest="hooks_command", metavar="check")
    chk = hsub.add_parser("check", parents=[json_opt], help="validate one hook manifest")
    chk.add_argument("file", type=Path)

    rb = sub.add_parser(
        "reboot",
        parents=[common],
        help="stage the newest kernel and switch to it, without asking (package managers, "
        "fleet tools)",
        description="Stage the newest installed kernel (or KERNEL; the running one makes a fast "
        "reboot into the same kernel) and switch to it, without asking anything. A staged "
        "transition is executed as it is.",
        epilog="Exit codes: 0 the switch was requested (or, with --fallback, the normal "
        "reboot); 1 failed, the machine runs on unchanged; 2 usage; 3 no reboot needed "
        "(--if-needed); 4 not authorized; 5 kexec is unsupported here (without --fallback).",
    )
    rb.add_argument("kernel", nargs="?", default="", help="path or release (default: newest)")
    _exec_options(rb, default_mode="systemd")
    rb.add_argument(
        "--fallback",
        action="store_true",
        help="reboot normally (systemctl reboot) if kexec is unsupported here, liveupd cannot "
        "be reached, or staging fails",
    )
    rb.add_argument(
        "--if-needed",
        action="store_true",
        help="exit 3 without rebooting unless a newer kernel is installed, a kernel is staged, "
        "or /run/reboot-required exists",
    )
    return p


def _exec_options(p: argparse.ArgumentParser, default_mode: str = "direct") -> None:
    p.add_argument(
        "--mode",
        choices=["direct", "systemd"],
        default=default_mode,
        help=f"direct: the daemon jumps itself (fast); systemd: via kexec.target, services "
        f"stop cleanly (default: {default_mode})",
    )
    p.add_argument(
        "--ignore-inhibitors",
        action="store_true",
        help="go ahead despite logind shutdown inhibitors (needs authorization)",
    )


def bus_choice(args: argparse.Namespace) -> BusChoice:
    if args.bus_address:
        return BusChoice("address", args.bus_address)
    return BusChoice(args.bus_kind)


# ----------------------------------------------------------------- commands --


async def cmd_status(client: Client, args: argparse.Namespace) -> int:
    manager = await client.properties()
    staged: dict[str, Any] | None = None
    path = manager.get("StagedTransition", names.NO_TRANSITION)
    if path != names.NO_TRANSITION:
        staged = await client.transition(path)
    corrupt = sum(1 for e in await client.history(0) if e.get("state") == "corrupt")
    data = render.status_json(
        manager, staged, await client.can_live_update(), reboot_required(), corrupt
    )
    if args.json:
        render.print_json(data)
    else:
        print(render.status_text(data))
    return int(ExitCode.OK)


async def cmd_kernels(client: Client, args: argparse.Namespace) -> int:
    kernels = [k.to_json() for k in await client.kernels()]
    if args.json:
        render.print_json(kernels)
    else:
        print(render.kernels_text(kernels))
    return int(ExitCode.OK)


async def cmd_history(client: Client, args: argparse.Namespace) -> int:
    if args.limit < 0:
        die("--limit must be 0 (all) or more", ExitCode.USAGE)
    entries = await client.history(args.limit)
    if args.json:
        render.print_json(entries)
    else:
        print(render.history_text(entries))
    return int(ExitCode.OK)


async def cmd_stage(client: Client, args: argparse.Namespace) -> int:
    interactive = agent.wanted(args.no_ask_password)
    with agent.tty_agent(interactive):
        tid, path = await client.stage(
            args.kernel,
            initrd=args.initrd,
            cmdline=args.cmdline,
            append=args.append,
            sha256=args.sha256,
            interactive=interactive,
            profile=args.profile,
        )
    props = await client.transition(path)
    print(f"Staged {props['TargetRelease']} as transition {tid}")
    print(f"  kernel:       {props['KernelPath']}")
    print(f"  initrd:       {props['InitrdPath'] or '-'}")
    print(f"  command line: {props['CommandLine']}")
    print("Run 'liveupctl exec' to switch to it, or 'liveupctl cancel' to unload it.")
    return int(ExitCode.OK)


async def cmd_exec(client: Client, args: argparse.Namespace) -> int:
    return await execute(
        client,
        mode=args.mode,
        ignore_inhibitors=args.ignore_inhibitors,
        interactive=agent.wanted(args.no_ask_password),
        wait=not args.no_wait,
    )


async def execute(
    client: Client, *, mode: str, ignore_inhibitors: bool, interactive: bool, wait: bool
) -> int:
    manager = await client.properties()
    follower = Follower(str(manager.get("StagedTransition", "")), renderer_for(sys.stdout))
    if wait:  # subscribe before the call: no signal is missed
        await client.watch(follower.on_signal)
    with agent.tty_agent(interactive):
        tid, path = await client.execute(
            mode=mode, ignore_inhibitors=ignore_inhibitors, interactive=interactive
        )
    if not wait:
        print(f"Started transition {tid} ({mode} mode); follow it with 'liveupctl status'")
        return int(ExitCode.OK)
    follower.path = path
    try:
        target = str((await client.transition(path)).get("TargetRelease", ""))
    except RemoteError as e:
        if not e.unreachable:
            raise
        target = ""
    print(f"Transition {tid}: switching to {target or 'the staged kernel'} ({mode} mode)")
    sys.stdout.flush()
    follower.begin(target)  # every signal since before Execute, then live ones
    gone = asyncio.ensure_future(client.disconnected())
    waiting: set[asyncio.Future[Any]] = {follower.done, gone}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not follower.done.done():
        follower.vanished()
    outcome = follower.done.result()
    if outcome.code is not ExitCode.OK:
        die(outcome.message, outcome.code)
    print(outcome.message)
    return int(ExitCode.OK)


async def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    manager = await client.properties()
    interactive = agent.wanted(args.no_ask_password)
    with agent.tty_agent(interactive):
        await client.cancel(interactive=interactive)
    if manager.get("State") == "staged":
        print("Cancelled: the staged kernel was unloaded")
    else:
        print("Cancelled: the running transition was rolled back")
    return int(ExitCode.OK)


async def cmd_reboot(client: Client, args: argparse.Namespace) -> int:
    """Stage (unless the right kernel is staged) and execute, without asking anything."""
    manager = await client.properties()
    running = str(manager.get("RunningKernel") or "")
    staged_path = str(manager.get("StagedTransition", names.NO_TRANSITION))
    if args.if_needed and not reboot_needed(manager, explicit=bool(args.kernel)):
        print(
            f"No reboot needed: running the newest installed kernel ({running}), nothing is "
            "staged, and no package asked for a reboot (/run/reboot-required)"
        )
        return int(ExitCode.NOTHING_TO_DO)
    if manager.get("Unsupported"):
        raise KexecUnsupported(str(manager["Unsupported"]))
    if staged_path != names.NO_TRANSITION:
        staged = await client.transition(staged_path)
        if args.kernel and args.kernel not in (staged["TargetRelease"], staged["KernelPath"]):
            die(
                f"another kernel ({staged['TargetRelease']}) is staged; run 'liveupctl cancel' "
                "first, or reboot into it with 'liveupctl reboot'",
                ExitCode.FAILED,
            )
        print(f"Switching to the staged kernel {staged['TargetRelease']} ({staged['Id']})")
    else:
        try:
            tid, path = await client.stage(args.kernel)
        except RemoteError as e:
            raise StageFailed(e) from e
        target = str((await client.transition(path)).get("TargetRelease", ""))
        same = " (the running kernel: a fast reboot)" if target == running else ""
        print(f"Staged {target} as transition {tid}{same}")
    return await execute(
        client,
        mode=args.mode,
        ignore_inhibitors=args.ignore_inhibitors,
        interactive=False,
        wait=True,
    )


def reboot_needed(manager: dict[str, Any], *, explicit: bool) -> bool:
    """A kernel was named or is staged, a newer one is installed, or a package asks for it."""
    return (
        explicit
        or manager.get("StagedTransition", names.NO_TRANSITION) != names.NO_TRANSITION
        or newer_kernel(manager.get("RunningKernel"), manager.get("LatestKernel")) is not None
        or reboot_required() is not None
    )


class KexecUnsupported(Exception):
    """kexec cannot work here (the daemon's Unsupported property)."""


class StageFailed(Exception):
    def __init__(self, error: RemoteError) -> None:
        super().__init__(error.message)
        self.error = error


def fallback_command(override: Sequence[str] | None) -> list[str]:
    """The command ``reboot --fallback`` runs; never one that reboots a test host."""
    if override is not None:
        argv = list(override)
    elif os.environ.get(FALLBACK_ENV):
        argv = shlex.split(os.environ[FALLBACK_ENV])
    else:
        argv = list(DEFAULT_FALLBACK)
    if not argv:
        die(f"{FALLBACK_ENV} is set but empty; give the command to run", ExitCode.USAGE)
    if os.environ.get(HOST_TEST_ENV) and Path(argv[0]).name in REBOOTING_PROGRAMS:
        die(
            f"refusing to run '{shlex.join(argv)}': {HOST_TEST_ENV} is set, so this is a test "
            f"host; set {FALLBACK_ENV} to a harmless command to test --fallback",
            ExitCode.FAILED,
        )
    return argv


def run_fallback(reason: str, override: Sequence[str] | None) -> int:
    argv = fallback_command(override)
    print(f"liveupctl: {reason}; rebooting the normal way ({shlex.join(argv)})", file=sys.stderr)
    sys.stderr.flush()
    try:
        rc = subprocess.run(argv, check=False).returncode
    except OSError as e:
        die(f"cannot run {shlex.join(argv)}: {e.strerror}", ExitCode.FAILED)
    if rc != 0:
        die(f"{shlex.join(argv)} failed with exit status {rc}", ExitCode.FAILED)
    return int(ExitCode.OK)


COMMANDS = {
    "status": cmd_status,
    "kernels": cmd_kernels,
    "history": cmd_history,
    "stage": cmd_stage,
    "exec": cmd_exec,
    "cancel": cmd_cancel,
    "reboot": cmd_reboot,
}


async def run(args: argparse.Namespace) -> int:
    client = await Client.connect(bus_choice(args))
    try:
        return await COMMANDS[args.command](client, args)
    finally:
        client.close()


def main(argv: Sequence[str] | None = None, *, fallback: Sequence[str] | None = None) -> int:
    """The console script; ``fallback`` replaces the command ``reboot --fallback`` runs."""
    args = parser().parse_args(argv)
    try:
        if args.command == "hooks":
            return hooks.run(args)
        try:
            return asyncio.run(run(args))
        except KexecUnsupported as e:
            message = f"kexec cannot work on this machine: {e}"
            if args.command == "reboot" and args.fallback:
                return run_fallback(message, fallback)
            die(message, ExitCode.UNSUPPORTED)
        except StageFailed as e:
            if args.fallback and e.error.name not in NO_FALLBACK:
                return run_fallback(f"staging failed: {e.error.message}", fallback)
            die(e.error.message, e.error.exit_code)
        except RemoteError as e:
            if args.command == "reboot" and args.fallback and e.unreachable:
                return run_fallback(e.message, fallback)
            die(e.message, e.exit_code)
    except LiveUpdError as e:
        die_with(e)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

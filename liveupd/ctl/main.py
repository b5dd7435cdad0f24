"""``liveupctl``: the command-line client of org.liveupd.LiveUpdate1.

Every command except ``hooks`` talks to the daemon over D-Bus, exactly as any
other client would.  A bare ``liveupctl`` is ``liveupctl status``.  The
options systemctl users expect (``-j/--json``, ``-q/--quiet``,
``--no-legend``, ``--no-pager``) go before or after the verb (``options``).
Exit codes: 0 success, 1 failed, 2 usage, 3 nothing to do, 4 not
authorized, 5 unsupported here; 130 after Ctrl-C; 141 when the output pipe
was closed (``liveupctl status | head -1``).
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
from liveupd.ctl import agent, output, render, show, status
from liveupd.ctl.client import BusChoice, Client, RemoteError
from liveupd.ctl.interrupt import EXIT_INTERRUPTED, Interrupts
from liveupd.ctl.options import JSON_VERBS, Conventions, add_output_options
from liveupd.ctl.progress import Follower, renderer_for
from liveupd.errors import Cancelled, ExitCode, LiveUpdError
from liveupd.fleet.reboot_required import newer_kernel, reboot_required
from liveupd.kernel.versions import version_key
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


MODES_HELP = (
    "exec defaults to direct mode and reboot to systemd mode. exec is what a person runs "
    "to switch now: direct is the fast path, the daemon quiesces, unbinds, flushes and "
    "freezes, then jumps itself, with services frozen in place rather than stopped. "
    "reboot stands in for 'systemctl reboot' (package managers, kured, Ansible), so, like "
    "a reboot, it stops every service cleanly through kexec.target. Either verb takes "
    "--mode to choose."
)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _bus_options(common, suppress=True)
    add_output_options(common, suppress=True)

    p = argparse.ArgumentParser(
        prog="liveupctl",
        description="Control liveupd: stage a kernel and switch to it without a firmware "
        "reboot. Without a command: status.",
        epilog=MODES_HELP + " Exit codes: 0 success, 1 failed, 2 usage, 3 nothing to do, "
        "4 not authorized, 5 unsupported here, 130 interrupted (Ctrl-C).",
    )
    p.add_argument("--version", action="version", version=f"liveupctl {__version__}")
    _bus_options(p, suppress=False)
    add_output_options(p, suppress=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser(
        "status",
        parents=[common],
        help="daemon state, the running or last transition, what blocks one (the default)",
    )
    shw = sub.add_parser(
        "show",
        parents=[common],
        help="a transition's report: phases, hooks, devices, filesystems, verification",
        description="Print the report of transition ID (default: the newest): each phase "
        "with its duration, the hooks that ran, the devices unbound and bound again, the "
        "filesystems frozen, the failure and what was undone, the verification on the new "
        "kernel and the downtime.",
    )
    shw.add_argument("id", nargs="?", default="", help="transition id or a unique prefix")
    sub.add_parser("kernels", parents=[common], help="installed kernels")

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

    exe = sub.add_parser(
        "exec",
        parents=[common],
        help="switch to the staged kernel",
        description="Run the staged transition and follow it. Ctrl-C before the exec phase "
        "cancels it and waits for the rollback (exit 130); a second Ctrl-C, or one once "
        "the exec phase has begun, only stops following it.",
        epilog=MODES_HELP,
    )
    _exec_options(exe)
    exe.add_argument(
        "--no-wait", action="store_true", help="start the transition and return at once"
    )

    sub.add_parser("cancel", parents=[common], help="unload the staged kernel or roll back")

    unq = sub.add_parser(
        "unquarantine",
        parents=[common],
        help="let a kernel a transition fell back from be staged again",
        description="A transition that fell back to the old kernel (the new one never "
        "verified: the watchdog, or someone, reset the machine) quarantines its kernel: "
        "Stage refuses it, and the latest kernel, auto-stage and 'reboot' leave it alone. "
        "'liveupctl kernels' shows why. This lifts the quarantine, once the cause is fixed.",
    )
    which = unq.add_mutually_exclusive_group(required=True)
    which.add_argument("release", nargs="?", default="", help="the quarantined kernel's release")
    which.add_argument(
        "--all", action="store_true", help="every quarantined kernel (rewrites an unreadable list)"
    )

    hist = sub.add_parser("history", parents=[common], help="past transitions")
    hist.add_argument("--limit", type=int, default=0, metavar="N", help="newest N only")

    local = argparse.ArgumentParser(add_help=False)
    add_output_options(local, suppress=True)
    hk = sub.add_parser(
        "hooks", parents=[local], help="effective hooks (read locally), or check one file"
    )
    hk.add_argument("--config", type=Path, help="liveupd.conf (default /etc/liveupd/liveupd.conf)")
    hsub = hk.add_subparsers(dest="hooks_command", metavar="check")
    chk = hsub.add_parser("check", parents=[local], help="validate one hook manifest")
    chk.add_argument("file", type=Path)

    rb = sub.add_parser(
        "reboot",
        parents=[common],
        help="stage the newest kernel and switch to it, without asking (package managers, "
        "fleet tools)",
        description="Stage the newest installed kernel (or KERNEL; the running one makes a fast "
        "reboot into the same kernel) and switch to it, without asking anything. A staged "
        "transition is executed as it is.",
        epilog=MODES_HELP + " Exit codes: 0 the switch was requested (or, with --fallback, "
        "the normal reboot); 1 failed, the machine runs on unchanged; 2 usage; 3 no reboot "
        "needed (--if-needed); 4 not authorized; 5 kexec is unsupported here (without "
        "--fallback). When standard output is not a terminal it returns (0) as soon as the "
        "switch can no longer fail back: direct mode, the exec phase began; systemd mode, "
        "kexec.target was started.",
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
        f"stop cleanly (default here: {default_mode}; see the note on modes below)",
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


def say(args: argparse.Namespace, line: str) -> None:
    """An informational line (not printed with --quiet)."""
    if not Conventions.of(args).quiet:
        print(line)


async def cmd_status(client: Client, args: argparse.Namespace) -> int:
    data = await status.gather(client)
    how = Conventions.of(args)
    if how.json:
        render.print_json(data)
    else:
        output.page(status.text(data), enabled=how.pager)
    return int(ExitCode.OK)


async def cmd_show(client: Client, args: argparse.Namespace) -> int:
    how = Conventions.of(args)
    try:
        entry, live = await show.fetch(client, args.id)
    except show.NotFound as e:
        die(e.message, e.code)
    if how.json:
        render.print_json(entry)
    else:
        output.page(show.text(entry, live), enabled=how.pager)
    return int(ExitCode.OK)


async def cmd_kernels(client: Client, args: argparse.Namespace) -> int:
    kernels = [k.to_json() for k in await client.kernels()]
    how = Conventions.of(args)
    if how.json:
        render.print_json(kernels)
    else:
        output.page(render.kernels_text(kernels, legend=how.legend), enabled=how.pager)
    return int(ExitCode.OK)


async def cmd_history(client: Client, args: argparse.Namespace) -> int:
    if args.limit < 0:
        die("--limit must be 0 (all) or more", ExitCode.USAGE)
    entries = await client.history(args.limit)
    how = Conventions.of(args)
    if how.json:
        render.print_json(entries)
    else:
        output.page(render.history_text(entries, legend=how.legend), enabled=how.pager)
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
    say(args, f"Staged {props['TargetRelease']} as transition {tid}")
    say(args, f"  kernel:       {props['KernelPath']}")
    say(args, f"  initrd:       {props['InitrdPath'] or '-'}")
    say(args, f"  command line: {props['CommandLine']}")
    say(args, "Run 'liveupctl exec' to switch to it, or 'liveupctl cancel' to unload it.")
    return int(ExitCode.OK)


async def cmd_exec(client: Client, args: argparse.Namespace) -> int:
    return await execute(
        client,
        mode=args.mode,
        ignore_inhibitors=args.ignore_inhibitors,
        interactive=agent.wanted(args.no_ask_password),
        wait=not args.no_wait,
        quiet=Conventions.of(args).quiet,
    )


async def execute(
    client: Client,
    *,
    mode: str,
    ignore_inhibitors: bool,
    interactive: bool,
    wait: bool,
    quiet: bool = False,
    until_no_return: bool = False,
) -> int:
    """Execute and follow; ``until_no_return``: return once it can no longer fail back."""
    manager = await client.properties()
    dry_run = bool(manager.get("DryRun", False))
    follower = Follower(
        str(manager.get("StagedTransition", "")),
        renderer_for(sys.stdout, quiet=quiet),
        dry_run=dry_run,
        no_return=mode if until_no_return else None,
    )
    if wait:  # subscribe before the call: no signal is missed
        await client.watch(follower.on_signal)
    with agent.tty_agent(interactive):
        tid, path = await client.execute(
            mode=mode, ignore_inhibitors=ignore_inhibitors, interactive=interactive
        )
    how = f"{mode} mode" + (", dry run" if dry_run else "")
    if not wait:
        if not quiet:
            print(f"Started transition {tid} ({how}); follow it with 'liveupctl status'")
        return int(ExitCode.OK)
    follower.path = path
    with Interrupts(client, follower, tid, interactive=interactive) as interrupts:
        try:
            target = str((await client.transition(path)).get("TargetRelease", ""))
        except RemoteError as e:
            if not e.unreachable:
                raise
            target = ""
        if not quiet:
            print(f"Transition {tid}: switching to {target or 'the staged kernel'} ({how})")
            sys.stdout.flush()
        follower.begin(target)  # every signal since before Execute, then live ones
        gone = asyncio.ensure_future(client.disconnected())
        waiting: set[asyncio.Future[Any]] = {follower.done, gone, interrupts.detached}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if interrupts.detached.done():
            follower.renderer.finish()
            await interrupts.cancel_delivered()
            return EXIT_INTERRUPTED
        if not follower.done.done():
            follower.vanished()
    outcome = follower.done.result()
    if interrupts.cancelling and outcome.error == Cancelled.dbus_name:
        print(f"liveupctl: cancelled: {outcome.message}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.code is not ExitCode.OK:
        die(outcome.message, outcome.code)
    if not quiet:
        print(outcome.message)
    return int(ExitCode.OK)


async def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    manager = await client.properties()
    interactive = agent.wanted(args.no_ask_password)
    with agent.tty_agent(interactive):
        await client.cancel(interactive=interactive)
    if manager.get("State") == "staged":
        say(args, "Cancelled: the staged kernel was unloaded")
    else:
        say(args, "Cancelled: the running transition was rolled back")
    return int(ExitCode.OK)


async def cmd_unquarantine(client: Client, args: argparse.Namespace) -> int:
    interactive = agent.wanted(args.no_ask_password)
    _, problem = await client.quarantine()
    with agent.tty_agent(interactive):
        cleared = await client.clear_quarantine(
            "" if args.all else args.release, interactive=interactive
        )
    if cleared:
        say(args, f"No longer quarantined: {', '.join(cleared)}")
    elif args.all and problem:
        say(args, f"The unreadable quarantine list ({problem}) was rewritten empty")
    else:
        what = "no kernel is" if args.all else f"{args.release} is not"
        die(
            f"{what} quarantined; nothing to do ('liveupctl kernels' shows which are)",
            ExitCode.NOTHING_TO_DO,
        )
    return int(ExitCode.OK)


async def quarantined_instead(client: Client, manager: dict[str, Any]) -> str:
    """Why ``reboot`` must not switch: the newest installed kernel is quarantined ("": it
    may).  Such a kernel is newer than what liveupd would stage (LatestKernel leaves it out)
    and than the running one; a firmware reboot is what would boot it."""
    try:
        held, problem = await client.quarantine()
    except RemoteError as e:
        if e.name == "org.freedesktop.DBus.Error.UnknownMethod":
            return ""  # an older daemon: it quarantines nothing
        raise
    floor = max(
        (str(manager.get(k) or "") for k in ("RunningKernel", "LatestKernel")), key=version_key
    )
    installed = {k[0] for k in await client.list_kernels()}
    if problem:
        if any(version_key(r) > version_key(floor) for r in installed):
            return (
                f"the list of quarantined kernels cannot be read ({problem}), so no newer "
                "kernel is tried; 'liveupctl unquarantine --all' rewrites it"
            )
        return ""
    newer = [
        q for q in held if q.release in installed and version_key(q.release) > version_key(floor)
    ]
    if not newer:
        return ""
    q = max(newer, key=lambda q: version_key(q.release))
    return (
        f"the newest installed kernel, {q.release}, is quarantined: transition {q.transition} "
        f"fell back from it ({q.reason}); clear it with 'liveupctl unquarantine {q.release}' "
        "once the cause is fixed"
    )


async def cmd_reboot(client: Client, args: argparse.Namespace) -> int:
    """Stage (unless the right kernel is staged) and execute, without asking anything."""
    manager = await client.properties()
    running = str(manager.get("RunningKernel") or "")
    staged_path = str(manager.get("StagedTransition", names.NO_TRANSITION))
    if not args.kernel and staged_path == names.NO_TRANSITION:
        # Never a loop: the kernel the last jump fell back from is not tried again.
        why = await quarantined_instead(client, manager)
        if why:
            raise Quarantined(why)
    if args.if_needed and not reboot_needed(manager, explicit=bool(args.kernel)):
        say(
            args,
            f"No reboot needed: running the newest installed kernel ({running}), nothing is "
            "staged, and no package asked for a reboot (/run/reboot-required)",
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
        say(args, f"Switching to the staged kernel {staged['TargetRelease']} ({staged['Id']})")
    else:
        try:
            tid, path = await client.stage(args.kernel)
        except RemoteError as e:
            raise StageFailed(e) from e
        target = str((await client.transition(path)).get("TargetRelease", ""))
        same = " (the running kernel: a fast reboot)" if target == running else ""
        say(args, f"Staged {target} as transition {tid}{same}")
    return await execute(
        client,
        mode=args.mode,
        ignore_inhibitors=args.ignore_inhibitors,
        interactive=False,
        wait=True,
        quiet=Conventions.of(args).quiet,
        # Like a reboot command for whoever waits for it to end (a fleet tool, a
        # script): return once the switch cannot fail back; a person at a terminal
        # follows it on.
        until_no_return=not _is_tty(sys.stdout),
    )


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (ValueError, OSError):
        return False


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


class Quarantined(Exception):
    """The kernel ``reboot`` would switch to is quarantined (a transition fell back from it)."""


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
    "show": cmd_show,
    "kernels": cmd_kernels,
    "history": cmd_history,
    "stage": cmd_stage,
    "exec": cmd_exec,
    "cancel": cmd_cancel,
    "unquarantine": cmd_unquarantine,
    "reboot": cmd_reboot,
}


async def run(args: argparse.Namespace) -> int:
    client = await Client.connect(bus_choice(args))
    try:
        return await COMMANDS[args.command](client, args)
    finally:
        client.close()


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:  # a bare liveupctl, as a bare systemctl lists units
        args = p.parse_args([*(sys.argv[1:] if argv is None else argv), "status"])
    if args.json and args.command not in JSON_VERBS:
        p.error(
            f"--json: {args.command} prints no JSON (these do: {', '.join(sorted(JSON_VERBS))})"
        )
    return args


def main(argv: Sequence[str] | None = None, *, fallback: Sequence[str] | None = None) -> int:
    """The console script; ``fallback`` replaces the command ``reboot --fallback`` runs."""
    guarded = output.guard_stdout()
    try:
        status_ = _main(argv, fallback)
    except SystemExit as e:  # die(), usage errors: their status, once the output is out
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return output.exit_status(guarded, code)
    return output.exit_status(guarded, status_)


def _main(argv: Sequence[str] | None, fallback: Sequence[str] | None) -> int:
    args = parse(argv)
    try:
        if args.command == "hooks":
            from liveupd.ctl import hooks  # the config model and the hooks: this verb only

            return hooks.run(args)
        try:
            return asyncio.run(run(args))
        except KexecUnsupported as e:
            message = f"kexec cannot work on this machine: {e}"
            if args.command == "reboot" and args.fallback:
                return run_fallback(message, fallback)
            die(message, ExitCode.UNSUPPORTED)
        except Quarantined as e:
            if args.fallback:
                return run_fallback(str(e), fallback)
            die(
                f"not switching: {e}; or reboot the ordinary way (liveupctl reboot --fallback)",
                ExitCode.FAILED,
            )
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
        interrupted(args.command)
        return EXIT_INTERRUPTED


def interrupted(command: str) -> None:
    """Ctrl-C outside the following of a transition: say what goes on regardless."""
    note = {
        "stage": "; liveupd finishes staging if the request reached it ('liveupctl status')",
        "cancel": "; liveupd finishes the rollback if the request reached it",
        "reboot": "; see 'liveupctl status' for what liveupd goes on with",
        "exec": "; see 'liveupctl status' for what liveupd goes on with",
    }.get(command, "")
    sys.stdout.flush()
    newline = "\n" if sys.stderr.isatty() else ""  # after the ^C the terminal echoed
    print(f"{newline}liveupctl: interrupted{note}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

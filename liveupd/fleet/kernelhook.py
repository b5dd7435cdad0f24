"""``python3 -m liveupd.fleet.kernelhook installed|removed VERSION [IMAGE]``.

Run by the kernel install hooks (``kernel-install/`` in the source tree:
``/etc/kernel/postinst.d/zz-liveupd``, ``/etc/kernel/postrm.d/zz-liveupd``,
``/usr/lib/kernel/install.d/99-liveupd.install``).  It reads liveupd's
configuration with liveupd's own loader, talks to the daemon over the system
bus, and says on stderr (and to syslog, as ``liveupd-kernel-hook``) what it
did or why not.  It exits 0 whatever happens, except on a usage error (2):
a kernel package must never fail to install because of liveupd.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from liveupd import logs
from liveupd.config.load import load_config
from liveupd.ctl.client import BusChoice, Client, RemoteError
from liveupd.errors import ExitCode, LiveUpdError
from liveupd.fleet.autostage import Result, auto_stage_off, kernel_installed, kernel_removed

LOG = logs.get("kernelhook")
SYSLOG_IDENT = "liveupd-kernel-hook"
SYSLOG_SOCKET = "/dev/log"
DEADLINE = 300.0  # activation, recovery wait, Stage (reads and loads a kernel)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="liveupd-kernel-hook",
        description="Stage a newly installed kernel (when [kernel] auto-stage is on), or "
        "cancel a staged transition to a kernel being removed.",
    )
    p.add_argument("action", choices=["installed", "removed"])
    p.add_argument("version", help="the kernel release, as uname -r prints it")
    p.add_argument("image", nargs="?", default="", help="the kernel image path")
    p.add_argument("--config", type=Path, help="liveupd.conf (default /etc/liveupd/liveupd.conf)")
    p.add_argument("--source", default="kernel hook", help="who ran this, for the log")
    return p


# ---------------------------------------------------------------- logging --


class MessageFormatter(logging.Formatter):
    """``liveupd: <message>``: the line a person reads in the package manager's output."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        return f"liveupd: {fields.get('message') or record.getMessage()}"


def setup_logging() -> None:
    root = logging.getLogger(logs.LOGGER_NAME)
    root.setLevel(logging.INFO)
    root.propagate = False
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(MessageFormatter())
    root.handlers[:] = [out]
    try:
        socket_there = stat.S_ISSOCK(Path(SYSLOG_SOCKET).stat().st_mode)
    except OSError:
        socket_there = False
    if socket_there:
        try:
            syslog = logging.handlers.SysLogHandler(
                SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
        except OSError:
            return
        syslog.ident = f"{SYSLOG_IDENT}[{os.getpid()}]: "
        syslog.setFormatter(logs.LogfmtFormatter(timestamps=False))
        root.addHandler(syslog)


def report(result: Result, **context: object) -> None:
    logs.event(
        LOG, result.event, level=result.level, **context, **result.fields, message=result.message
    )


# -------------------------------------------------------------------- run --


def in_chroot() -> bool:
    """True when / is not init's root (a chroot building an image); False when unsure."""
    try:
        mine, init = Path("/").stat(), Path("/proc/1/root").stat()
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) != (init.st_dev, init.st_ino)


async def act(args: argparse.Namespace) -> Result:
    config = load_config(args.config) if args.action == "installed" else None
    if config is not None and not config.kernel.auto_stage:
        return auto_stage_off(args.version)  # the daemon is not even started
    client = await Client.connect(BusChoice())
    try:
        if config is not None:
            return await kernel_installed(client, config, args.version)
        return await kernel_removed(client, args.version, args.image)
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    context = {"action": args.action, "release": args.version, "source": args.source}
    if in_chroot():
        report(
            Result(
                "kernelhook.skipped",
                f"not acting on {args.version}: running in a chroot (an image being built), "
                "whose kernels are not this machine's",
            ),
            **context,
        )
        return int(ExitCode.OK)
    try:
        result = asyncio.run(asyncio.wait_for(act(args), DEADLINE))
    except RemoteError as e:  # no system bus
        result = Result(
            "kernelhook.skipped",
            f"nothing done for {args.version}: {e.message}",
            level=logging.WARNING,
            fields={"error": e.name},
        )
    except LiveUpdError as e:  # the configuration is invalid
        result = Result(
            "kernelhook.failed",
            f"nothing done for {args.version}: {e.message}",
            level=logging.WARNING,
        )
    except TimeoutError:
        result = Result(
            "kernelhook.failed",
            f"nothing done for {args.version}: no answer from liveupd within {DEADLINE:.0f} s; "
            "see 'systemctl status liveupd'",
            level=logging.WARNING,
        )
    except Exception as e:
        result = Result(
            "kernelhook.failed",
            f"nothing done for {args.version}: unexpected error {e!r}; please report it",
            level=logging.ERROR,
        )
    report(result, **context)
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())

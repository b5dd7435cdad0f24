"""``liveupd``: the daemon (serves org.liveupd.LiveUpdate1), ``--check``, ``--verify``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path

from liveupd import __version__, logs
from liveupd.backends.base import Backends
from liveupd.cli import die, die_with
from liveupd.config import Config
from liveupd.config.load import load_config
from liveupd.errors import ExitCode, Failed, LiveUpdError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="liveupd",
        description="Live kernel update daemon: stages kernels and runs safe kexec transitions.",
    )
    p.add_argument("--version", action="version", version=f"liveupd {__version__}")
    p.add_argument(
        "--config", type=Path, help="configuration file (default /etc/liveupd/liveupd.conf)"
    )
    p.add_argument("--state-dir", type=Path, help="override [daemon] state-dir")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="simulate the machine: record what would be done, never touch it",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate config, hooks and kernel directories, then exit",
    )
    p.add_argument(
        "--verify", action="store_true", help="verify a pending transition after boot, then exit"
    )
    bus = p.add_mutually_exclusive_group()
    bus.add_argument("--session", action="store_true", help="serve on the session bus (tests)")
    bus.add_argument("--bus", metavar="ADDRESS", help="serve on the bus at ADDRESS (tests)")
    p.add_argument("--debug", action="store_true", help="log debug messages")
    return p


HOST_TEST_ENV = "LIVEUPD_HOST_TEST"


def make_backends(config: Config, dry_run: bool) -> Backends:
    if dry_run:
        from liveupd.backends import dryrun

        try:
            return dryrun.make(config.state_dir)
        except (OSError, ValueError) as e:
            raise Failed(
                f"cannot set up the simulated machine ({dryrun.MACHINE_ENV}): {e}"
            ) from None
    if os.environ.get(HOST_TEST_ENV):
        raise Failed(
            f"refusing to touch this machine: {HOST_TEST_ENV} is set, so this is a test "
            "host; run liveupd with --dry-run"
        )
    from liveupd.backends.real import make

    return make(config)


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    if args.state_dir is not None:
        daemon = dataclasses.replace(config.daemon, state_dir=str(args.state_dir.absolute()))
        config = dataclasses.replace(config, daemon=daemon)
    return config


def run_check(args: argparse.Namespace) -> int:
    from liveupd.daemon.check import check

    _, problems = check(args.config)
    for line in problems:
        print(line)
    if problems:
        return int(ExitCode.FAILED)
    print("configuration, hooks and kernel directories are valid")
    return int(ExitCode.OK)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup(logging.DEBUG if args.debug else logging.INFO)
    if args.check:
        return run_check(args)
    try:
        config = apply_overrides(load_config(args.config), args)
    except LiveUpdError as e:
        die(f"refusing to start: the configuration is invalid:\n{e.message}", e.exit_code)
    try:
        backends = make_backends(config, args.dry_run)
        if args.verify:
            from liveupd.daemon.verify import verify_once

            return asyncio.run(verify_once(config, backends))
        from liveupd.service.server import serve

        bus = "session" if args.session else (args.bus or "system")
        return asyncio.run(serve(config, backends, bus=bus))
    except LiveUpdError as e:
        die_with(e)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

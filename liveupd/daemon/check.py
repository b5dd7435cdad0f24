"""``liveupd --check``: validate the configuration, every hook, the kernel directories,
and the services ``[preserve] units`` lists (``criu check``, what CRIU cannot dump).

Every violation is one line naming the file (or directory) and the reason:
a bad key, a manifest or program or directory someone other than root could
change, a FIFO or device or oversized file where a file belongs, a boot
loader entry that cannot be used.
"""

from __future__ import annotations

import os
from pathlib import Path

from liveupd import safeopen
from liveupd.config import Config
from liveupd.config.load import config_sources, load_config
from liveupd.errors import ConfigError
from liveupd.hooks.discovery import problems as hook_problems
from liveupd.kernel import discovery
from liveupd.quoting import clip
from liveupd.safeopen import Refusal, UnsafeFile


def kernel_problems(config: Config) -> list[str]:
    """The allowed kernel directories that cannot be trusted, and unusable boot entries."""
    problems = []
    for d in config.kernel.allowed_dirs:
        try:
            safeopen.open_dir(d).close()
        except UnsafeFile as e:
            if e.refusal not in (Refusal.MISSING, Refusal.NOT_DIRECTORY):
                where = "" if e.path == d else f"{clip(e.path)}: "
                problems.append(f"{d}: kernel.allowed-dirs: refusing it: {where}{e.reason}")
    problems += discovery.scan(config, os.uname().release).problems
    return problems


def preserve_problems(config: Config) -> list[str]:
    """[preserve] units: ``criu check``, and each listed service that CRIU cannot dump."""
    if not config.preserve.units:
        return []
    import asyncio
    import subprocess

    from liveupd.preserve.plan import problems as tree_problems
    from liveupd.preserve.systemd import SystemdServices

    criu = config.preserve.criu
    problems = []
    try:
        r = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=60, check=False)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"exit {r.returncode}"]
            problems.append(f"preserve.criu: {criu} check failed: {clip(last[0])}")
    except (OSError, subprocess.TimeoutExpired) as e:
        problems.append(f"preserve.criu: {criu} check cannot run: {e}")
    services = SystemdServices()
    for unit in config.preserve.units:
        try:
            tree = asyncio.run(services.inspect(unit))
        except OSError as e:
            problems.append(f"preserve.units: {unit}: cannot be inspected: {e.strerror or e}")
            continue
        problems += [f"preserve.units: {p}" for p in tree_problems(tree)]
    return problems


def check(config_file: Path | None) -> tuple[Config | None, list[str]]:
    """(config if valid, every problem found, one line each)."""
    problems: list[str] = []
    try:
        config = load_config(config_file)
    except ConfigError as e:
        return None, e.problems
    problems += hook_problems(config.hook_dirs)
    problems += kernel_problems(config)
    problems += preserve_problems(config)
    return config, problems


def describe_sources(config_file: Path | None) -> list[str]:
    return [str(p) for p in config_sources(config_file)]

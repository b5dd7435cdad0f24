"""``liveupctl hooks`` and ``liveupctl hooks check FILE``: read locally, no daemon needed.

The effective hooks are what the daemon would run: the winning file of each
name across the hook directories (vendor, then admin), masked ones and what
each overrides, in the order they run (phase, then ``NN`` prefix).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from liveupd.config.load import load_config
from liveupd.ctl import output, render
from liveupd.ctl.options import Conventions
from liveupd.errors import ConfigError, ExitCode
from liveupd.hooks.discovery import EntryStatus, HookEntry, scan
from liveupd.hooks.manifest import HOOK_NAME, Hook, load_manifest
from liveupd.hooks.trust import program_problem
from liveupd.transition.phases import HOOK_PHASES


def entry_json(e: HookEntry) -> dict[str, Any]:
    hook = e.hook
    m = hook.manifest if hook is not None else None
    return {
        "name": e.name,
        "path": str(e.path),
        "status": str(e.status),
        "phase": str(m.phase) if m is not None else None,
        "order": hook.prefix if hook is not None else _prefix(e.name),
        "overrides": [str(p) for p in e.overrides],
        "problems": list(e.problems),
        "description": m.description if m is not None else "",
        "run": m.run if m is not None else None,
        "undo": m.undo if m is not None else None,
        "on_failure": m.on_failure if m is not None else None,
    }


def _prefix(name: str) -> int | None:
    return int(name[:2]) if HOOK_NAME.match(name + ".hook") else None


def _run_order(e: dict[str, Any]) -> tuple[int, int, str]:
    phases = [str(p) for p in HOOK_PHASES]
    phase = phases.index(e["phase"]) if e["phase"] in phases else len(phases)
    return (phase, e["order"] if e["order"] is not None else 100, e["name"])


def list_hooks(
    config_file: Path | None, as_json: bool, *, legend: bool = True, pager: bool = True
) -> int:
    config = load_config(config_file)
    entries = sorted((entry_json(e) for e in scan(config.hook_dirs)), key=_run_order)
    if as_json:
        render.print_json(entries)
    else:
        output.page(render.hooks_text(entries, legend=legend), enabled=pager)
    bad = any(e["status"] == EntryStatus.INVALID for e in entries)
    return int(ExitCode.FAILED if bad else ExitCode.OK)


def check_file(path: Path) -> tuple[Hook | None, list[str]]:
    try:
        hook = load_manifest(path)
    except ConfigError as e:
        return None, e.problems
    problems = []  # the manifest's own trust was checked as it was opened
    for key, argv in (("run", hook.manifest.run), ("undo", hook.manifest.undo)):
        if argv is not None:
            problem = program_problem(path, key, argv)
            if problem:
                problems.append(problem)
    return hook, problems


def check(path: Path, as_json: bool) -> int:
    hook, problems = check_file(path)
    if as_json:
        m = hook.manifest if hook else None
        render.print_json(
            {
                "file": str(path),
                "valid": not problems,
                "problems": problems,
                "name": hook.name if hook else None,
                "phase": str(m.phase) if m else None,
                "order": hook.prefix if hook else None,
                "run": m.run if m else None,
                "undo": m.undo if m else None,
            }
        )
    elif problems:
        for line in problems:
            print(line)
    elif hook is not None:
        m = hook.manifest
        print(f"{path}: valid: hook {hook.name}, phase {m.phase}, order {hook.prefix:02d}")
    return int(ExitCode.FAILED if problems else ExitCode.OK)


def run(args: argparse.Namespace) -> int:
    if args.hooks_command == "check":
        return check(args.file, args.json)
    how = Conventions.of(args)
    return list_hooks(args.config, how.json, legend=how.legend, pager=how.pager)

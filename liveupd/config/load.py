"""Load the configuration: the main file, then drop-ins merged in name order.

Each file is validated on its own first, so an error names the file that holds
the bad key; then the files are merged (tables merge key by key, any other
value, lists included, is replaced by the later file) and validated as a whole.

Every file is opened through :mod:`liveupd.safeopen`: root's (or the user
liveupd runs as), in directories that are root's from ``/`` down, not
writable by group or others, a regular file of at most 64 KiB.  A file that
fails is a problem naming it and why, like a bad key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from liveupd import paths, safeopen, schema
from liveupd.config.model import Config
from liveupd.errors import ConfigError
from liveupd.safeopen import Kind, Refusal, UnsafeFile
from liveupd.validation import describe


def _dropins(dirs: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """``*.conf`` files of ``dirs`` (later dirs override by name; sorted by name), and
    a problem for each directory that cannot be trusted."""
    by_name: dict[str, Path | None] = {}
    problems: list[str] = []
    for d in dirs:
        try:
            opened = safeopen.open_dir(str(d))
        except UnsafeFile as e:
            if e.refusal not in (Refusal.MISSING, Refusal.NOT_DIRECTORY):
                problems.append(f"{e.path}: refusing drop-in directory: {e.reason}")
            continue
        with opened:
            for name in safeopen.list_names(opened):
                if name.endswith(".conf") and not name.startswith("."):
                    # A symlink to /dev/null masks the file of that name.
                    by_name[name] = None if safeopen.is_mask(opened, name) else d / name
    return [p for n in sorted(by_name) if (p := by_name[n]) is not None], problems


def dropin_files(dirs: Iterable[Path]) -> list[Path]:
    """``*.conf`` files of ``dirs``: later dirs override by name; sorted by name."""
    return _dropins(dirs)[0]


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with safeopen.open_file(str(path.absolute()), Kind.CONFIG) as f:
            text = safeopen.read_text(f)
    except UnsafeFile as e:
        if e.refusal is Refusal.MISSING:
            raise ConfigError([f"{path}: cannot read: {e.path} does not exist"]) from None
        if e.path == str(path.absolute()):
            raise ConfigError([f"{path}: refusing configuration file: {e.reason}"]) from None
        raise ConfigError([f"{path}: refusing configuration file: {e.path}: {e.reason}"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None


def _sources(config_file: Path | None) -> tuple[list[Path], list[str]]:
    if config_file is None:
        main = paths.CONFIG_FILE
        dirs: tuple[Path, ...] = paths.DROPIN_DIRS
    else:
        main = config_file
        dirs = (config_file.with_name(config_file.name + ".d"),)
    files = [main] if config_file is not None or main.exists() or main.is_symlink() else []
    dropins, problems = _dropins(dirs)
    return files + dropins, problems


def config_sources(config_file: Path | None) -> list[Path]:
    """The files that make up the configuration, in the order they apply."""
    return _sources(config_file)[0]


def load_config(config_file: Path | None = None) -> Config:
    """Load and validate the configuration; raise ConfigError listing every problem.

    With ``config_file`` None the system locations are used and a missing main
    file means defaults; an explicitly given file must exist.
    """
    sources, problems = _sources(config_file)
    merged: dict[str, Any] = {}
    for path in sources:
        try:
            data = _read_toml(path)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        try:
            schema.load(Config, data)
        except schema.Invalid as e:
            problems.extend(describe(path, e))
            continue
        merged = merge(merged, data)
    if problems:
        raise ConfigError(problems)
    try:
        return schema.load(Config, merged).from_file(config_file)
    except schema.Invalid as e:
        raise ConfigError(describe("merged configuration", e)) from None

"""Load the configuration: the main file, then drop-ins merged in name order.

Each file is validated on its own first, so an error names the file that holds
the bad key; then the files are merged (tables merge key by key, any other
value, lists included, is replaced by the later file) and validated as a whole.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from liveupd import paths
from liveupd.config.model import Config
from liveupd.errors import ConfigError
from liveupd.validation import describe


def dropin_files(dirs: Iterable[Path]) -> list[Path]:
    """``*.conf`` files of ``dirs``: later dirs override by name; sorted by name."""
    by_name: dict[str, Path] = {}
    for d in dirs:
        try:
            entries = list(d.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for f in entries:
            if f.name.endswith(".conf"):
                by_name[f.name] = f
    return [by_name[n] for n in sorted(by_name) if not _masked(by_name[n])]


def _masked(path: Path) -> bool:
    return path.is_symlink() and path.resolve() == Path("/dev/null")


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
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None


def config_sources(config_file: Path | None) -> list[Path]:
    """The files that make up the configuration, in the order they apply."""
    if config_file is None:
        main = paths.CONFIG_FILE
        dirs: tuple[Path, ...] = paths.DROPIN_DIRS
    else:
        main = config_file
        dirs = (config_file.with_name(config_file.name + ".d"),)
    files = [main] if main.exists() or config_file is not None else []
    return files + dropin_files(dirs)


def load_config(config_file: Path | None = None) -> Config:
    """Load and validate the configuration; raise ConfigError listing every problem.

    With ``config_file`` None the system locations are used and a missing main
    file means defaults; an explicitly given file must exist.
    """
    problems: list[str] = []
    merged: dict[str, Any] = {}
    for path in config_sources(config_file):
        try:
            data = _read_toml(path)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        try:
            Config.model_validate(data)
        except ValidationError as e:
            problems.extend(describe(path, e))
            continue
        merged = merge(merged, data)
    if problems:
        raise ConfigError(problems)
    try:
        return Config.model_validate(merged).from_file(config_file)
    except ValidationError as e:
        raise ConfigError(describe("merged configuration", e)) from None

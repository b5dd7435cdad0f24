"""``liveupd --check``: validate the configuration and every hook manifest."""

from __future__ import annotations

from pathlib import Path

from liveupd.config import Config
from liveupd.config.load import config_sources, load_config
from liveupd.errors import ConfigError
from liveupd.hooks.discovery import problems as hook_problems


def check(config_file: Path | None) -> tuple[Config | None, list[str]]:
    """(config if valid, every problem found, one line each)."""
    problems: list[str] = []
    try:
        config = load_config(config_file)
    except ConfigError as e:
        return None, e.problems
    problems += hook_problems(config.hook_dirs)
    return config, problems


def describe_sources(config_file: Path | None) -> list[str]:
    return [str(p) for p in config_sources(config_file)]

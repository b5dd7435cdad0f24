"""Turn validation errors into one line per problem, naming file and key; the shapes
the configuration and the journal both validate (unit names)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from liveupd.schema import Invalid, Rule, where

# A systemd unit that liveupd stops and starts again (a listener: ``ssh.socket``,
# ``ssh.service``): what systemd allows in a unit name, a template only with its
# instance, no leading '-' (it is an argument of systemctl), a type that listens.
UNIT_NAME_PATTERN = r"^[A-Za-z0-9_.:\\][A-Za-z0-9_.:\\-]*(@[A-Za-z0-9_.:\\-]+)?\.(service|socket)$"
UNIT_NAME_MAX = 255
UnitName = Annotated[str, Rule(max_length=UNIT_NAME_MAX, pattern=UNIT_NAME_PATTERN)]


def is_unit_name(value: str) -> bool:
    return len(value) <= UNIT_NAME_MAX and re.fullmatch(UNIT_NAME_PATTERN, value) is not None


def _shown(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut after ``limit`` characters: a file's value is not echoed whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def describe(source: Path | str, err: Invalid) -> list[str]:
    """One ``FILE: KEY: what was expected (got VALUE)`` line per problem."""
    lines = []
    for e in err.errors:
        msg = e.msg
        if e.kind == "unknown-key":
            msg = "unknown key (remove it or check its spelling)"
        got = "" if e.kind in ("missing", "unknown-key", "json") else f" (got {_shown(e.input)})"
        lines.append(f"{source}: {where(e.loc)}: {msg}{got}")
    return lines

"""Turn pydantic validation errors into one line per problem, naming file and key;
the shapes the configuration and the journal both validate (unit names)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError

# A systemd unit that liveupd stops and starts again (a listener: ``ssh.socket``,
# ``ssh.service``): what systemd allows in a unit name, a template only with its
# instance, no leading '-' (it is an argument of systemctl), a type that listens.
UNIT_NAME_PATTERN = r"^[A-Za-z0-9_.:\\][A-Za-z0-9_.:\\-]*(@[A-Za-z0-9_.:\\-]+)?\.(service|socket)$"
UNIT_NAME_MAX = 255
UnitName = Annotated[str, Field(pattern=UNIT_NAME_PATTERN, max_length=UNIT_NAME_MAX)]


def is_unit_name(value: str) -> bool:
    return len(value) <= UNIT_NAME_MAX and re.fullmatch(UNIT_NAME_PATTERN, value) is not None


def key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _shown(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut after ``limit`` characters: a file's value is not echoed whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def describe(source: Path | str, err: ValidationError) -> list[str]:
    """One ``FILE: KEY: what was expected (got VALUE)`` line per problem."""
    lines = []
    for e in err.errors():
        key = key_path(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        got = "" if e["type"] in ("missing", "extra_forbidden") else f" (got {_shown(e['input'])})"
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{source}: {key}: {msg}{got}")
    return lines

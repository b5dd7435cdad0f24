"""Turn pydantic validation errors into one line per problem, naming file and key."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


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

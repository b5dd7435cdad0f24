"""The CLI edge: the only place that turns errors into messages and exit codes."""

from __future__ import annotations

import sys
from typing import NoReturn

from liveupd.errors import ExitCode, LiveUpdError

# Module files that show up as argv[0] under `python -m`; the console scripts'
# own names are what users know.
_MODULE_NAMES = {"main.py": "liveupd", "__main__.py": "liveupd"}


def program_name() -> str:
    name = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else ""
    if name in _MODULE_NAMES:
        return "liveupctl" if "/ctl/" in sys.argv[0] else _MODULE_NAMES[name]
    return name or "liveupd"


def die(message: str, code: int = ExitCode.FAILED) -> NoReturn:
    prog = program_name()
    for line in message.splitlines() or [""]:
        print(f"{prog}: {line}", file=sys.stderr)
    sys.exit(int(code))


def die_with(error: LiveUpdError) -> NoReturn:
    die(error.message, error.exit_code)

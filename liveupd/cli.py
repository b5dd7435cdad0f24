"""The CLI edge: the only place that turns errors into messages and exit codes."""

from __future__ import annotations

import sys
from typing import NoReturn

from liveupd.errors import ExitCode, LiveUpdError


def die(message: str, code: int = ExitCode.FAILED) -> NoReturn:
    prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "liveupd"
    for line in message.splitlines() or [""]:
        print(f"{prog}: {line}", file=sys.stderr)
    sys.exit(int(code))


def die_with(error: LiveUpdError) -> NoReturn:
    die(error.message, error.exit_code)

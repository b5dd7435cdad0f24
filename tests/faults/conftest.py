"""tests/faults: fault injection in-process and against a real daemon on a private bus."""

from __future__ import annotations

import pytest

from tests.dbus.fixtures import (  # noqa: F401 - fixtures
    bus,
    daemon,
    procs,
    recorder,
    start_daemon,
)
from tests.faults import tally


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in tally.lines():
        terminalreporter.write_line(line)

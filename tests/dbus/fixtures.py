"""Fixtures shared by tests/dbus and tests/ctl: a private bus, the daemon, mocks, a recorder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from liveupd.config import Config
from tests.dbus.buses import (
    Daemon,
    PrivateBus,
    Processes,
    Recorder,
    dbusmock,
    processes,
)

POLKIT = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
LOGIND = "org.freedesktop.login1"

DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def procs() -> Iterator[Processes]:
    with processes() as p:
        yield p


@pytest.fixture
def bus(procs: Processes) -> PrivateBus:
    return PrivateBus(procs)


@pytest.fixture
def start_daemon(
    procs: Processes, bus: PrivateBus, write_config: Callable[[str], Config], tmp_path: Path
) -> DaemonFactory:
    """Start liveupd --dry-run on ``bus`` (extra TOML config, extra environment)."""

    def start(
        extra_config: str = "", env: dict[str, str] | None = None, *, wait: bool = True
    ) -> Daemon:
        config = write_config(extra_config)
        daemon = Daemon(procs, bus, tmp_path / "liveupd.conf", config.state_dir, env=env)
        return daemon.start(wait=wait)

    return start


@pytest.fixture
def daemon(start_daemon: DaemonFactory) -> Daemon:
    return start_daemon()


@pytest.fixture
def recorder(procs: Processes, bus: PrivateBus, tmp_path: Path) -> Recorder:
    return Recorder(procs, bus, tmp_path / "signals.jsonl")


class Polkit:
    """python-dbusmock's polkitd on the private bus: denies everything until allow()."""

    def __init__(self, bus: PrivateBus) -> None:
        self.bus = bus

    def allow(self, *actions: str) -> None:
        self.bus.busctl(
            "call",
            POLKIT,
            POLKIT_PATH,
            "org.freedesktop.DBus.Mock",
            "SetAllowed",
            "as",
            str(len(actions)),
            *actions,
        )

    def delay(self, seconds: float) -> None:
        self.bus.busctl(
            "call",
            POLKIT,
            POLKIT_PATH,
            "org.freedesktop.DBus.Mock",
            "SetDelay",
            "d",
            str(seconds),
        )


@pytest.fixture
def polkit(procs: Processes, bus: PrivateBus) -> Polkit:
    dbusmock(procs, bus, "polkitd", POLKIT)
    return Polkit(bus)


@pytest.fixture
def logind(procs: Processes, bus: PrivateBus) -> Any:
    dbusmock(procs, bus, "logind", LOGIND)
    return bus

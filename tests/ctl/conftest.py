"""tests/ctl: liveupctl against the daemon on a private bus."""

from tests.dbus.fixtures import (  # noqa: F401 - fixtures
    bus,
    daemon,
    logind,
    polkit,
    procs,
    recorder,
    start_daemon,
)

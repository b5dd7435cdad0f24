"""An Engine with the built-in steps and their undo handlers."""

from __future__ import annotations

from liveupd.assembly.builtins import builtin_steps
from liveupd.assembly.undo_table import UNDO
from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.transition.engine import Engine
from liveupd.transition.events import EventSink


def make_engine(config: Config, backends: Backends, *, events: EventSink) -> Engine:
    return Engine(config, backends, events=events, builtins=builtin_steps, undo=UNDO)

"""An Engine with the built-in steps and their undo handlers.

The steps and the undo handlers are imported when first needed (planning a
transition, undoing a step): ``liveupd --verify`` on a new boot needs neither
unless verification fails, and their modules (kernel, devices, storage) are
most of liveupd's import time.
"""

from __future__ import annotations

from collections.abc import Sequence

from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.hooks.manifest import Hook
from liveupd.transition.engine import Engine
from liveupd.transition.events import EventSink
from liveupd.transition.phases import ExecMode
from liveupd.transition.steps import Step


def _builtin_steps(mode: ExecMode, hooks: Sequence[Hook]) -> list[Step]:
    from liveupd.assembly.builtins import builtin_steps

    return builtin_steps(mode, hooks)


def make_engine(config: Config, backends: Backends, *, events: EventSink) -> Engine:
    from liveupd.assembly.undo_table import UNDO

    return Engine(config, backends, events=events, builtins=_builtin_steps, undo=UNDO)

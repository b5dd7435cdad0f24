"""What the steps of one transition share: its id, config, backends, journal, log."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from liveupd import logs
from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.transition.events import Event, EventSink
from liveupd.transition.journal import Journal
from liveupd.transition.phases import ExecMode

LOG = logs.get("transition")
LOG_NAME = "log.jsonl"


@dataclass(frozen=True)
class StageRequest:
    """What a caller asked to stage; empty strings mean 'choose for me'."""

    kernel: str = ""  # a path, a release, or "" for the latest installed
    initrd: str = ""  # "" pairs automatically
    cmdline: str = ""  # "" reuses the running command line
    append: str = ""
    sha256: str = ""
    profile: str = ""  # a unified kernel image's profile ("" = its default, @0)


@dataclass(frozen=True)
class Target:
    """The kernel a transition goes to, resolved and validated."""

    release: str
    kernel_path: str
    initrd_path: str | None
    cmdline: str
    sha256: str
    # A unified kernel image: the profile it boots ("@N", "" without profiles) and
    # whether its own .ucode + .initrd are used (False: staged with initrd "none").
    profile: str = ""
    uki_initrd: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        return cls(**data)


class TransitionContext:
    def __init__(
        self,
        *,
        transition_id: str,
        config: Config,
        backends: Backends,
        journal: Journal,
        events: EventSink,
        request: StageRequest | None = None,
        target: Target | None = None,
        mode: ExecMode = ExecMode.DIRECT,
    ) -> None:
        self.id = transition_id
        self.config = config
        self.backends = backends
        self.journal = journal
        self._events = events
        self.request = request or StageRequest()
        self.target = target
        self.mode = mode
        self.cancel = asyncio.Event()
        self.facts: dict[str, Any] = {}  # results steps hand to later steps
        self._held_log: list[str] = []
        self._writes_held = False

    @property
    def dir(self) -> Path:
        return self.journal.dir

    def hook_state_dir(self, hook: str) -> Path:
        return self.dir / "hooks" / hook

    # ---------------------------------------------------------- frozen fs --

    def hold_writes(self) -> None:
        """From now on, write nothing to the state directory: it is being frozen."""
        self._writes_held = True
        self.journal.hold()

    def release_writes(self) -> None:
        """The state directory is writable again: write what was held."""
        self._writes_held = False
        self.journal.release()
        if self._held_log:
            lines, self._held_log = self._held_log, []
            self._append_log(lines)

    # ------------------------------------------------------- log, events --

    def _append_log(self, lines: list[str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / LOG_NAME).open("a") as f:
            f.writelines(lines)

    def log(self, event: str, /, *, level: int = logging.INFO, **fields: Any) -> None:
        """One structured line to the daemon's log and to this transition's log."""
        logs.event(LOG, event, level=level, transition=self.id, **fields)
        line = json.dumps(
            {
                "ts": round(time.time(), 6),
                "event": event,
                "level": logging.getLevelName(level).lower(),
                **fields,
            },
            default=str,
        )
        if self._writes_held:
            self._held_log.append(line + "\n")
        else:
            self._append_log([line + "\n"])

    def emit(self, event: Event) -> None:
        self._events(event)


def read_log(transition_dir: Path) -> list[dict[str, Any]]:
    try:
        lines = (transition_dir / LOG_NAME).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out

"""What the steps of one transition share: its id, config, backends, journal, facts, log."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Generic, TypeVar

from liveupd import logs
from liveupd.backends import files
from liveupd.backends.base import Backends
from liveupd.config import Config
from liveupd.transition.events import Event, EventSink
from liveupd.transition.journal import Journal
from liveupd.transition.phases import ExecMode
from liveupd.transition.records import StageRequest, Target

__all__ = [
    "Fact",
    "Facts",
    "StageRequest",
    "Target",
    "TransitionContext",
    "read_log",
    "simulated_advice",
]

LOG = logs.get("transition")
LOG_NAME = "log.jsonl"

T = TypeVar("T")


class Fact(Generic[T]):
    """A typed key for a result one step hands to a later one (``Facts``).

    The module that produces the fact declares it, e.g. ``BINDINGS:
    Fact[tuple[Binding, ...]] = Fact("devices.bindings")``; the engine only
    carries the values.  Facts live in memory for one run: anything needed
    after a crash is in the journal or the checkpoint.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Fact({self.name!r})"


class Facts:
    def __init__(self) -> None:
        self._values: dict[Fact[Any], Any] = {}

    def set(self, fact: Fact[T], value: T) -> None:
        self._values[fact] = value

    def get(self, fact: Fact[T]) -> T | None:
        value: T | None = self._values.get(fact)
        return value

    def get_or(self, fact: Fact[T], default: T) -> T:
        value: T = self._values.get(fact, default)
        return value

    def __contains__(self, fact: Fact[Any]) -> bool:
        return fact in self._values


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
        # The process that called Execute (its login session is ended last), if known.
        self.caller_pid: int | None = None
        self.cancel = asyncio.Event()
        self.facts = Facts()  # results steps hand to later steps
        self._held_log: list[str] = []
        self._writes_held = False
        self._log_failed = False

    @property
    def dir(self) -> Path:
        return self.journal.dir

    # ------------------------------------------------------------ advice --

    @property
    def config_file(self) -> Path:
        """The configuration file the daemon uses (for advice naming a key to change)."""
        return self.config.source

    def on_machine(self, real: str) -> str:
        """Advice for the machine: ``real`` names commands to run on it; a simulated
        machine (dry run) gets advice about the simulation instead."""
        if not self.backends.dry_run:
            return real
        return simulated_advice(self.config.state_dir)

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
        """Best effort: the transition's own log must never fail the transition (the
        daemon's log has every line too)."""
        data = "".join(lines).encode()
        try:
            try:  # mode as open("a"): the umask decides
                files.append(self.dir / LOG_NAME, data, durable=False, create_mode=0o666)
            except FileNotFoundError:  # the transition's directory is not there (yet)
                self.dir.mkdir(parents=True, exist_ok=True)
                files.append(self.dir / LOG_NAME, data, durable=False, create_mode=0o666)
        except OSError as e:
            if not self._log_failed:
                self._log_failed = True
                logs.event(
                    LOG,
                    "transition-log.write-failed",
                    level=logging.ERROR,
                    transition=self.id,
                    error=e.strerror or str(e),
                )

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


def simulated_advice(state_dir: Path) -> str:
    """What to do about a failure of the dry run's simulated machine."""
    return (
        "the machine is simulated (liveupd --dry-run): its errors come from its "
        'description (LIVEUPD_DRY_RUN_MACHINE: "errors", "faults") and its state is '
        f"kept in {state_dir / 'dry-run' / 'machine.json'}; start the dry-run daemon on a "
        "fresh state directory to reset it"
    )


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

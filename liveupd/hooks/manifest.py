"""Hook manifests: ``NN-name.hook`` TOML files.

A manifest names a phase, the program to run (``run``) and optionally the
program that undoes it (``undo``), a timeout, what to do on failure and a
description.  Unknown keys are errors, so a typo never silently disables a
safety step, and values are strictly typed: ``timeout = true`` or
``timeout = "5"`` is an error, not 1 or 5 seconds.  The limits (documented in
docs/hooks.md) are below; the file itself is at most 64 KiB and is opened
through :mod:`liveupd.safeopen` (root's, in root's directories).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from liveupd import safeopen, schema
from liveupd.config.model import DeviceSelector
from liveupd.errors import ConfigError
from liveupd.quoting import clip
from liveupd.safeopen import Kind, UnsafeFile
from liveupd.schema import Rule
from liveupd.transition.phases import HOOK_PHASES, Phase
from liveupd.validation import describe

HOOK_SUFFIX = ".hook"
HOOK_NAME = re.compile(r"^(?P<prefix>[0-9]{2})-(?P<rest>[A-Za-z0-9][A-Za-z0-9_.@+-]*)\.hook$")

# Limits of a manifest's values (docs/hooks.md).
MAX_TIMEOUT = 3600  # seconds (an int: messages say 3600, not 3600.0)
MAX_ARGS = 64  # program and arguments, for run and undo
MAX_ARG_LENGTH = 4096  # characters of one argument
MAX_DESCRIPTION = 1024  # characters
MAX_SELECTORS = 64  # unbind selectors


def _check_argv(argv: list[str]) -> list[str]:
    if not argv:
        raise ValueError("expected a non-empty list: the program and its arguments")
    for arg in argv:
        if "\0" in arg:
            raise ValueError("arguments cannot contain NUL characters")
    return argv


def _hook_phase(v: object) -> Phase:
    if not isinstance(v, str) or v not in HOOK_PHASES:
        raise ValueError(f"expected one of {', '.join(map(str, HOOK_PHASES))}")
    return Phase(v)


Arg = Annotated[str, Rule(min_length=1, max_length=MAX_ARG_LENGTH)]
Argv = Annotated[list[Arg], Rule(max_length=MAX_ARGS, check=_check_argv)]
if TYPE_CHECKING:
    HookPhase = Phase
else:
    # Any value, checked by _hook_phase alone: one message for every wrong value (a
    # phase a hook cannot name, another string, another type), never the list of all
    # the phases an enum's own check would give.
    HookPhase = Annotated[Any, Rule(check=_hook_phase)]


@dataclass(frozen=True, kw_only=True)
class HookManifest:
    # Loaded by schema.load: strict, a TOML value of the wrong type is an error, never
    # converted; unknown keys are errors.
    phase: HookPhase
    run: Argv | None = None
    undo: Argv | None = None
    timeout: Annotated[float, Rule(gt=0, le=MAX_TIMEOUT)] | None = None
    on_failure: Literal["abort", "continue"] = field(
        default="abort", metadata=schema.key("on-failure")
    )
    description: Annotated[str, Rule(max_length=MAX_DESCRIPTION)] = ""
    unbind: Annotated[list[DeviceSelector], Rule(max_length=MAX_SELECTORS)] = field(
        default_factory=list
    )

    def _validated(self) -> None:
        if self.run is None and not self.unbind:
            raise ValueError("a hook needs 'run' (a program to run) or 'unbind' (devices)")


@dataclass(frozen=True)
class Hook:
    """A hook found on disk: its manifest plus where it came from."""

    name: str  # file name without the suffix, e.g. "10-network"
    path: Path
    manifest: HookManifest

    @property
    def prefix(self) -> int:
        return int(self.name[:2])

    @property
    def phase(self) -> Phase:
        return self.manifest.phase

    def timeout(self, default: float) -> float:
        return self.manifest.timeout if self.manifest.timeout is not None else default


def parse_name(path: Path) -> str:
    """The hook name for ``path``; ConfigError if the file name is not ``NN-name.hook``."""
    if not HOOK_NAME.match(path.name):
        raise ConfigError(
            [
                f"{path}: file name: expected 'NN-name.hook' (two digits, a dash, a name of "
                "letters, digits, '_', '.', '@', '+' or '-')"
            ]
        )
    return path.name.removesuffix(HOOK_SUFFIX)


def load_manifest(path: Path) -> Hook:
    """Open (safely), parse and validate one manifest; ConfigError naming the file and key.

    A manifest that cannot be trusted (owner, mode, a directory on its way, a
    FIFO, a device, larger than 64 KiB) is refused before a byte of it is read.
    """
    name = parse_name(path)
    try:
        with safeopen.open_file(str(path), Kind.MANIFEST) as f:
            text = safeopen.read_text(f)
    except UnsafeFile as e:
        raise ConfigError([refusal(path, e)]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
    try:
        manifest = schema.load(HookManifest, data)
    except schema.Invalid as e:
        raise ConfigError(describe(path, e)) from None
    return Hook(name=name, path=path, manifest=manifest)


def refusal(path: Path, e: UnsafeFile) -> str:
    """``FILE: refusing hook: why`` (naming the directory when it is one above the file)."""
    if e.path == str(path):
        return f"{path}: refusing hook: {e.reason}"
    return f"{path}: refusing hook: {clip(e.path)}: {e.reason}"

"""The command line the new kernel boots with (pure).

It starts from the caller's command line, or the BLS entry's ``options`` when
staging from an entry, or the running kernel's /proc/cmdline.  From the
kernel's part of it (before a ``--``; after it come init's arguments) the
words a boot loader adds for itself are dropped: ``BOOT_IMAGE=`` and
``initrd=``, and an earlier ``liveupd.transition=``.  Then come the appended
options, liveupd's own words (``Additions``: ``panic=N`` unless the line sets
``panic``, what keeps the watchdog running) and ``liveupd.transition=ID``.
The words liveupd added are recorded with the target (``Target.added``): when
the next update starts from /proc/cmdline of a boot liveupd made, exactly
those words are dropped (``carried``), so that they are not carried over as
if the admin had set them (a ``panic=10`` that would stop ``panic-sec`` from
applying, a blacklist of a driver the next watchdog may not have).
Words are split as the kernel splits them: on white space outside double
quotes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from liveupd.errors import InvalidArgument

TRANSITION_PARAM = "liveupd.transition"
DROP_PREFIXES = ("BOOT_IMAGE=", "initrd=", f"{TRANSITION_PARAM}=")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_WHITESPACE = " \t"


@dataclass(frozen=True)
class Built:
    """A command line and the words liveupd added to it (not the caller's)."""

    line: str
    added: tuple[str, ...]


@dataclass(frozen=True)
class Additions:
    """Words liveupd adds to the new kernel's command line (kernel parameters only)."""

    defaults: tuple[str, ...] = ()  # ``key=value``, added unless the line sets ``key``
    extra: tuple[str, ...] = ()  # added always


def _keys(words: Sequence[str]) -> set[str]:
    return {w.partition("=")[0] for w in words}


def check_text(text: str, what: str) -> None:
    """Refuse characters the kernel would mangle: newline, NUL and other controls."""
    for i, ch in enumerate(text):
        if ch == "\t":
            continue
        if ch in "\n\r\0" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            name = {"\n": "a newline", "\r": "a carriage return", "\0": "a NUL"}.get(
                ch, f"the control character {ch!r}"
            )
            raise InvalidArgument(
                f"{what} has {name} at position {i}; a kernel command line is one line "
                "of printable text: remove it"
            )


def split_cmdline(line: str, what: str = "the command line") -> list[str]:
    """Split as the kernel does: white space separates words, except inside double quotes."""
    words: list[str] = []
    word: list[str] = []
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            word.append(ch)
        elif ch in _WHITESPACE and not quoted:
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(ch)
    if quoted:
        raise InvalidArgument(
            f'{what} has an unbalanced double quote ("); close it, or the kernel would '
            "read everything after it as one parameter"
        )
    if word:
        words.append("".join(word))
    return words


def transition_param(line: str) -> str | None:
    """The ``liveupd.transition=`` value in a (booted) command line, the last one wins."""
    value = None
    for word in split_cmdline(line):
        if word == "--":
            break
        if word.startswith(f"{TRANSITION_PARAM}="):
            value = word.partition("=")[2].strip('"')
    return value


def build_cmdline(
    base: str,
    append: str,
    transition_id: str,
    limit: int,
    *,
    source: str,
    additions: Additions = Additions(),
    carried: Sequence[str] = (),
) -> str:
    """The new kernel's command line; InvalidArgument if it cannot be used.

    ``source`` names where ``base`` came from (for messages); ``limit`` is the
    longest command line the new kernel accepts, in bytes, NUL excluded.
    ``carried``: the words liveupd added to ``base`` itself (it is the command
    line of a boot liveupd made): each is dropped once.
    """
    return build(
        base, append, transition_id, limit, source=source, additions=additions, carried=carried
    ).line


def build(
    base: str,
    append: str,
    transition_id: str,
    limit: int,
    *,
    source: str,
    additions: Additions = Additions(),
    carried: Sequence[str] = (),
) -> Built:
    """``build_cmdline``, with the words liveupd added."""
    if not _ID.match(transition_id):
        raise InvalidArgument(f"transition id {transition_id!r} is not a valid parameter value")
    check_text(base, source)
    check_text(append, "the appended options")
    words = split_cmdline(base, source)
    extra = split_cmdline(append, "the appended options")
    if "--" in extra:
        raise InvalidArgument(
            "the appended options contain '--'; they are kernel parameters only. To change "
            "init's arguments, give the whole command line instead"
        )
    for word in extra:
        if word.startswith(f"{TRANSITION_PARAM}="):
            raise InvalidArgument(
                f"the appended options set {TRANSITION_PARAM}=; liveupd sets it itself: remove it"
            )
    init: list[str] | None = None
    if "--" in words:
        cut = words.index("--")
        words, init = words[:cut], words[cut + 1 :]
    kept = [w for w in words if not w.startswith(DROP_PREFIXES)]
    for word in carried:  # the last occurrence: liveupd's words come after the caller's
        if word in kept:
            del kept[len(kept) - 1 - kept[::-1].index(word)]
    present = _keys([*kept, *extra])
    ours = [w for w in additions.defaults if w.partition("=")[0] not in present]
    ours += [w for w in additions.extra if w not in kept and w not in extra]
    out = [*kept, *extra, *ours, f"{TRANSITION_PARAM}={transition_id}"]
    if init is not None:
        out += ["--", *init]
    line = " ".join(out)
    size = len(line.encode())
    if size > limit:
        raise InvalidArgument(
            f"the command line would be {size} bytes ({source}, plus appended options, "
            f"liveupd's own words and {TRANSITION_PARAM}=); the new kernel accepts at most "
            f"{limit}. Give a shorter "
            "command line or fewer appended options"
        )
    return Built(line, tuple(ours))

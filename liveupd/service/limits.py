"""Size limits on what a caller sends: checked first, before authorization or validation.

Checking a size is only measuring lengths, so it is done before anything
else; what an unauthorized caller sent is then never parsed, validated or
echoed (the refusal names the argument and its size, not its content).
Documented in docs/dbus-api.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dbus_fast import Variant

from liveupd.errors import InvalidArgument

MAX_PATH = 4096  # a kernel or initrd path: PATH_MAX
MAX_CMDLINE = 4096  # a command line (the kernel's own limit is 2048 on x86 and arm64)
MAX_OPTIONS = 16  # entries of an a{sv}
MAX_OPTION_KEY = 64  # characters of an option name
MAX_OPTION_VALUE = 4096  # characters (or elements) of an option value


def size_of(value: Any, budget: int) -> int:
    """The size of a D-Bus value (characters, bytes, elements), counted up to just past ``budget``.

    Nested values are walked only until the budget is spent, so measuring a
    huge array costs no more than measuring ``budget`` elements.
    """
    if isinstance(value, Variant):
        return size_of(value.value, budget)
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, dict):
        total = 0
        for k, v in value.items():
            total += size_of(k, budget - total) + size_of(v, budget - total)
            if total > budget:
                break
        return total
    if isinstance(value, list | tuple):
        total = 0
        for v in value:
            total += max(size_of(v, budget - total), 1)
            if total > budget:
                break
        return total
    return 1


def _too_large(method: str, what: str, size: int, limit: int) -> InvalidArgument:
    return InvalidArgument(
        f"{method}: {what} is {size if size <= limit * 4 else f'over {limit * 4}'} "
        f"characters long; at most {limit} are accepted"
    )


def check_string(method: str, what: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise _too_large(method, what, len(value), limit)


def check_options(method: str, options: Mapping[str, Any]) -> None:
    """At most MAX_OPTIONS entries, short names, values of at most MAX_OPTION_VALUE."""
    if len(options) > MAX_OPTIONS:
        raise InvalidArgument(
            f"{method}: {len(options)} options given; at most {MAX_OPTIONS} are accepted"
        )
    for n, (key, value) in enumerate(options.items(), start=1):
        if len(key) > MAX_OPTION_KEY:
            raise _too_large(method, f"the name of option {n}", len(key), MAX_OPTION_KEY)
        size = size_of(value, MAX_OPTION_VALUE * 4)
        if size > MAX_OPTION_VALUE:
            # The key is short (checked above) but still the caller's: not echoed.
            raise _too_large(method, f"the value of option {n}", size, MAX_OPTION_VALUE)


def peek_bool(options: Mapping[str, Any], key: str) -> bool:
    """A boolean option's value without validating the rest (False unless it is a 'b')."""
    v = options.get(key)
    return isinstance(v, Variant) and v.signature == "b" and v.value is True

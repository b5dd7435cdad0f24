"""The ``a{sv}`` options of Stage and Execute: known keys, right types, or InvalidArgument."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dbus_fast import Variant

from liveupd.errors import InvalidArgument
from liveupd.quoting import quote

TYPE_NAMES = {"s": "string", "b": "boolean", "u": "uint32"}


def parse(method: str, options: Mapping[str, Variant], spec: Mapping[str, str]) -> dict[str, Any]:
    """The option values of ``options``, checked against ``spec`` (key -> D-Bus type)."""
    out: dict[str, Any] = {}
    for key, variant in options.items():
        if key not in spec:
            known = ", ".join(sorted(spec)) or "none"
            raise InvalidArgument(
                f"{method}: unknown option {quote(key)}; the options are: {known}"
            )
        want = spec[key]
        if variant.signature != want:
            raise InvalidArgument(
                f"{method}: option {quote(key)} must be a {TYPE_NAMES.get(want, want)} "
                f"({want!r}), not {quote(variant.signature)}"
            )
        out[key] = variant.value
    return out

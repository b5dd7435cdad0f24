"""Kernel release ordering: 6.1.0-50 > 6.1.0-9, 6.12 > 6.9, 6.12-rc3 < 6.12.

A release is split into runs of digits (compared as numbers) and runs of
letters (compared as text); punctuation only separates.  The leading dotted
upstream version is padded to three numbers (6.12 == 6.12.0).  The words
``rc``, ``pre``, ``alpha``, ``beta`` and a ``~`` mark a pre-release: they sort
before the end of the string and before anything else, so 6.12.0-rc3 < 6.12.0
and 6.12-rc6-amd64 < 6.12-amd64.  Otherwise a number sorts after a word and a
word after the end (6.1.0-50-cloud > 6.1.0-cloud > 6.1.0).  Ties are broken by
the text itself, so the order is total and stable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PRE_RELEASE = frozenset({"rc", "pre", "alpha", "beta", "~"})

_TOKEN = re.compile(r"\d+|[A-Za-z]+|~")
_UPSTREAM = re.compile(r"^(\d+(?:\.\d+)*)")

# Segment kinds, in sort order.
_PRE, _END, _WORD, _NUM = 0, 1, 2, 3

Segment = tuple[int, int | str]


def version_key(release: str) -> tuple[tuple[Segment, ...], str]:
    segments: list[Segment] = []
    rest = release
    m = _UPSTREAM.match(release)
    if m:
        numbers = [int(n) for n in m.group(1).split(".")]
        numbers += [0] * (3 - len(numbers))
        segments += [(_NUM, n) for n in numbers]
        rest = release[m.end() :]
    for token in _TOKEN.findall(rest):
        if token.isdigit():
            segments.append((_NUM, int(token)))
        elif token.lower() in PRE_RELEASE:
            segments.append((_PRE, token.lower()))
        else:
            segments.append((_WORD, token.lower()))
    segments.append((_END, ""))
    return tuple(segments), release


def sort_releases(releases: Iterable[str]) -> list[str]:
    """Oldest first."""
    return sorted(releases, key=version_key)


def newest(releases: Iterable[str]) -> str | None:
    ordered = sort_releases(releases)
    return ordered[-1] if ordered else None

"""What a LUKS header says, from ``cryptsetup luksDump --dump-json-metadata``.

Nothing here opens a device: ``inspect`` decides from what cryptsetup answers
(``run`` is the real subprocess in ``volumes.py``, a fake in tests), and the
JSON is parsed into typed data with every field checked.

``cryptsetup luksDump --dump-json-metadata DEV`` prints a LUKS2 header's
metadata and exits 0; for LUKS1 (which has no tokens), a device that is not
LUKS, or one it cannot open, it exits non-zero.  ``cryptsetup isLuks`` then
tells them apart: 0 for LUKS (``--type luks1``: for LUKS1), 1 for not LUKS,
4 for a device it cannot open (cryptsetup(8), RETURN CODES).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from liveupd.backends.base import LuksKind
from liveupd.programs import Completed
from liveupd.quoting import clip, quote

TPM2_TOKEN = "systemd-tpm2"  # noqa: S105 (a token type, not a secret): the token systemd-cryptenroll --tpm2-device writes
CRYPTSETUP = "cryptsetup"
# --disable-locks: nothing is written, not even a lock file in /run/cryptsetup
# (read-only in liveupd's sandbox); a dump needs no lock.
DUMP = (CRYPTSETUP, "--disable-locks", "luksDump", "--dump-json-metadata")
IS_LUKS1 = (CRYPTSETUP, "--disable-locks", "isLuks", "--type", "luks1")
IS_LUKS = (CRYPTSETUP, "--disable-locks", "isLuks")
MAX_TOKEN_TYPE = 64


Run = Callable[[list[str]], Awaitable[Completed]]


@dataclass(frozen=True)
class Header:
    kind: LuksKind
    tokens: tuple[str, ...] = ()
    problem: str = ""


def token_types(text: str) -> tuple[str, ...]:
    """The ``type`` of every token of a LUKS2 header's JSON metadata, in token-id order.

    ValueError naming the field that is not as LUKS2 defines it.
    """
    try:
        data: Any = json.loads(text)
    except ValueError as e:
        raise ValueError(f"the metadata is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError("the metadata is not a JSON object")
    tokens = data.get("tokens")
    if not isinstance(tokens, dict):
        raise ValueError("'tokens': expected an object")
    found: list[tuple[int, str]] = []
    for key, token in tokens.items():
        if not (isinstance(key, str) and key.isdigit() and len(key) <= 9):
            raise ValueError(f"'tokens': {quote(key)} is not a token number")
        if not isinstance(token, dict):
            raise ValueError(f"'tokens.{key}': expected an object")
        kind = token.get("type")
        if not isinstance(kind, str) or not kind or len(kind) > MAX_TOKEN_TYPE:
            raise ValueError(f"'tokens.{key}.type': expected a name of 1 to {MAX_TOKEN_TYPE} chars")
        found.append((int(key), kind))
    return tuple(kind for _, kind in sorted(found))


def _why(result: Completed) -> str:
    """cryptsetup's own last line (or how the run ended), short."""
    if result.problem:
        return result.problem
    lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
    said = lines[-1] if lines else "no message"
    return f"cryptsetup exited {result.returncode}: {clip(said, 160)}"


async def inspect(device: str, run: Run) -> Header:
    """The LUKS header of ``device``: its version and, for LUKS2, its tokens."""
    dump = await run([*DUMP, device])
    if dump.problem or dump.returncode is None:  # timed out, too much output, cannot run
        return Header(LuksKind.UNREADABLE, problem=_why(dump))
    if dump.returncode == 0:
        try:
            return Header(LuksKind.LUKS2, token_types(dump.stdout))
        except ValueError as e:
            return Header(LuksKind.UNREADABLE, problem=f"unexpected luksDump output: {e}")
    luks1 = await run([*IS_LUKS1, device])
    if luks1.returncode == 0:
        return Header(LuksKind.LUKS1)
    luks = await run([*IS_LUKS, device])
    if luks.returncode == 1:
        return Header(LuksKind.NOT_LUKS)
    # LUKS but no dump (a damaged LUKS2 header), or a device cryptsetup cannot open.
    return Header(LuksKind.UNREADABLE, problem=_why(dump))

"""Quote what a caller or a file supplied, for a reply or a log line: escaped, and short.

Nothing supplied from outside is echoed at full size: :func:`quote` keeps the
first :data:`QUOTE_LIMIT` characters, escapes everything that is not
printable ASCII (``\\n``, ``\\x1b``, ``\\u202e``...) and says how long the
whole was, so a 10 MB argument costs a reply and a log line about 250 bytes.
"""

from __future__ import annotations

QUOTE_LIMIT = 200


def _escape(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``'text'``, escaped; past ``limit`` characters ``'text'... (N characters)``."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return f"'{_escape(text)}'"
    return f"'{_escape(text[:limit])}'... ({len(text)} characters)"


def clip(value: object, limit: int = QUOTE_LIMIT) -> str:
    """Like :func:`quote` without the quotes, for a log field (logfmt quotes it itself)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return _escape(text)
    return f"{_escape(text[:limit])}... ({len(text)} characters)"

"""The options systemctl, busctl and fwupdmgr users type without thinking.

They are accepted before the verb and after it (``liveupctl --json status``
and ``liveupctl status -j`` are the same), as the bus options are:

* ``-j``/``--json``: print the data as JSON (reading verbs: status, show,
  kernels, history, hooks); its shape is documented in docs/json.md;
* ``-q``/``--quiet``: print only errors, for verbs that change something
  (stage, exec, cancel, reboot); as in systemctl, a verb whose output is its
  result (status, show, kernels, history, hooks) still prints it;
* ``--no-legend``: tables without their header and footnotes;
* ``--no-pager``: never page (long output on a terminal is paged, like
  systemctl's: see ``output.page``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

JSON_VERBS = frozenset({"status", "show", "kernels", "history", "hooks"})


def add_output_options(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options on the main parser (``suppress=False``: with defaults) or on a verb's
    parser (``suppress=True``: no default, so the verb never undoes what came first)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    p.add_argument("-j", "--json", action="store_true", default=default(False), help="print JSON")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="print only errors (changing verbs; reading verbs print their result)",
    )
    p.add_argument(
        "--no-legend",
        dest="legend",
        action="store_false",
        default=default(True),
        help="print tables without header and footnotes",
    )
    p.add_argument(
        "--no-pager",
        dest="pager",
        action="store_false",
        default=default(True),
        help="never pipe the output into a pager",
    )


@dataclass(frozen=True)
class Conventions:
    json: bool = False
    quiet: bool = False
    legend: bool = True
    pager: bool = True

    @classmethod
    def of(cls, args: argparse.Namespace) -> Conventions:
        return cls(
            json=bool(getattr(args, "json", False)),
            quiet=bool(getattr(args, "quiet", False)),
            legend=bool(getattr(args, "legend", True)),
            pager=bool(getattr(args, "pager", True)),
        )

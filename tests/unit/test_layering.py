"""The engine knows no built-in step; the undo table is explicit and complete."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from liveupd.assembly.undo_table import UNDO
from liveupd.transition.rollback import UndoTable
from liveupd.transition.steps import undo_hook
from liveupd.transition.undo import UNDO_TYPES, HookUndo

ROOT = Path(__file__).resolve().parents[2]
ABOVE_THE_ENGINE = (
    "liveupd.kernel",
    "liveupd.devices",
    "liveupd.storage",
    "liveupd.sessions",
    "liveupd.preserve",
    "liveupd.assembly",
    "liveupd.verify",
    "liveupd.recovery",
    "liveupd.manager",
    "liveupd.service",
    "liveupd.daemon",
)


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    "module", sorted(p.name for p in (ROOT / "liveupd" / "transition").glob("*.py"))
)
def test_the_engine_imports_nothing_above_it(module: str) -> None:
    names = imports(ROOT / "liveupd" / "transition" / module)
    assert not {n for n in names if n.startswith(ABOVE_THE_ENGINE)}


def test_the_undo_table_covers_every_record_type() -> None:
    assert len(UNDO_TYPES) == 8
    assert UNDO._handlers.keys() == set(UNDO_TYPES)
    with pytest.raises(ValueError, match="no handler for RebindUndo, ThawUndo"):
        UndoTable({HookUndo: undo_hook})

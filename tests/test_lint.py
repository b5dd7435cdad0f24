"""The linters and the type checker, as tests: a style or typing error fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCES = ["liveupd", "tests", "bench", "tryout"]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["ruff", "check", *SOURCES],
        ["ruff", "format", "--check", *SOURCES],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_linters_pass(argv: list[str]) -> None:
    tool = BIN / argv[0]
    if not tool.exists():
        pytest.skip(f"{argv[0]} is not installed in this environment ({BIN})")
    out = run(str(tool), *argv[1:])
    assert out.returncode == 0, out.stdout + out.stderr

"""make test's VM wrapper: a module whose guest QEMU's defect killed runs again, whole.

A stand-in for pytest (a small program) plays the first and second runs: it
writes the JUnit report and the defect log the real harness would, and logs
the arguments it was called with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.vm import rerun_defects

FAKE = """
import json, os, sys
calls = {calls!r}
plan = json.load(open({plan!r}))
n = len(open(calls).read().splitlines()) if os.path.exists(calls) else 0
open(calls, "a").write(json.dumps(sys.argv[1:]) + "\\n")
step = plan[min(n, len(plan) - 1)]
for m in step["defects"]:
    open(os.environ["LIVEUPD_VM_DEFECT_LOG"], "a").write(m + "\\n")
junit = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--junitxml=")]
if junit:
    cases = "".join(
        f'<testcase classname="{{c}}" name="t"><failure message="x"/></testcase>'
        for c in step["failed"]
    )
    open(junit[0], "w").write(f"<testsuites><testsuite>{{cases}}</testsuite></testsuites>")
sys.exit(step["rc"])
"""


def run(tmp_path: Path, plan: list[dict[str, object]]) -> tuple[int, list[list[str]]]:
    calls, plan_file = tmp_path / "calls", tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    program = tmp_path / "fake_pytest.py"
    program.write_text(FAKE.format(calls=str(calls), plan=str(plan_file)))
    rc = rerun_defects.run([sys.executable, str(program), "-m", "vm"])
    lines = calls.read_text().splitlines() if calls.exists() else []
    return rc, [json.loads(line) for line in lines]


def step(rc: int, failed: tuple[str, ...] = (), defects: tuple[str, ...] = ()) -> dict[str, object]:
    return {"rc": rc, "failed": list(failed), "defects": list(defects)}


A, B = "tests/vm/test_a.py", "tests/vm/test_b.py"


def test_a_passing_suite_runs_once(tmp_path: Path) -> None:
    rc, calls = run(tmp_path, [step(0)])
    assert rc == 0 and len(calls) == 1


def test_the_module_the_defect_killed_runs_again_whole_and_decides(tmp_path: Path) -> None:
    first = step(1, failed=("tests.vm.test_a", "tests.vm.test_a"), defects=(A,))
    rc, calls = run(tmp_path, [first, step(0)])
    assert rc == 0
    assert len(calls) == 2 and calls[1] == ["-m", "vm", A]
    again = tmp_path / "again"
    again.mkdir()
    rc, calls = run(again, [first, step(1)])  # the second run fails: the suite fails
    assert rc == 1 and len(calls) == 2


def test_a_failure_elsewhere_fails_at_once(tmp_path: Path) -> None:
    first = step(1, failed=("tests.vm.test_a", "tests.vm.test_b"), defects=(A,))
    rc, calls = run(tmp_path, [first, step(0)])
    assert rc == 1 and len(calls) == 1


def test_a_failure_without_the_defect_is_not_rerun(tmp_path: Path) -> None:
    rc, calls = run(tmp_path, [step(1, failed=("tests.vm.test_b",))])
    assert rc == 1 and len(calls) == 1


def test_the_harness_names_the_running_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "defects"
    monkeypatch.setenv(rerun_defects.DEFECT_LOG_ENV, str(log))
    monkeypatch.setenv("PYTEST_CURRENT_TEST", f"{B}::test_x (call)")
    rerun_defects.note_defect(rerun_defects.current_module())
    assert log.read_text() == B + "\n"

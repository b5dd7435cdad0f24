"""Run the VM suite; rerun, once, every module whose guest hit QEMU's TCG defect.

``python -m tests.vm.rerun_defects PYTEST_ARGV...`` (``make test``).

The defect (an int3 oops in a guest kernel's early boot, about one kexec in
30-40 under MTTCG; tests/vm/serial.py) kills the guest.  pytest-rerunfailures
reruns the failed test, which is enough for a test with a guest of its own;
but most modules share one guest between chained scenarios, so the rerun
(and every later test of the module) meets the dead guest, and failures that
are not the product's fail the suite.  The harness appends each module whose
guest hit the defect to the file named by ``LIVEUPD_VM_DEFECT_LOG``
(``GuestVM._raise_on_emulator_defect``); when every module that failed is
one of them, those modules run again, whole, on fresh guests, and their
second run decides.  A failure in any other module fails the suite at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

DEFECT_LOG_ENV = "LIVEUPD_VM_DEFECT_LOG"


def note_defect(module: str) -> None:
    """Record, for the wrapper, that `module`'s guest hit the defect (no-op outside it)."""
    log = os.environ.get(DEFECT_LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(module + "\n")


def current_module() -> str:
    """The module of the test pytest is running ("tests/vm/test_x.py"), or ""."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").split("::", 1)[0]


def failed_modules(junit: Path) -> set[str]:
    """The module files with a failed or erroring test in a JUnit XML report."""
    out = set()
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            classname = case.get("classname", "")
            # "tests.vm.test_x" (a module-level test function) -> "tests/vm/test_x.py"
            parts = classname.split(".")
            while parts and not parts[-1].startswith("test_"):
                parts.pop()
            out.add("/".join(parts) + ".py" if parts else classname)
    return out


def run(argv: Sequence[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="liveupd-vm-suite-") as tmp:
        log, junit = Path(tmp) / "defects", Path(tmp) / "junit.xml"
        env = dict(os.environ, **{DEFECT_LOG_ENV: str(log)})
        rc = subprocess.run([*argv, f"--junitxml={junit}"], env=env, check=False).returncode
        if rc == 0:
            return 0
        hit = set(log.read_text().split()) if log.exists() else set()
        failed = failed_modules(junit) if junit.exists() else {"(no report)"}
        if not hit or not failed or not failed <= hit:
            return rc
        modules = sorted(hit & failed)
        print(
            f"\n[vm] QEMU's TCG defect killed the guest of {', '.join(modules)}; "
            "running those modules again on fresh guests",
            flush=True,
        )
        return subprocess.run([*argv, *modules], check=False).returncode


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

"""What liveupd needs at run time: every module imports without pydantic (issue 19).

The records, the configuration and the manifests are dataclasses checked by
liveupd.schema; pydantic cost ~200 ms and several MiB at every start of the
daemon and of ``liveupd --verify``.  The host's test virtualenv may still have
pydantic installed (another package can pull it in), so this imports every
module in a fresh interpreter and looks at what got loaded, rather than
trusting an ImportError to show up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import liveupd

PROGRAM = """
import importlib, json, pkgutil, sys
import liveupd
names = [m.name for m in pkgutil.walk_packages(liveupd.__path__, "liveupd.")]
for name in names:
    if name not in BUILD_ONLY:
        importlib.import_module(name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""

# Run by hand (make ffi) to write liveupd/_libc.py, never at run time.
BUILD_ONLY = ("liveupd._libc_build",)


def test_no_module_of_liveupd_imports_pydantic() -> None:
    root = Path(liveupd.__file__).parent.parent
    out = subprocess.run(
        [sys.executable, "-c", f"BUILD_ONLY = {BUILD_ONLY!r}\n{PROGRAM}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=root,
    )
    result = json.loads(out.stdout)
    assert len(result["imported"]) > 100  # it did walk the package
    assert "liveupd.service.server" in result["modules"]
    assert [m for m in result["modules"] if m.split(".")[0] in ("pydantic", "pydantic_core")] == []

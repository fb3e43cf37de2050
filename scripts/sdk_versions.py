"""Print the lowest and the newest kamiwaza-sdk releases that pyproject.toml allows.

CI runs the SDK-flow tests against both (scripts/test_sdk_range.sh); the versions
come from the package index, filtered by the project's own specifier.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version


def allowed_versions() -> list[Version]:
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    req = next(Requirement(d) for d in project["project"]["dependencies"] if d.startswith("kamiwaza-sdk"))
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "kamiwaza-sdk"], capture_output=True,
                         text=True, check=True).stdout
    match = re.search(r"Available versions: (.+)", out)
    if not match:
        raise SystemExit(f"could not read kamiwaza-sdk versions from pip: {out[:200]!r}")
    versions = [Version(v.strip()) for v in match.group(1).split(",")]
    return sorted(v for v in versions if req.specifier.contains(v) and not v.is_prerelease)


if __name__ == "__main__":
    found = allowed_versions()
    if not found:
        raise SystemExit("no kamiwaza-sdk release matches pyproject.toml")
    print(found[0], found[-1])

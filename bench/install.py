"""Install benchmark: `make install` from a clean clone, this tree against the last llama-cpp-python one.

Each side is a fresh `git clone` of this repository at its commit (`HEAD` and
`BASELINE_REF`, the last commit whose engine was llama-cpp-python, built by pip), installed
with `make install` with nothing cached: `PIP_NO_CACHE_DIR=1` (pip downloads and builds
every package again) and an empty `KAMIWAZA_BUILD_CACHE` (llama-server is fetched and built
again). The two run one after the other, never together (2 cores), baseline first. Target
(issue 11): within 3 minutes of the baseline.

A cached install (the engine already in `~/.cache/kamiwaza`) is a copy; it is timed too, for
context.

Run: `python -m bench.install` (about 15 minutes here; not part of `make bench`), then
`python -m bench.report`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .common import REPO_ROOT, figure, log, write_result

BASELINE_REF = "76459ee"  # the last commit with the llama-cpp-python engine
TARGET_EXTRA_S = 180.0


def _timed_install(ref: str, work: Path, build_cache: Path) -> float:
    """Seconds `make install` takes in a fresh clone of `ref` with cold pip and build caches."""
    clone = work / f"clone-{ref}"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", ref], check=True)
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "KAMIWAZA_BUILD_CACHE": str(build_cache)}
    log(f"make install at {ref} (cold caches)...")
    started = time.monotonic()
    done = subprocess.run(["make", "install"], cwd=clone, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"make install at {ref} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    log(f"  {seconds:.0f} s")
    return seconds


def main() -> None:
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-install-") as tmp:
        work = Path(tmp)
        baseline = _timed_install(BASELINE_REF, work, work / "cache-baseline")
        cold = _timed_install(head, work, work / "cache-head")
        # The same tree again, its engine now in the build cache: what a second install costs.
        shutil.rmtree(work / f"clone-{head}")
        warm = _timed_install(head, work, work / "cache-head")
    figures = [
        figure(
            "make install, clean clone, nothing cached",
            cold,
            baseline,
            "s",
            f"<= baseline + {TARGET_EXTRA_S:.0f} s",
            cold <= baseline + TARGET_EXTRA_S,
            note=f"{head}: pip packages + llama-server built from pinned sources, side by side; "
            f"baseline {BASELINE_REF}: pip packages + llama-cpp-python built by pip",
            digits=1,
        ),
        figure(
            "make install, clean clone, engine in the build cache",
            warm,
            baseline,
            "s",
            "— (context)",
            True,
            note="pip still uncached; the engine is a copy from ~/.cache/kamiwaza",
            digits=1,
        ),
    ]
    figures[1]["met"] = None
    write_result(
        "install",
        figures,
        runs=1,
        description=__doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
    )


if __name__ == "__main__":
    main()

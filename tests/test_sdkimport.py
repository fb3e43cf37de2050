"""openai is not imported by the commands that do not stream, and the chat path still works.

Each check runs in a fresh interpreter (what is imported is the point). The first one runs the
real ``kamiwaza list`` and ``ps`` against a stand-in API that answers every GET with ``[]``, then
streams one chat reply through the SDK's own OpenAI client and ``ChatSession`` from a stand-in
OpenAI-compatible endpoint. scripts/test_sdk_range.sh runs this file against the lowest and newest
kamiwaza-sdk that pyproject.toml allows: a release that imports openai differently must either be
deferred the same way or fail here. The others drive sdkimport.py with small fake SDK packages,
one per way a package can use openai at import time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parent.parent / "src")
WORDS = ["Hello", ",", " world", "!"]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._json([])

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.endswith("/chat/completions"):
            self._json([])
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        for word in WORDS:
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"prompt_tokens": 7, "completion_tokens": len(WORDS), "total_tokens": 7 + len(WORDS)}
        self.wfile.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_python(code: str, tmp_path: Path, extra_path: str | None = None) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON line, which is returned."""
    path = SRC if extra_path is None else f"{extra_path}:{SRC}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "KAMIWAZA_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_list_and_ps_do_not_import_openai_and_chat_still_streams(api: str, tmp_path: Path) -> None:
    out = run_python(
        f"""
        import json, sys
        from kamiwaza_cli import sdkimport
        from kamiwaza_cli.cli.main import main

        def command(*args):
            try:
                main(["--url", "{api}/api", *args])
            except SystemExit as exc:
                return exc.code
        codes = [command("list"), command("ps")]
        after_list = {{
            "codes": codes,
            "sdk": "kamiwaza_sdk" in sys.modules,
            "openai": sorted(m for m in sys.modules if m == "openai" or m.startswith("openai.")),
            "deferred": sdkimport.openai_deferred(),
            "fell_back": sdkimport.fell_back(),
        }}

        # The streaming path: the SDK builds the OpenAI client, the chat session streams from it.
        import kamiwaza_sdk
        from kamiwaza_cli.chat.session import ChatSession
        client = kamiwaza_sdk.KamiwazaClient("{api}/api", api_key="k")
        oai = client.openai.get_client(endpoint="{api}/v1")
        import openai
        tokens = []
        reply = ChatSession(model="m", client=oai).reply("hi", tokens.append)
        from kamiwaza_sdk.services import openai as service
        print(json.dumps({{
            **after_list,
            "client_type": type(oai) is openai.OpenAI,
            "rebound": service.OpenAI is openai.OpenAI,
            "tokens": tokens,
            "text": reply.text,
            "usage": [reply.prompt_tokens, reply.reply_tokens],
        }}))
        """,
        tmp_path,
    )
    assert out["codes"] == [0, 0]
    assert out["sdk"] is True, "list did not import the SDK: the check below would prove nothing"
    assert out["openai"] == [], f"list/ps imported {len(out['openai'])} openai modules"
    assert out["deferred"] is True and out["fell_back"] is False
    assert out["client_type"] is True and out["rebound"] is True
    assert out["tokens"] == WORDS and out["text"] == "".join(WORDS)
    assert out["usage"] == [7, len(WORDS)]


FAKE_SDK_INIT = "from .svc import *  # noqa\nfrom . import svc\n"


def fake_sdk(tmp_path: Path, svc: str) -> str:
    package = tmp_path / "pkgs" / "fakesdk"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_SDK_INIT)
    (package / "svc.py").write_text(textwrap.dedent(svc))
    return str(package.parent)


PRELUDE = """
import json, sys
from kamiwaza_cli import sdkimport
sdkimport.SDK = "fakesdk"
sdkimport.install()
import fakesdk
state = {"openai": "openai" in sys.modules, "deferred": sdkimport.openai_deferred(), "fell_back": sdkimport.fell_back()}
"""


def test_names_used_in_functions_are_deferred_and_rebound(tmp_path: Path) -> None:
    path = fake_sdk(
        tmp_path,
        """
        from openai import APIError, OpenAI

        def make() -> OpenAI:
            return OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")

        def guarded():
            try:
                raise ValueError("not openai's")
            except APIError:
                return "caught"
        """,
    )
    out = run_python(
        PRELUDE
        + """
try:
    fakesdk.guarded()
    guarded = "returned"
except ValueError:
    guarded = "ValueError"
import openai  # a plain import by anyone rebinds the SDK's names
rebound = fakesdk.svc.OpenAI is openai.OpenAI and fakesdk.svc.APIError is openai.APIError
client = fakesdk.make()
print(json.dumps({**state, "guarded": guarded, "rebound": rebound, "client": type(client) is openai.OpenAI,
                  "annotation": fakesdk.svc.make.__annotations__["return"] is openai.OpenAI}))
""",
        tmp_path,
        path,
    )
    assert out == {
        "openai": False,
        "deferred": True,
        "fell_back": False,
        "guarded": "ValueError",  # an except clause met before openai is imported matches nothing
        "rebound": True,
        "client": True,
        "annotation": True,
    }


def test_a_name_kept_where_it_cannot_be_rebound_falls_back_to_a_plain_import(tmp_path: Path) -> None:
    path = fake_sdk(
        tmp_path,
        """
        import openai

        RETRY_ON = (openai.APIConnectionError, ValueError)
        """,
    )
    out = run_python(
        PRELUDE
        + """
import openai
print(json.dumps({**state, "real": fakesdk.svc.RETRY_ON[0] is openai.APIConnectionError,
                  "module": fakesdk.svc.openai is openai}))
""",
        tmp_path,
        path,
    )
    assert out == {"openai": True, "deferred": False, "fell_back": True, "real": True, "module": True}


def test_a_name_used_at_import_time_imports_openai_then(tmp_path: Path) -> None:
    path = fake_sdk(
        tmp_path,
        """
        from openai import OpenAI

        class Mine(OpenAI):
            pass
        """,
    )
    out = run_python(
        PRELUDE
        + """
import openai
print(json.dumps({**state, "subclass": issubclass(fakesdk.Mine, openai.OpenAI) and type(fakesdk.Mine) is type,
                  "rebound": fakesdk.svc.OpenAI is openai.OpenAI}))
""",
        tmp_path,
        path,
    )
    assert out == {"openai": True, "deferred": False, "fell_back": False, "subclass": True, "rebound": True}


def test_a_constant_is_never_a_stand_in(tmp_path: Path) -> None:
    """A value may be handed to code that cannot be intercepted (a timeout to urllib3): taking one
    imports its module at once, so the value is real."""
    path = fake_sdk(
        tmp_path,
        """
        from openai import DEFAULT_MAX_RETRIES

        RETRIES = DEFAULT_MAX_RETRIES
        """,
    )
    out = run_python(
        PRELUDE
        + """
import openai
print(json.dumps({**state, "real": fakesdk.svc.RETRIES == openai.DEFAULT_MAX_RETRIES and type(fakesdk.RETRIES) is int}))
""",
        tmp_path,
        path,
    )
    assert out == {"openai": True, "deferred": False, "fell_back": False, "real": True}

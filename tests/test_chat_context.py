"""Conversations that hold: base models as text completion, the context window, system prompts that
reach the model, interrupted replies and engine errors, on a real terminal and a real engine.

One module server; the small PyPI model (a base model: no chat template) is deployed with a
512-token context per slot (the smallest the server accepts), so a chat passes its window in a few
turns. A second server runs a stand-in engine whose generations fail inside the stream. The chats
run on a pseudo-terminal that answers prompt_toolkit's cursor position requests as a terminal does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from conftest import LocalServer, make_server

BASE = "gemma-3-270m-q4_k_m"
CONTEXT = 512
CPR_REQUEST = "\x1b[6n"
NEW_INPUT = "\x1b[?2004h"
INPUT_DONE = "\x1b[?2004l"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ROOT = Path(__file__).resolve().parent.parent


def set_context(server: LocalServer, model: str, n_ctx: int) -> None:
    """The model's default config gets ``n_ctx`` (the engine's context per slot) for its next deploy."""
    client = server.sdk()
    [m] = [m for m in client.models.list_models() if m.name == model]
    [config] = [c for c in client._request("GET", "/model_configs/", params={"model_id": str(m.id)}) if c["default"]]
    body = {k: config.get(k) for k in ("m_id", "m_file_id", "name", "default", "description", "system_config")}
    body["config"] = {**(config.get("config") or {}), "n_ctx": n_ctx}
    client._request("PUT", f"/model_configs/{config['id']}", json=body)


@pytest.fixture(scope="module")
def base(server: LocalServer, gemma_path: Path) -> str:
    assert server.cli("pull", str(gemma_path)).exit_code == 0
    set_context(server, BASE, CONTEXT)
    r = server.cli("serve", BASE, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["context_per_slot"] == CONTEXT
    return BASE


class Terminal:
    """``kamiwaza run`` on a pseudo-terminal that answers cursor position requests (ESC [6n) the
    way a terminal does, so prompt_toolkit runs as it does for a user."""

    def __init__(self, server: LocalServer, model: str, *args: str) -> None:
        env = {**server.env, "KAMIWAZA_BASE_URL": server.url, "TERM": "xterm", "KAMIWAZA_NOHISTORY": "1"}
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "kamiwaza_cli", "run", model, *args],
            env=env,
            encoding="utf-8",
            timeout=90,
            dimensions=(40, 200),
        )
        self.banner = self.prompt()

    def expect(self, mark: str) -> str:
        """Wait for ``mark``; return what came before it, answering cursor requests meanwhile."""
        seen = []
        while True:
            i = self.child.expect_exact([CPR_REQUEST, mark])
            seen.append(str(self.child.before))
            if i == 1:
                return "".join(seen)
            self.child.send("\x1b[20;1R")  # row 20, column 1

    def prompt(self) -> str:
        """Wait for a fresh prompt; return what was printed since the last one, escape codes removed."""
        text = self.expect(NEW_INPUT)
        self.expect(">>>")
        return ANSI.sub("", text)

    def ask(self, text: str) -> str:
        self.child.sendline(text)
        self.expect(INPUT_DONE)
        return self.prompt()

    def save(self, path: Path) -> dict[str, Any]:
        self.ask(f"/save {path}")
        return dict(json.loads(path.read_text()))

    def bye(self) -> int:
        self.child.sendline("/bye")
        self.expect("✨ Chat session ended")
        self.child.expect(pexpect.EOF)
        self.child.close()
        return int(self.child.exitstatus)

    def close(self) -> None:
        self.child.close(force=True)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for t in opened:
        t.close()


def open_chat(terminals: list[Terminal], server: LocalServer, model: str, *args: str) -> Terminal:
    t = Terminal(server, model, *args)
    terminals.append(t)
    return t


def prompt_tokens(line: str) -> int:
    match = re.search(r"prompt tokens: (\d+)", line)
    assert match, line
    return int(match.group(1))


def test_the_gateway_passes_two_engine_routes_and_only_as_post(server: LocalServer, base: str) -> None:
    import httpx

    [dep] = [d for d in json.loads(server.cli("ps", "--json").stdout) if d["model"] == base]
    endpoint = dep["endpoint"]
    with httpx.Client(timeout=30) as http:
        tokens = http.post(f"{endpoint}/tokenize", json={"content": "The sea is wide", "add_special": False})
        assert tokens.status_code == 200 and len(tokens.json()["tokens"]) >= 4
        rendered = http.post(f"{endpoint}/apply-template", json={"messages": [{"role": "user", "content": "hi"}]})
        assert rendered.status_code == 200 and "hi" in rendered.json()["prompt"]
        for path in ("tokenize", "apply-template", "props"):
            assert http.get(f"{endpoint}/{path}").status_code == 404, path
        assert http.post(f"{endpoint}/props", json={}).status_code == 404  # POST /props would change the engine


# A base model


def test_base_model_chat_is_a_transcript_whose_turns_end(
    server: LocalServer, base: str, terminals: list[Terminal], tmp_path: Path
) -> None:
    chat = open_chat(terminals, server, base, "--max-tokens", "40", "--temperature", "0")
    assert "base model" in chat.banner and "completion mode" in chat.banner
    for question in ("What is the capital of France?", "And of Italy?", "Name a colour of the sky."):
        answer = chat.ask(question).strip()
        # Each turn ends at the next label: the model does not go on speaking for the user.
        assert answer and "User:" not in answer and "Assistant:" not in answer
    saved = chat.save(tmp_path / "base.json")
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"] * 3
    assert chat.bye() == 0


def test_a_chat_past_the_context_window_keeps_answering_with_one_notice(
    server: LocalServer, base: str, terminals: list[Terminal], tmp_path: Path
) -> None:
    chat = open_chat(terminals, server, base, "--max-tokens", "8", "--temperature", "0", "--verbose")
    said = []
    prompts = []
    for i in range(6):  # each turn is ~130 tokens: the 512-token window is passed by the 4th
        message = f"Note {i}: " + "the sea is wide and the sky is blue and the wind is cold today. " * 8
        shown = chat.ask(message)
        said.append(shown)
        assert "refused" not in shown and "exceeds" not in shown
        prompts.append(prompt_tokens(shown))
    notices = sum(s.count("the oldest turns are left out") for s in said)
    assert notices == 1
    assert max(prompts) <= CONTEXT and prompts[-1] < sum(prompts[:2]) * 4
    saved = chat.save(tmp_path / "long.json")
    assert len(saved["messages"]) == 12  # what the model no longer sees is still in the transcript
    assert all(m["content"].strip() for m in saved["messages"] if m["role"] == "assistant")


def test_ctrl_c_then_a_new_turn(server: LocalServer, base: str, terminals: list[Terminal], tmp_path: Path) -> None:
    chat = open_chat(terminals, server, base, "--max-tokens", "400", "--temperature", "0")
    chat.child.sendline("Write a very long story about a dragon who loves the sea.")
    chat.expect(INPUT_DONE)
    chat.child.expect(r"\w+\W+\w+\W+\w+")  # the reply has started streaming
    chat.child.sendintr()
    chat.expect("Reply stopped")
    chat.prompt()
    chat.ask("/set max_tokens 8")
    assert chat.ask("What is the capital of France?").strip()
    saved = chat.save(tmp_path / "i.json")
    assert saved["messages"][1]["content"].endswith(" [interrupted]") and saved["messages"][1]["interrupted"]
    assert len(saved["messages"]) == 4


def test_system_prompt_reaches_a_base_model(server: LocalServer, base: str, terminals: list[Terminal]) -> None:
    system = "You answer every question about geography with the name of a city and nothing else."
    counts = []
    for args in (("--system", ""), ("--system", system)):
        chat = open_chat(terminals, server, base, "--max-tokens", "4", "--verbose", *args)
        counts.append(prompt_tokens(chat.ask("Where is the Louvre?")))
    assert counts[1] >= counts[0] + 10


# One-shot


def test_one_shot_base_model_sends_the_prompt_as_text(server: LocalServer, base: str) -> None:
    r = server.run("run", base, "--json", "The three primary colours are", "--max-tokens", "8", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)["reply"].lower()
    assert "red" in reply and "blue" in reply
    assert "is a base model (no chat template): running it in completion mode, the prompt as text" in r.stderr


def test_one_shot_that_cannot_fit_exits_2_with_the_counts(server: LocalServer, base: str) -> None:
    words = "the sea is wide and the sky is blue. " * 400
    env = {**server.env, "KAMIWAZA_BASE_URL": server.url}
    proc = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli", "run", base, "Summarize"],
        input=words,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    tokens = [int(n) for n in re.findall(r"(\d+) tokens", error)]
    assert len(tokens) == 2 and tokens[0] > CONTEXT and tokens[1] == CONTEXT
    assert "--ctx" in proc.stderr and "shorten the input" in proc.stderr


def test_make_demo_answers_its_own_question(server: LocalServer, base: str) -> None:
    venv_bin = Path(sys.executable).parent
    env = {
        **server.env,
        "KAMIWAZA_BASE_URL": server.url,
        "KAMIWAZA": str(venv_bin / "kamiwaza"),
        "PYTHON": sys.executable,
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    question = re.search(r'kamiwaza run \S+ "([^"]+)"', proc.stdout)
    assert question and "primary colours" in question.group(1)
    answer = proc.stdout.split(question.group(0), 1)[1].split("$ kamiwaza ps", 1)[0].lower()
    assert answer.strip()
    assert all(colour in answer for colour in ("red", "blue", "yellow")), answer


# An engine that fails inside the stream


@pytest.fixture(scope="module")
def failing(gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server of its own whose engine is tests/failing_engine.py (llama-server's argv and routes)."""
    bindir = tmp_path_factory.mktemp("engine")
    binary = bindir / "llama-server"
    engine = Path(__file__).with_name("failing_engine.py")
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{engine}" "$@"\n')
    binary.chmod(0o755)
    srv = make_server(tmp_path_factory.mktemp("home"), None)
    srv.env["KAMIWAZA_LLAMA_SERVER"] = str(binary)
    srv.start()
    assert srv.cli("pull", str(gemma_path)).exit_code == 0
    yield srv
    srv.stop()
    shutil.rmtree(srv.home, ignore_errors=True)


def test_an_engine_error_inside_the_stream_exits_1_with_its_message(
    failing: LocalServer, terminals: list[Terminal]
) -> None:
    r = failing.run("run", BASE, "Once upon a time", "--max-tokens", "8")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "KV cache is full" in r.stderr and "Traceback" not in r.stderr
    r = failing.run("run", BASE, "Once upon a time", "--json")
    assert r.returncode == 1 and r.stdout == ""  # no JSON with an empty reply
    # In the chat it is one notice, and the chat goes on.
    chat = open_chat(terminals, failing, BASE)
    shown = chat.ask("Once upon a time")
    assert "⚠ the model failed while answering" in shown and "KV cache is full" in shown
    saved = chat.save(failing.home / "failed.json")
    assert saved["messages"] == []  # a failed turn does not join the conversation
    assert chat.bye() == 0

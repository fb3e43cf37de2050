"""`kamiwaza run`: the interactive chat driven for real with pexpect, and one-shot generation.

One real llama.cpp deployment of the small PyPI model serves every test here; replies
are kept short with max_tokens. The line editing (exit words, multi-line and pasted messages)
is tested in-process in test_repl.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from conftest import GEMMA_REPO, LocalServer, wait_for

MODEL = "gemma-3-270m-q4_k_m"
# prompt_toolkit draws the prompt's trailing space as a cursor move, so match the marks alone. It also
# redraws the prompt line when a line is accepted; a *new* prompt starts by enabling bracketed paste.
PROMPT = ">>>"
NEW_INPUT = "\x1b[?2004h"
INPUT_DONE = "\x1b[?2004l"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def deployed(server: LocalServer, gemma_path: Path) -> str:
    assert server.cli("pull", str(gemma_path)).exit_code == 0
    r = server.cli("serve", MODEL, "--json")
    assert r.exit_code == 0, r.stderr
    return str(json.loads(r.stdout)["id"])


def spawn(server: LocalServer, *args: str, env: dict[str, str] | None = None) -> pexpect.spawn:
    """``kamiwaza run MODEL *args`` on a pseudo-terminal, at its first prompt."""
    full = {**server.env, "KAMIWAZA_BASE_URL": server.url, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", **(env or {})}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "kamiwaza_cli", "run", MODEL, *args],
        env=full,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 200),
    )
    wait_prompt(child)
    return child


def wait_prompt(child: pexpect.spawn, mark: str = PROMPT) -> str:
    """Wait for a fresh prompt; return what was printed since the last one, escape codes removed."""
    child.expect_exact(NEW_INPUT)
    text = str(child.before)
    child.expect_exact(mark)
    return ANSI.sub("", text)


@pytest.fixture
def chat(server: LocalServer, deployed: str) -> Iterator[pexpect.spawn]:
    child = spawn(server, "--max-tokens", "12", "--temperature", "0")
    yield child
    child.close(force=True)


def ask(child: pexpect.spawn, text: str) -> str:
    child.sendline(text)
    child.expect_exact(INPUT_DONE)
    return wait_prompt(child)


def transcript(child: pexpect.spawn, path: Path) -> dict:
    ask(child, f"/save {path}")
    return json.loads(path.read_text())


def test_streamed_reply_and_history_file(server: LocalServer, chat: pexpect.spawn, tmp_path: Path) -> None:
    assert ask(chat, "Tell me about the sea.").strip()
    saved = transcript(chat, tmp_path / "t.json")
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert saved["messages"][1]["content"].strip() and saved["system"] == "You are a helpful AI assistant."
    chat.sendeof()
    chat.expect_exact("✨ Chat session ended")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    assert "Tell me about the sea." in (server.home / "history").read_text()


def test_slash_commands(chat: pexpect.spawn, deployed: str, tmp_path: Path) -> None:
    assert "Available commands" in ask(chat, "/?")
    assert "/set system TEXT" in ask(chat, "/help")
    assert "Set temperature to 0.5" in ask(chat, "/set temperature 0.5")
    assert "not a valid temperature" in ask(chat, "/set temperature hot")
    assert "Set max_tokens to 8" in ask(chat, "/set max_tokens 8")
    params = ask(chat, "/show parameters")
    assert "0.5" in params and "8" in params
    ask(chat, "/set system Answer in one word.")
    assert "Answer in one word." in ask(chat, "/show system")
    assert deployed in ask(chat, "/show info")
    assert "Set verbose mode" in ask(chat, "/set verbose")
    stats_line = ask(chat, "Hello!")
    assert "time to first token:" in stats_line and "prompt tokens:" in stats_line and "tokens/s" in stats_line
    assert "Set quiet mode" in ask(chat, "/set quiet")
    assert "time to first token" not in ask(chat, "Hello again!")
    assert "turns: 2" in ask(chat, "/stats")
    assert "Cleared the conversation" in ask(chat, "/clear")
    saved = transcript(chat, tmp_path / "c.json")
    assert saved["messages"] == [] and saved["system"] == "Answer in one word."
    assert "Unknown command '/x'. Type /? for help" in ask(chat, "/x")
    chat.sendline("/bye")
    chat.expect_exact("✨ Chat session ended")
    chat.expect(pexpect.EOF)


def test_ctrl_c_stops_a_reply_then_chat_goes_on(chat: pexpect.spawn, tmp_path: Path) -> None:
    ask(chat, "/set max_tokens 600")
    chat.sendline("Write a very long story about a dragon.")
    chat.expect_exact(INPUT_DONE)
    chat.expect(r"\w+\W+\w+\W+\w+")  # the reply has started streaming
    chat.sendintr()
    chat.expect_exact("Reply stopped")
    wait_prompt(chat)
    ask(chat, "/set max_tokens 8")
    assert ask(chat, "Thanks.").strip()
    saved = transcript(chat, tmp_path / "i.json")
    assert saved["messages"][1]["content"].endswith("[interrupted]")
    assert len(saved["messages"]) == 4


def test_ctrl_c_at_an_empty_prompt_ends_the_session(server: LocalServer, deployed: str) -> None:
    # Every exit word, Ctrl+D, and Ctrl+C with text typed are in test_repl.py; this is the real
    # terminal's Ctrl+C (a SIGINT from the terminal driver), and /bye is in test_slash_commands.
    child = spawn(server, env={"KAMIWAZA_NOHISTORY": "1"})
    try:
        child.sendintr()
        child.expect_exact("✨ Chat session ended")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        child.close(force=True)


def test_save_then_run_load(server: LocalServer, chat: pexpect.spawn, tmp_path: Path) -> None:
    ask(chat, "My name is Ada.")
    first = tmp_path / "first.json"
    transcript(chat, first)
    resumed = spawn(server, "--load", str(first), "--max-tokens", "8")
    second = transcript(resumed, tmp_path / "second.json")
    assert second["messages"] == json.loads(first.read_text())["messages"]
    ask(resumed, "What is my name?")
    third = transcript(resumed, tmp_path / "third.json")
    assert third["messages"][:2] == second["messages"] and len(third["messages"]) == 4
    resumed.close(force=True)


def test_endpoint_dies_mid_session_and_redeploys(server: LocalServer, deployed: str, tmp_path: Path) -> None:
    client = server.sdk()
    # Greedy decoding: a sampled reply from this small model can be empty, which is not what is tested.
    child = spawn(server, "--max-tokens", "8", "--temperature", "0")
    ask(child, "Hello.")
    [active] = [d for d in client.serving.list_active_deployments() if d.m_name == MODEL]
    pid = client._request("GET", f"/serving/deployment/{active.id}")["pid"]
    os.kill(pid, 9)
    wait_for(lambda: client.serving.get_deployment(active.id).status == "FAILED", timeout=15, what="FAILED")
    child.sendline("Are you there?")
    child.expect_exact("The model endpoint stopped answering")
    child.expect_exact("Redeploy the model and retry? [Y/n]")
    child.sendline("y")
    child.expect_exact("✨ Deployment ready!", timeout=120)
    wait_prompt(child)
    saved = transcript(child, tmp_path / "r.json")
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in saved["messages"] if m["role"] == "user"] == ["Hello.", "Are you there?"]
    assert saved["messages"][-1]["content"].strip()
    child.close(force=True)


# One-shot


def test_one_shot_with_cliRunner(server: LocalServer, deployed: str) -> None:
    r = server.cli("run", MODEL, "The sky is", "--max-tokens", "8", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() and r.stdout.endswith("\n")
    assert "✨ Using existing deployment" in r.stderr
    r = server.cli("run", MODEL, "--json", "--max-tokens", "6", input="Once upon a time")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["model"] == MODEL and data["reply"] and data["reply_tokens"] >= 1
    assert data["prompt_tokens"] > 0 and data["time_to_first_token_s"] > 0


def test_one_shot_in_pipes_has_no_escape_codes(server: LocalServer, deployed: str) -> None:
    env = {**server.env, "KAMIWAZA_BASE_URL": server.url}
    proc = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli", "run", MODEL, "Summarise:", "--max-tokens", "8", "--verbose"],
        input="Cats sleep a lot.\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "\x1b" not in proc.stdout and "\x1b" not in proc.stderr
    assert "time to first token:" in proc.stderr and "time to first token" not in proc.stdout
    empty = subprocess.run(
        [sys.executable, "-m", "kamiwaza_cli", "run", MODEL],
        input="",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert empty.returncode == 2 and "nothing to ask" in empty.stderr


def test_run_pulls_and_deploys_a_model_that_is_not_there(server: LocalServer, deployed: str) -> None:
    name = f"{GEMMA_REPO}:q4_k_m"
    r = server.cli("run", name, "Hi", "--max-tokens", "4")
    assert r.exit_code == 0, r.stderr
    assert "🚀 Downloading gemma-3-270m-it-GGUF:q4_k_m..." in r.stderr and "🚀 Deploying" in r.stderr
    assert r.stdout.strip()
    again = server.cli("run", name, "Hi", "--max-tokens", "4")
    assert "✨ Using existing deployment of gemma-3-270m-it-GGUF" in again.stderr
    assert server.cli("stop", GEMMA_REPO).exit_code == 0
    r = server.cli("run", name, "Hi", "--max-tokens", "4")  # downloaded, not deployed
    assert r.exit_code == 0 and "🚀 Deploying" in r.stderr and "Downloading" not in r.stderr
    server.cli("rm", "--force", GEMMA_REPO)


def test_a_conversation_longer_than_the_context_leaves_out_its_oldest_turns(
    server: LocalServer, deployed: str, tmp_path: Path
) -> None:
    """A conversation loaded from a transcript that no longer fits the context: the chat leaves the
    oldest turns out of the request, says so once, and answers; the transcript keeps them all."""
    long = tmp_path / "long.json"
    history = [
        {"role": "user", "content": "the sea is wide and blue. " * 2000},  # ~14k tokens: past the default 8192
        {"role": "assistant", "content": "Yes."},
    ]
    long.write_text(json.dumps({"version": 1, "model": MODEL, "system": "", "parameters": {}, "messages": history}))
    child = spawn(server, "--load", str(long), "--max-tokens", "4", "--temperature", "0")
    try:
        shown = ask(child, "And the sky?")
        assert "the oldest turns are left out" in shown and "Traceback" not in shown
        assert "refused" not in shown
        assert "the oldest turns are left out" not in ask(child, "Tell me about the sea.")
        saved = transcript(child, tmp_path / "after.json")
        users = [m["content"] for m in saved["messages"] if m["role"] == "user"]
        assert users[1:] == ["And the sky?", "Tell me about the sea."] and len(saved["messages"]) == 6
    finally:
        child.close(force=True)

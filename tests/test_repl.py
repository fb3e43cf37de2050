"""The chat's line editing, in-process: what ends a session, multi-line and pasted messages, which
lines are commands. The real ``Repl`` reads through prompt_toolkit from a pipe that carries what a
terminal sends (keys, bracketed paste), against a stand-in engine; test_chat.py drives the same
chat on a real terminal and a real engine (Ctrl+C, /bye, the slash commands, replies).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from fakeengine import Engine

from kamiwaza_cli.chat.repl import EXIT_WORDS, Repl
from kamiwaza_cli.chat.session import ChatSession

CTRL_C = "\x03"
CTRL_D = "\x04"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"  # a terminal's bracketed paste


@dataclass
class Ran:
    code: int
    sent: list[str]  # the user messages the engine was sent, in order
    out: str
    err: str


def chat(keys: str) -> Ran:
    """Run a chat session on ``keys`` as typed (Enter is a newline), then Ctrl+D if it is still open."""
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    engine = Engine(n_ctx=10_000)
    out, err = io.StringIO(), io.StringIO()
    repl = Repl(ChatSession(model="m", client=engine, context=engine.n_ctx), history_file=None, out=out, err=err)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_text(keys.replace("\n", "\r") + CTRL_D)
        code = repl.run()
    sent = [request["messages"][-1]["content"] for request in engine.sent]
    return Ran(code, sent, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("exit_word", [*sorted(EXIT_WORDS), "EXIT", "  Quit  "])
def test_an_exit_word_ends_the_session_and_the_rest_is_never_sent(exit_word: str) -> None:
    ran = chat(f"hello\n{exit_word}\nnever sent\n")
    assert ran.code == 0 and ran.sent == ["hello"]
    assert ran.err.strip().endswith("✨ Chat session ended")


@pytest.mark.parametrize("end", [CTRL_D, CTRL_C], ids=["ctrl-d", "ctrl-c"])
def test_ctrl_d_or_ctrl_c_at_an_empty_prompt_ends_the_session(end: str) -> None:
    ran = chat(f"hello\n{end}never sent\n")
    assert ran.code == 0 and ran.sent == ["hello"] and "Chat session ended" in ran.err


def test_ctrl_c_with_text_typed_clears_the_line_and_the_chat_goes_on() -> None:
    ran = chat(f"half a tho{CTRL_C}a whole message\n")
    assert ran.sent == ["a whole message"]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('"""\nfirst line\nsecond line"""\n', "first line\nsecond line"),
        ('"""first line\n\n  indented third\n"""\n', "first line\n\n  indented third"),
        ('"""on one line"""\n', "on one line"),
        ('"""\n/help\nexit\n"""\n', "/help\nexit"),  # a command or exit word inside one is text
    ],
    ids=["opened-alone", "blank-and-indented-lines", "one-line", "commands-inside"],
)
def test_a_triple_quoted_message_is_one_message(keys: str, message: str) -> None:
    ran = chat(keys)
    assert ran.sent == [message]


def test_ctrl_d_inside_a_multi_line_message_sends_nothing() -> None:
    ran = chat('"""\nhalf written\n')
    assert ran.code == 0 and ran.sent == []


def test_pasted_lines_are_one_message_and_commands_in_them_are_text() -> None:
    ran = chat(f"{PASTE_START}pasted line one\npasted line two{PASTE_END}\n{PASTE_START}/clear\nexit{PASTE_END}\n")
    assert ran.sent == ["pasted line one\npasted line two", "/clear\nexit"]


def test_a_slash_line_is_a_command_and_blank_lines_are_nothing() -> None:
    ran = chat("\n   \n/set temperature 0.5\n/nonsense\nhi\n")
    assert ran.sent == ["hi"]
    assert "Set temperature to 0.5" in ran.err and "Unknown command '/nonsense'. Type /? for help" in ran.err
    assert ran.out.strip() == "fine thanks"  # the reply, streamed to stdout

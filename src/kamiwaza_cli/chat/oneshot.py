"""One-shot generation: answer one prompt, streamed to stdout (or as one JSON object), then exit.

Used by ``kamiwaza run MODEL PROMPT...`` and when stdin is not a terminal; stdin text
goes before the prompt words. Nothing but the reply goes to stdout.
"""

from __future__ import annotations

import sys
from typing import Any

from ..textsafe import safe_text
from .session import ChatSession, Reply


def compose_prompt(stdin_text: str, words: tuple[str, ...] | list[str]) -> str:
    parts = [stdin_text.strip(), " ".join(words).strip()]
    return "\n\n".join(p for p in parts if p)


def answer(session: ChatSession, prompt: str, *, as_json: bool, out: Any = None) -> Reply:
    out = out or sys.stdout
    # On a terminal the reply is escaped like everything else printed; into a pipe or a file it
    # goes as the model wrote it (that is data someone asked for, byte for byte).
    tty = bool(getattr(out, "isatty", lambda: False)())

    def write(piece: str) -> None:
        out.write(safe_text(piece, multiline=True) if tty else piece)
        out.flush()

    reply = session.reply(prompt, (lambda _piece: None) if as_json else write)
    if not as_json:
        if not reply.text.endswith("\n"):
            out.write("\n")
        out.flush()
    return reply

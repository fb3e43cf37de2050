"""Neutralizing control characters in text that came from outside: the one rule for terminals and logs.

Model names, file names, repo ids, error details and engine logs are data a hub, a URL or
another user chose. Printed raw, an ESC or CSI sequence recolours, moves the cursor or retitles
the terminal, ``\\r`` overwrites what was shown, ``\\n`` forges a whole line in ``server.log``,
and a bidi override makes text read differently from what it is. ``safe_text`` rewrites every
such character as a visible escape (``\\x1b``, ``\\n``, ``\\u202e``), the way ``repr`` does, and
leaves everything else alone; it works character by character, so it is safe on streamed pieces.

The CLI applies it where it renders (``cli/output.py``); the server applies it to every log
record it writes (``install_log_escaping``). Both import this module, which imports nothing of
the project's own: the server must not import from ``cli/``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # logging and traceback stay out of the CLI's start-up: only the server needs them
    import logging
    import traceback
    from types import TracebackType

# C0 controls but tab, DEL, C1 controls (0x9b is a one-byte CSI), the bidi embeddings,
# overrides and isolates, the Arabic letter mark, and the Unicode line and paragraph separators
# (log viewers and some terminals break lines at them).
_UNSAFE = "\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_UNSAFE_RE = re.compile(f"[{_UNSAFE}]")
_UNSAFE_KEEP_NEWLINES_RE = re.compile(f"[{_UNSAFE.replace(chr(10) + '-', chr(11) + '-')}]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: object, *, multiline: bool = False) -> str:
    """``text`` with every control character written as a visible escape.

    Tabs are kept; newlines too when ``multiline`` (engine logs, chat replies: text whose lines
    are its own), otherwise ``\\n`` becomes the two characters ``\\n`` so one value stays one line.
    """
    s = text if isinstance(text, str) else str(text)
    pattern = _UNSAFE_KEEP_NEWLINES_RE if multiline else _UNSAFE_RE
    return pattern.sub(_escape, s) if pattern.search(s) else s


def has_unsafe(text: str, *, multiline: bool = False) -> bool:
    """True when ``safe_text`` would change ``text``."""
    return bool((_UNSAFE_KEEP_NEWLINES_RE if multiline else _UNSAFE_RE).search(text))


# --- logs -----------------------------------------------------------------------------------------


def _safe_arg(value: object) -> object:
    import numbers

    # Numbers stay numbers (a %d must still format); anything else is rendered now and escaped,
    # since an exception or a path can carry a hostile name in its str() too.
    if value is None or isinstance(value, (numbers.Number, bytes)):
        return value
    return safe_text(value)


def _exception_only_chunks(te: traceback.TracebackException | None, seen: set[int]) -> set[str]:
    """The "Type: message" chunks of an exception and of everything chained to it."""
    if te is None or id(te) in seen:
        return set()
    seen.add(id(te))
    chunks = set(te.format_exception_only())
    chunks |= _exception_only_chunks(te.__cause__, seen) | _exception_only_chunks(te.__context__, seen)
    for sub in getattr(te, "exceptions", None) or ():  # exception groups (3.11+)
        chunks |= _exception_only_chunks(sub, seen)
    return chunks


def format_exception(exc_info: tuple[type[BaseException], BaseException, TracebackType | None]) -> str:
    """A traceback as ``logging`` writes it, with the exception messages kept to their lines.

    The frames are the program's own (file names, source lines) and stay multi-line; a message
    is data (``ValueError: bad name 'x\\n2026-01-01 INFO forged'``) and is escaped whole."""
    import traceback

    te = traceback.TracebackException(*exc_info)
    messages = _exception_only_chunks(te, set())
    out = []
    for chunk in te.format():
        if chunk in messages:
            out.append(safe_text(chunk.rstrip("\n")) + "\n")
        else:
            out.append(safe_text(chunk, multiline=True))
    return "".join(out).rstrip("\n")


def install_log_escaping() -> None:
    """Escape every log record this process creates, whatever logger or handler writes it.

    A record factory rather than a formatter: uvicorn and libraries bring their own handlers and
    formatters, and every one of them formats the record's ``msg``, ``args`` and ``exc_text``,
    which are made safe here once, at creation."""
    import logging
    from collections.abc import Mapping

    previous = logging.getLogRecordFactory()
    if getattr(previous, "kamiwaza_escaping", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = safe_text(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {k: _safe_arg(v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_safe_arg(a) for a in record.args)
        if record.exc_info and record.exc_info[0] is not None and record.exc_info[1] is not None:
            # Formatters reuse exc_text when it is set, so this text is what every handler writes.
            record.exc_text = format_exception(record.exc_info)  # type: ignore[arg-type]
        if record.stack_info:
            record.stack_info = safe_text(record.stack_info, multiline=True)
        return record

    factory.kamiwaza_escaping = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)

"""The interactive chat: a line editor with history, slash commands, streamed replies.

``>>> `` prompts, ``... `` continues a ``\"\"\"`` multi-line message, and pasted text
arrives as one message (bracketed paste). Ctrl+C while a reply streams stops that
reply and comes back to the prompt; Ctrl+C on an empty prompt, or Ctrl+D, ends the
session. When the endpoint dies, the session asks to redeploy and retries the turn
with the whole conversation kept.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import private_file
from ..errors import UsageError
from ..textsafe import safe_text
from .session import ChatSession, EndpointDown, StreamFailed, TranscriptError

EXIT_WORDS = {"/bye", "/exit", "exit", "quit", "q", "/quit"}
HELP = """Available commands:
  /set system TEXT        set the system prompt (clears nothing)
  /set temperature X      sampling temperature, e.g. 0.7
  /set max_tokens N       longest reply, in tokens
  /set num_ctx N          context size in tokens (redeploys the model)
  /set verbose | quiet    show or hide timings after each reply
  /show info | system | parameters
  /clear                  forget the conversation (keeps the system prompt)
  /save FILE | /load FILE save or resume a JSON transcript
  /image FILE             send a picture with the next message (vision models)
  /stats                  session totals
  /bye                    exit (also /exit, exit, quit, q, Ctrl+D)
  /?, /help               this help

Use \"\"\" to begin and end a multi-line message. Ctrl+C stops a reply."""


class Repl:
    def __init__(
        self,
        session: ChatSession,
        *,
        history_file: Path | None,
        reconnect: Callable[[], Any] | None = None,
        set_context: Callable[[int], Any] | None = None,
        out: Any = None,
        err: Any = None,
    ) -> None:
        self.session = session
        self.history_file = history_file
        self.reconnect = reconnect  # returns a new OpenAI client bound to a fresh deployment
        self.set_context = set_context  # returns a client bound to a deployment with that context
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._prompt: Any = None

    # I/O
    def say(self, text: str) -> None:
        print(safe_text(text, multiline=True), file=self.err, flush=True)

    def _make_prompt(self) -> Any:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        bindings = KeyBindings()

        @bindings.add("c-c")
        def _(event: Any) -> None:
            buffer = event.app.current_buffer
            if buffer.text:
                buffer.reset()  # Ctrl+C with text typed clears the line, like a shell
            else:
                event.app.exit(exception=EOFError)

        history: Any = InMemoryHistory()
        if self.history_file is not None:
            # What was typed is as private as the replies: 0700 directory, 0600 file.
            self.history_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            history = FileHistory(str(private_file(self.history_file)))
        return PromptSession(history=history, key_bindings=bindings, enable_history_search=False)

    def read_message(self) -> str | None:
        """One user message (None at Ctrl+D / Ctrl+C on an empty prompt)."""
        if self._prompt is None:
            self._prompt = self._make_prompt()
        try:
            line = self._prompt.prompt(">>> ")
        except (EOFError, KeyboardInterrupt):
            return None
        if not line.lstrip().startswith('"""'):
            return line
        # A multi-line message: everything up to the closing triple quote.
        first = line.lstrip()[3:]
        if first.rstrip().endswith('"""') and len(first.rstrip()) >= 3:
            return first.rstrip()[:-3]
        lines = [first] if first else []
        while True:
            try:
                more = self._prompt.prompt("... ")
            except (EOFError, KeyboardInterrupt):
                return None
            if more.rstrip().endswith('"""'):
                lines.append(more.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(more)

    # The loop
    def run(self) -> int:
        self.session.notify = self.say  # "old turns are left out", once per session
        while True:
            message = self.read_message()
            if message is None:
                break
            text = message.strip()
            if not text:
                continue
            if text.lower() in EXIT_WORDS:
                break
            if text.startswith("/") and "\n" not in text:
                self.command(text)
                continue
            self.turn(message)
        self.say("✨ Chat session ended")
        return 0

    def turn(self, message: str) -> None:
        while True:
            try:
                reply = self.session.reply(message, self._write_token)
            except EndpointDown as exc:
                self._end_line()
                if not self._offer_redeploy(str(exc)):
                    return
                continue
            except (UsageError, StreamFailed) as exc:  # refused or failed: say why, and the chat goes on
                self._end_line()
                self.say(f"⚠ {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
                return
            break
        self._end_line()
        if reply.interrupted:
            self.say("⏹ Reply stopped (kept here and in /save files, marked [interrupted])")
        if self.session.verbose:
            self.say(format_stats(reply))

    _line_open = False

    def _write_token(self, piece: str) -> None:
        # A reply is the model's text, which a hostile document in the prompt can steer: it may
        # have lines, but no escape sequences reach the terminal.
        self.out.write(safe_text(piece, multiline=True))
        self.out.flush()
        self._line_open = not piece.endswith("\n")

    def _end_line(self) -> None:
        if self._line_open:
            self.out.write("\n")
            self.out.flush()
        self._line_open = False

    def _offer_redeploy(self, reason: str) -> bool:
        self.say(f"⚠ The model endpoint stopped answering: {reason}")
        if self.reconnect is None:
            return False
        try:
            answer = self._prompt.prompt("Redeploy the model and retry? [Y/n] ") if self._prompt else "y"
        except (EOFError, KeyboardInterrupt):
            return False
        if answer.strip().lower() not in ("", "y", "yes"):
            self.say("Not redeploying; the conversation is kept. Type a message to try again, or /bye.")
            return False
        try:
            self.session.client = self.reconnect()
        except Exception as exc:  # noqa: BLE001 - report and keep the session alive
            self.say(f"Error: redeploying failed: {exc}")
            return False
        return True

    # Slash commands
    def command(self, text: str) -> None:
        parts = text.split(maxsplit=2)
        name = parts[0].lower()
        args = parts[1:]
        s = self.session
        if name in ("/help", "/?"):
            self.say(HELP)
        elif name == "/clear":
            s.clear()
            self.say("Cleared the conversation (the system prompt is kept)")
        elif name == "/set" and args:
            self._set(args[0].lower(), args[1] if len(args) > 1 else "")
        elif name == "/show" and args:
            self._show(args[0].lower())
        elif name == "/save" and len(args) >= 1:
            path = Path(" ".join(args))
            try:
                self.say(f"Saved the conversation to {s.save(path)}")
            except OSError as exc:
                self.say(f"Error: cannot write {path}: {exc.strerror}")
        elif name == "/load" and len(args) >= 1:
            try:
                s.load(Path(" ".join(args)))
            except TranscriptError as exc:
                self.say(f"Error: {exc}")
            else:
                self.say(f"Loaded {len(s.messages)} messages")
        elif name == "/image" and args:
            from .images import ImageError, image_part

            path = Path(" ".join(args)).expanduser()
            try:
                s.images.append((path.name, image_part(path)))
            except ImageError as exc:
                self.say(f"Error: {exc}")
            else:
                self.say(f"Attached {path.name}; it goes with your next message")
        elif name == "/stats":
            st = s.stats
            rate = st.reply_tokens / st.generation_seconds if st.generation_seconds else 0.0
            self.say(
                f"turns: {st.turns}, prompt tokens: {st.prompt_tokens}, reply tokens: {st.reply_tokens}, "
                f"generation: {st.generation_seconds:.2f} s ({rate:.1f} tokens/s)"
            )
            if st.last is not None:
                self.say("last reply: " + format_stats(st.last))
        else:
            self.say(f"Unknown command '{parts[0]}'. Type /? for help")

    def _set(self, key: str, value: str) -> None:
        s = self.session
        try:
            if key == "system":
                s.system = value
                self.say("Set the system prompt")
            elif key == "temperature":
                t = float(value)
                if not 0 <= t <= 2:
                    raise ValueError
                s.temperature = t
                self.say(f"Set temperature to {t}")
            elif key == "max_tokens":
                n = int(value)
                if n < 1:
                    raise ValueError
                s.max_tokens = n
                self.say(f"Set max_tokens to {n}")
            elif key == "num_ctx" and self.set_context is not None:
                self._set_context(int(value))
            elif key == "verbose":
                s.verbose = True
                self.say("Set verbose mode: timings after each reply")
            elif key == "quiet":
                s.verbose = False
                self.say("Set quiet mode")
            else:
                self.say(f"Unknown setting '{key}'. Type /? for help")
        except ValueError:
            self.say(f"Error: {value!r} is not a valid {key} (temperature: 0..2, max_tokens: a positive integer)")

    def _set_context(self, tokens: int) -> None:
        assert self.set_context is not None
        try:
            self.session.client = self.set_context(tokens)
        except Exception as exc:  # noqa: BLE001 - the old deployment still answers; keep the session
            self.say(f"Error: {getattr(exc, 'message', None) or exc}")
            return
        self.say(f"Set num_ctx to {tokens}")

    def _show(self, what: str) -> None:
        s = self.session
        if what == "info":
            for key, value in {"model": s.model, **s.info}.items():
                self.say(f"  {key:<12} {value}")
        elif what == "system":
            self.say(s.system or "(no system prompt)")
        elif what == "parameters":
            self.say(f"  temperature  {s.temperature if s.temperature is not None else 'engine default'}")
            self.say(f"  max_tokens   {s.max_tokens}")
            self.say(f"  seed         {s.seed if s.seed is not None else 'random'}")
        else:
            self.say(f"Unknown: /show {what}. Try /show info, /show system or /show parameters")


def format_stats(reply: Any) -> str:
    ttft = f"{reply.ttft * 1000:.0f} ms" if reply.ttft is not None else "n/a"
    rate = f"{reply.tokens_per_second:.1f} tokens/s" if reply.tokens_per_second else "n/a tokens/s"
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else "n/a"
    return (
        f"time to first token: {ttft} | prompt tokens: {prompt} | reply tokens: {reply.reply_tokens} | "
        f"{rate} | total: {reply.total:.2f} s"
    )

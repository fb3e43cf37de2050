"""A conversation with one deployed model: messages, parameters, one streamed reply at a time.

``ChatSession.reply`` streams tokens to a callback as they arrive and measures time
to first token, tokens and tokens/s. Ctrl+C (KeyboardInterrupt) during a reply closes
the HTTP stream, which cancels the generation in the engine, and keeps the partial
reply, marked as interrupted on screen and in transcripts; the model is sent only what
it said. Transcripts are JSON files that ``/load`` and ``run --load`` read back.

Three ways to frame a turn (``mode``): ``chat`` (the engine's chat route and the model's
template), ``transcript`` (a base model in a chat: a plain "User: / Assistant:" text
completion with stop sequences) and ``text`` (a base model answering once: the prompt as
text). Before sending, the prompt's tokens are counted (window.py) and the oldest turns
that no longer fit the engine's context are left out of the request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KamiwazaError, UsageError
from .window import ContextWindow, Piece

DEFAULT_SYSTEM = "You are a helpful AI assistant."
DEFAULT_MAX_TOKENS = 1024
INTERRUPTED_MARK = " [interrupted]"
TRANSCRIPT_VERSION = 1


def _engine_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            return str(message)
    return str(exc)


def _with_pictures(messages: list[dict[str, Any]], pictures: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The request's last (user) message with the pictures as image_url parts after its text."""
    if not pictures or not messages:
        return messages
    last = messages[-1]
    parts = [{"type": "text", "text": last["content"]}, *(part for _, part in pictures)]
    return [*messages[:-1], {**last, "content": parts}]


class EndpointDown(Exception):
    """The model endpoint stopped answering (engine died, deployment stopped)."""


class StreamFailed(KamiwazaError):
    """The engine accepted the request, then failed inside the stream (its words are the message)."""


MODES = ("chat", "transcript", "text")
# A base model continues the transcript as both speakers unless stopped at the next turn's label.
TRANSCRIPT_STOP = ["\nUser:", "\nAssistant:"]
SYSTEM_PROBE = "kamiwaza-system-probe"


class TranscriptError(ValueError):
    pass


@dataclass
class Reply:
    text: str
    ttft: float | None
    reply_tokens: int
    prompt_tokens: int | None
    total: float
    interrupted: bool = False

    @property
    def tokens_per_second(self) -> float | None:
        if self.ttft is None or self.reply_tokens < 2:
            return None
        streaming = self.total - self.ttft
        return (self.reply_tokens - 1) / streaming if streaming > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "reply": self.text,
            "prompt_tokens": self.prompt_tokens,
            "reply_tokens": self.reply_tokens,
            "time_to_first_token_s": _round(self.ttft),
            "tokens_per_second": _round(self.tokens_per_second),
            "total_s": _round(self.total),
            "interrupted": self.interrupted,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass
class Stats:
    turns: int = 0
    prompt_tokens: int = 0
    reply_tokens: int = 0
    generation_seconds: float = 0.0
    last: Reply | None = None

    def add(self, reply: Reply) -> None:
        self.turns += 1
        self.prompt_tokens += reply.prompt_tokens or 0
        self.reply_tokens += reply.reply_tokens
        self.generation_seconds += reply.total
        self.last = reply


@dataclass
class ChatSession:
    model: str
    client: Any  # an openai.OpenAI bound to the deployment's endpoint
    system: str = DEFAULT_SYSTEM
    temperature: float | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None
    verbose: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    info: dict[str, Any] = field(default_factory=dict)  # deployment id, endpoint... for /show info
    # Pictures for the next message only (run --image, /image): images.image_part dicts and names.
    images: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    mode: str = "chat"
    context: int | None = None  # the engine's context per slot, in tokens (None: unknown, nothing is dropped)
    notify: Callable[[str], None] | None = None  # where the once-per-session notices go
    window: ContextWindow = field(init=False)
    _system_role: bool | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.window = ContextWindow(lambda: self.client, self.context, per_message=8 if self.mode == "chat" else 1)

    def sent_history(self) -> list[dict[str, str]]:
        """The history as the model is to see it: an interrupted reply is what the model said,
        without the marker the screen and the transcript show."""
        return [{"role": m["role"], "content": _spoken(m)} for m in self.messages[self.window.start :]]

    def request_messages(self, user_text: str | None = None) -> list[dict[str, str]]:
        history = self.sent_history()
        if user_text is not None:
            history.append({"role": "user", "content": user_text})
        if not self.system:
            return history
        if self.system_role():
            return [{"role": "system", "content": self.system}, *history]
        # A chat format without a system role: the system prompt goes at the top of the first user
        # turn, as the templates that have one do themselves (gemma's, mistral's).
        out = [dict(m) for m in history]
        first = next((m for m in out if m["role"] == "user"), None)
        if first is not None:
            first["content"] = f"{self.system}\n\n{first['content']}"
        return out

    def system_role(self) -> bool:
        """Whether the model's chat format keeps a system message: asked once of the engine, by
        rendering a probe through its template (llama-server's /apply-template). An engine without
        that route is taken at its word (True); a template that refuses the role, or drops it, is not."""
        if self._system_role is None:
            import openai

            try:
                rendered = self.window.engine(
                    "POST",
                    "/apply-template",
                    {"messages": [{"role": "system", "content": SYSTEM_PROBE}, {"role": "user", "content": "hi"}]},
                )
            except openai.APIStatusError:
                rendered = {"prompt": ""}  # the template raised on a system message
            prompt = rendered.get("prompt") if isinstance(rendered, dict) else None
            self._system_role = True if rendered is None or not isinstance(prompt, str) else SYSTEM_PROBE in prompt
        return self._system_role

    def transcript_prompt(self, user_text: str) -> str:
        """A base model's chat: the system prompt, then the turns as "User:" / "Assistant:" lines."""
        parts = [f"{self.system}\n\n"] if self.system else []
        parts += [_transcript_line(m) for m in self.sent_history()]
        parts.append(f"User: {user_text}\nAssistant:")
        return "".join(parts)

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.seed is not None:
            params["seed"] = self.seed
        return params

    def clear(self) -> None:
        self.messages.clear()
        self.window.start = 0

    def resize(self, context: int | None) -> None:
        """A new context size (/set num_ctx): which turns fit is decided afresh on the next turn."""
        self.context = self.window.context = context
        self.window.start = 0

    def _pieces(self, user_text: str) -> list[Piece]:
        """What the next request holds, message by message, for the window to count and trim."""
        if self.mode == "text":
            return [Piece(self._text_prompt(user_text), keep=True)]
        render = _transcript_line if self.mode == "transcript" else _spoken
        pieces = []
        if self.system:
            pieces.append(Piece(f"{self.system}\n\n" if self.mode == "transcript" else self.system, keep=True))
        pieces += [Piece(render(m)) for m in self.messages]
        # The new turn as it will stay in the history, so that the next turn finds it counted
        # ("Assistant:" after it is template, learned with the rest).
        new = {"role": "user", "content": user_text}
        pieces.append(Piece(render(new), keep=True))
        return pieces

    def _text_prompt(self, user_text: str) -> str:
        return f"{self.system}\n\n{user_text}" if self.system else user_text

    def _fit(self, user_text: str) -> None:
        """Leave out the oldest turns that no longer fit (telling the user once), or refuse a turn
        that cannot fit even alone."""
        dropped_before = self.window.start
        self.window.fit(self._pieces(user_text), history=len(self.messages), reply=self.max_tokens, model=self.model)
        if self.window.start > dropped_before and not self.window.told and self.notify is not None:
            self.window.told = True
            self.notify(
                f"ℹ The conversation is longer than the model's context ({self.window.context} tokens): "
                "the oldest turns are left out of what the model sees from now on (/clear starts afresh)"
            )

    def reply(self, user_text: str, on_token: Callable[[str], None]) -> Reply:
        """Stream one reply to ``user_text``; the exchange joins the history (even if interrupted).

        Token counts come from the stream's last event (``include_usage``), which llama-server
        and vLLM send: no second request is made to count the prompt.
        """
        import openai

        pictures = list(self.images)
        self.images.clear()  # sent once, with this message, whether or not the engine takes it
        started = time.monotonic()
        ttft = None
        parts: list[str] = []
        tokens = 0
        usage = None
        interrupted = False
        stream = None
        text_route = self.mode != "chat" and not pictures  # a picture needs the chat route (image_url parts)
        try:
            # Counting goes to the same endpoint: a dead one is EndpointDown here too. Its cost is
            # part of the wait for the first token, and counted in it.
            self._fit(user_text)
            if text_route:
                prompt = self._text_prompt(user_text) if self.mode == "text" else self.transcript_prompt(user_text)
                extra = {"stop": TRANSCRIPT_STOP} if self.mode == "transcript" else {}
                stream = self.client.completions.create(
                    model=self.model,
                    prompt=prompt,
                    stream=True,
                    stream_options={"include_usage": True},
                    **extra,
                    **self.parameters(),
                )
            else:
                stream = self.client.chat.completions.create(
                    model=self.model,
                    messages=_with_pictures(self.request_messages(user_text), pictures),
                    stream=True,
                    stream_options={"include_usage": True},
                    **self.parameters(),
                )
            for chunk in stream:
                failure = _stream_error(chunk)
                if failure is not None:
                    raise StreamFailed(f"the model failed while answering: {failure}")
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                piece = getattr(choice, "text", None) if text_route else choice.delta.content
                if piece and self.mode == "transcript" and not parts:
                    piece = piece.lstrip()  # "Assistant:" is followed by the model's own space
                if piece:
                    if ttft is None:
                        ttft = time.monotonic() - started
                    tokens += 1  # llama.cpp and vLLM stream one token per event
                    parts.append(piece)
                    on_token(piece)
        except KeyboardInterrupt:
            interrupted = True
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise EndpointDown(f"cannot reach the model endpoint ({type(exc).__name__})") from exc
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 502, 503, 504):
                raise EndpointDown(f"the model endpoint answered HTTP {exc.status_code}") from exc
            if pictures and exc.status_code in (400, 500, 501):
                # llama-server answers 500 to a picture when the model was served without a projector.
                raise UsageError(
                    f"the model refused the picture: {_engine_message(exc)}",
                    hint="pictures need a vision model served with its projector, e.g.: kamiwaza run gemma3-4b",
                ) from exc
            if exc.status_code == 400:
                # The engine refused the request itself (a prompt longer than the context, a bad
                # parameter): its own words are the error, and nothing joins the history.
                raise UsageError(
                    f"the model refused the request: {_engine_message(exc)}",
                    hint="shorten the input or the conversation (/clear), or serve the model with a longer --ctx",
                ) from exc
            raise
        except openai.APIError as exc:  # an error event inside a stream the engine had begun with 200
            raise StreamFailed(f"the model failed while answering: {_engine_message(exc)}") from exc
        finally:
            if stream is not None:
                stream.close()  # closing the response cancels the generation in the engine
        total = time.monotonic() - started
        text = "".join(parts)
        if self.mode == "transcript":
            text = text.rstrip()
        if usage is not None:
            tokens = usage.completion_tokens or tokens
        prompt_tokens = usage.prompt_tokens if usage is not None else None
        if prompt_tokens is not None:
            self.window.learn(prompt_tokens)
        answer: dict[str, Any] = {"role": "assistant", "content": text}
        if interrupted:
            answer.update(content=text + INTERRUPTED_MARK, interrupted=True)
        # The history keeps text: a picture is sent with its own message, named in the transcript.
        shown = "".join(f"[image: {name}] " for name, _ in pictures) + user_text
        self.messages.append({"role": "user", "content": shown})
        self.messages.append(answer)
        self.window.remember(_transcript_line(answer) if self.mode == "transcript" else text, tokens)
        reply = Reply(text, ttft, tokens, prompt_tokens, total, interrupted)
        self.stats.add(reply)
        return reply

    # Transcripts
    def save(self, path: Path) -> Path:
        data = {
            "version": TRANSCRIPT_VERSION,
            "model": self.model,
            "system": self.system,
            "parameters": {"temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed},
            "messages": self.messages,
        }
        path = path.expanduser()
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return path

    def load(self, path: Path) -> None:
        self.restore(read_transcript(path))

    def restore(self, data: dict[str, Any]) -> None:
        """Take the conversation and parameters of a transcript read by ``read_transcript``."""
        self.system = data.get("system") or ""
        params = data.get("parameters") or {}
        self.temperature = params.get("temperature")
        self.max_tokens = int(params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        self.seed = params.get("seed")
        self.messages = list(data["messages"])
        self.window.start = 0


def _spoken(message: dict[str, Any]) -> str:
    """What was said: an interrupted reply without its marker."""
    content = str(message["content"])
    if message["role"] == "assistant" and (message.get("interrupted") or content.endswith(INTERRUPTED_MARK)):
        return content.removesuffix(INTERRUPTED_MARK)
    return content


def _transcript_line(message: dict[str, Any]) -> str:
    label = "User" if message["role"] == "user" else "Assistant"
    return f"{label}: {_spoken(message)}\n"


def _stream_error(chunk: Any) -> str | None:
    """The engine's message when a stream event is an error rather than a chunk (llama.cpp sends
    ``data: {"error": {...}}`` after its 200 when a generation fails)."""
    extra = getattr(chunk, "model_extra", None) or {}
    error = extra.get("error") if isinstance(extra, dict) else None
    if not error:
        return None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def read_transcript(path: Path) -> dict[str, Any]:
    path = path.expanduser()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TranscriptError(f"no such transcript: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TranscriptError(f"{path} is not a JSON transcript ({exc})") from exc
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise TranscriptError(f"{path} is not a kamiwaza chat transcript (expected messages with role and content)")
    return data

"""A conversation with one deployed model: messages, parameters, one streamed reply at a time.

``ChatSession.reply`` streams tokens to a callback as they arrive and measures time
to first token, tokens and tokens/s. Ctrl+C (KeyboardInterrupt) during a reply closes
the HTTP stream, which cancels the generation in the engine, and keeps the partial
reply, marked as interrupted. Transcripts are JSON files that ``/load`` and
``run --load`` read back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

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


class EndpointDown(Exception):
    """The model endpoint stopped answering (engine died, deployment stopped)."""


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
    messages: list[dict[str, str]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    info: dict[str, Any] = field(default_factory=dict)  # deployment id, endpoint... for /show info
    # Pictures for the next message only (run --image, /image): images.image_part dicts and names.
    images: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def request_messages(self, user_text: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"role": "system", "content": self.system}] if self.system else []
        out += self.messages
        if user_text is not None and self.images:
            parts = [{"type": "text", "text": user_text}, *(part for _, part in self.images)]
            out.append({"role": "user", "content": parts})
        elif user_text is not None:
            out.append({"role": "user", "content": user_text})
        return out

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.seed is not None:
            params["seed"] = self.seed
        return params

    def clear(self) -> None:
        self.messages.clear()

    def reply(self, user_text: str, on_token: Callable[[str], None]) -> Reply:
        """Stream one reply to ``user_text``; the exchange joins the history (even if interrupted).

        Token counts come from the stream's last event (``include_usage``), which llama-server
        and vLLM send: no second request is made to count the prompt.
        """
        import openai

        messages = self.request_messages(user_text)
        pictures = [name for name, _ in self.images]
        self.images.clear()  # sent once, with this message, whether or not the engine takes it
        started = time.monotonic()
        ttft = None
        parts: list[str] = []
        tokens = 0
        usage = None
        interrupted = False
        stream = None
        try:
            stream = self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **self.parameters(),
            )
            for chunk in stream:
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                piece = chunk.choices[0].delta.content
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
                    hint="shorten the input or the conversation (/clear), or serve the model with a longer n_ctx",
                ) from exc
            raise
        finally:
            if stream is not None:
                stream.close()  # closing the response cancels the generation in the engine
        total = time.monotonic() - started
        text = "".join(parts)
        if usage is not None:
            tokens = usage.completion_tokens or tokens
        prompt_tokens = usage.prompt_tokens if usage is not None else None
        # The history keeps text: a picture is sent with its own message, named in the transcript.
        shown = "".join(f"[image: {name}] " for name in pictures) + user_text
        self.messages.append({"role": "user", "content": shown})
        self.messages.append({"role": "assistant", "content": text + (INTERRUPTED_MARK if interrupted else "")})
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

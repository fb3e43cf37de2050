"""The context window of a conversation: how many tokens the next request holds, and which of the
oldest turns to leave out so that it fits the engine's context.

Tokens are counted by the engine itself (llama-server's ``/tokenize``, reached through the
deployment's endpoint as ``/v1/tokenize``), one message at a time and remembered, so a turn costs
one call: the new message. A reply's count comes from the stream's usage, and the template's own
tokens per message are learned from the prompt size the engine reports after each turn. The
context size is the deployment's (``context_per_slot``, which the local server reports); where it
is not known, or the endpoint has no ``/tokenize`` (another engine), nothing is counted and nothing
is dropped, and the engine's own refusal is what the user sees. Where the
endpoint has none of these routes (another engine), nothing is counted and nothing is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

# A turn is sent only if this much room is left for the reply (or max_tokens, if smaller); the
# oldest turns are dropped while less than a quarter of the context (or max_tokens) is left.
MIN_REPLY = 16


@dataclass(frozen=True)
class Piece:
    """One message of the next request as the model will read it; ``keep``: never dropped (the
    system prompt and the new turn)."""

    text: str
    keep: bool = False


class ContextFull(UsageError):
    """Even alone (system prompt and the new message), the turn does not fit the context."""

    def __init__(self, needed: int, context: int, model: str) -> None:
        super().__init__(
            f"the prompt is {needed} tokens but the model's context is {context} tokens",
            hint=f"serve it with a longer context (kamiwaza serve {model} --ctx N) or shorten the input",
        )
        self.needed = needed
        self.context = context


class ContextWindow:
    def __init__(self, client: Callable[[], Any], context: int | None, *, per_message: int) -> None:
        self.client = client  # the session's current client: a redeploy gives it a new one
        self.context = context
        self.per_message = per_message  # template tokens around each message, learned per turn
        self.start = 0  # index of the first history message still sent (a whole turn: even)
        self.told = False  # the user has been told that old turns are left out
        self.counting = True  # False once the endpoint turns out to have no /tokenize
        self._counts: dict[str, int] = {}
        self._sent: tuple[int, int] | None = None  # (content tokens, messages) of the last request

    def engine(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        """A llama-server route through the deployment's endpoint, as JSON; None where the endpoint
        does not have it. Other errors are the caller's."""
        import openai

        call = getattr(self.client(), method.lower(), None)
        if call is None:  # a client that only speaks the OpenAI API
            return None
        try:
            if method == "GET":
                return call(route, cast_to=object)
            return call(route, body=body, cast_to=object)
        except openai.NotFoundError:
            return None
        except openai.APIStatusError as exc:
            if exc.status_code == 405:
                return None
            raise

    def count(self, text: str) -> int | None:
        if text in self._counts:
            return self._counts[text]
        if not self.counting:
            return None
        answer = self.engine("POST", "/tokenize", {"content": text, "add_special": False})
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list):
            self.counting = False
            return None
        self._counts[text] = len(tokens)
        return len(tokens)

    def remember(self, text: str, tokens: int) -> None:
        """A reply's token count, from the stream's usage: it need not be counted again."""
        self._counts.setdefault(text, tokens)

    def fit(self, pieces: list[Piece], *, history: int, reply: int, model: str) -> None:
        """Move ``start`` past the oldest turns that do not fit; ``pieces`` are the kept pieces and
        the ``history`` messages, in request order. Raises ContextFull if the kept ones alone do not."""
        context = self.context
        if context is None or not self.counting:
            return
        counts = [self.count(p.text) for p in pieces]
        if any(c is None for c in counts):
            return
        kept = [c for p, c in zip(pieces, counts, strict=True) if p.keep and c is not None]
        turns = [c for p, c in zip(pieces, counts, strict=True) if not p.keep and c is not None]
        assert len(turns) == history

        def needed(start: int) -> int:
            sent = kept + turns[start:]
            return sum(sent) + self.per_message * len(sent)

        room = min(reply, context // 4)
        start = min(self.start, history)
        while start < history and needed(start) + room > context:
            start += 2
        total = needed(start)
        if total + min(reply, MIN_REPLY) > context:
            raise ContextFull(total, context, model)
        self.start = start
        sent = kept + turns[start:]
        self._sent = (sum(sent), len(sent))

    def learn(self, prompt_tokens: int) -> None:
        """The engine's count of the last prompt tells how many tokens its template adds per message."""
        if self._sent is None or self._sent[1] == 0:
            return
        content, messages = self._sent
        self.per_message = max(0, math.ceil((prompt_tokens - content) / messages))

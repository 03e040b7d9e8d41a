"""Load test of `metaeol serve` against offline `MetaEOL.encode`, in one run.

Starts a local server (subprocess, same model and encoder settings), measures offline
``encode`` throughput on the same STS-B sentences while the server is idle, then runs N
concurrent clients for a warm-up and a measured period, and measures offline ``encode`` again
after the server has stopped (the ratio uses the mean: this machine's speed drifts by 10%
between minutes). The CPU the load clients themselves used is reported too: on a small
machine they compete with the server for the same cores. Each request holds 1-64 sentences
dealt from the pool, each client going through it in a fresh random order every time round, so
that what a window serves costs per sentence what the offline run's pool does (independent draws
left a two-minute window's sentences 7% costlier than the pool); every returned vector is
checked against the offline one (cosine).

Served throughput is the server's own count of sentences encoded (``metaeol_batch_inputs``,
polled from /metrics), taken between the first and the last batch that ends inside the
measured window: with many clients a request can take longer than the window, so counting
only the requests answered in it would undercount. Clients still waiting when the window
closes hang up; the server drops their remaining inputs and exits on SIGTERM.

Prints request and sentence throughput, p50/p95/p99 latency, errors, 429s (counted apart),
vector mismatches, server RSS at start / after warm-up / at the end, the served /
offline throughput ratio, and where the engine's time went in the server and offline (the
server's ``metaeol_engine_*`` counters against the offline run's :meth:`MetaEOL.engine_stats`):
ms per pass, ms per padded token, padding and passes per sentence.

    python bench/serve_load.py --clients 64 --duration 300 --warmup 30            # SmolLM2, fp32
    python bench/serve_load.py -m ../shared/models/stories260K/stories260K.gguf \\
        --clients 4 --duration 20 --warmup 5 --pool 256                         # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx
import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families

from metaeol import MetaEOL
from metaeol.engine import EngineStats
from metaeol.evaluation.data import load_task, resolve_data_root
from metaeol.loading import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
NAME = "bench"


def stsb_pool(data: str | None, n: int) -> list[str]:
    sentences = list(dict.fromkeys(load_task("STS-B", resolve_data_root(data)).sentences()))
    random.Random(0).shuffle(sentences)
    return sentences[:n]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return kib / 1024


def start_server(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "metaeol.cli", "serve", "-m", args.model, "--dtype", args.dtype,
               "--batch-size", str(args.batch_size), "--port", "0", "--served-model-name", NAME,
               "--log-level", "info", *args.serve_args.split()]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=open(log, "w"))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        match = re.search(r"running on (http://\S+)", log.read_text())
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}):\n{log.read_text()}")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start within 600 s")


class Tally:
    """Outcomes of the requests that finished inside the measured window (errors: any time)."""

    def __init__(self):
        self.latencies: list[float] = []
        self.sentences = 0
        self.errors = 0
        self.rejected = 0
        self.mismatches = 0
        self.error_samples: list[str] = []


async def client_loop(http: httpx.AsyncClient, url: str, pool: list[str], expected: np.ndarray, seed: int,
                      window: tuple[float, float], sizes: tuple[int, int], tally: Tally) -> None:
    rng = random.Random(seed)
    start, end = window
    deck: list[int] = []
    while time.monotonic() < end:
        picks = []
        for _ in range(rng.randint(*sizes)):
            if not deck:
                deck = rng.sample(range(len(pool)), len(pool))
            picks.append(deck.pop())
        sent = time.monotonic()
        try:
            response = await http.post(f"{url}/v1/embeddings", json={
                "input": [pool[i] for i in picks], "model": NAME, "encoding_format": "base64"})
            status, body = response.status_code, response.content
        except httpx.HTTPError as err:
            status, body = 0, repr(err).encode()
        done = time.monotonic()
        counted = start <= done <= end  # finished inside the measured window
        if status == 429:
            tally.rejected += counted
            await asyncio.sleep(min(float(response.headers.get("retry-after", 1)), 1.0))
            continue
        if status != 200:
            tally.errors += 1
            if len(tally.error_samples) < 5:
                tally.error_samples.append(f"{status}: {body[:200]!r}")
            continue
        data = json.loads(body)["data"]
        vectors = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])
        cos = (vectors * expected[picks]).sum(-1) / np.linalg.norm(vectors, axis=-1)
        tally.mismatches += int((cos < 0.99999).sum())
        if counted:
            tally.latencies.append(done - sent)
            tally.sentences += len(picks)


_POLLED = ("metaeol_batch_inputs_sum", "metaeol_batch_seconds_sum", "metaeol_engine_passes_total",
           "metaeol_engine_tokens_total", "metaeol_engine_padded_tokens_total", "metaeol_engine_seconds_total")


class EncodedCounter:
    """Polls the server's count of encoded sentences; keeps (time, counters) at each change:
    sentences, batch seconds and the engine's passes, tokens, padded tokens and seconds."""

    def __init__(self):
        self.changes: list[tuple[float, np.ndarray]] = []

    async def poll(self, http: httpx.AsyncClient, url: str, until: float, every_s: float = 0.25) -> None:
        while time.monotonic() < until:
            text = (await http.get(f"{url}/metrics")).text
            values = {sample.name: sample.value for family in text_string_to_metric_families(text)
                      for sample in family.samples}
            point = (time.monotonic(), np.array([values[name] for name in _POLLED]))
            if not self.changes or point[1][0] != self.changes[-1][1][0]:
                self.changes.append(point)
            await asyncio.sleep(every_s)

    def window(self, start: float, end: float) -> tuple[float, np.ndarray, int]:
        """Between the first and last batch ending in [start, end]: the seconds, the counters'
        increase (as in ``_POLLED``) and the batches."""
        inside = [c for c in self.changes if start <= c[0] <= end]
        if len(inside) < 2:
            return float("nan"), np.full(len(_POLLED), np.nan), len(inside)
        (t0, v0), (t1, v1) = inside[0], inside[-1]
        return t1 - t0, v1 - v0, len(inside) - 1


async def load(url: str, pool: list[str], expected: np.ndarray, roles: dict[str, tuple[int, tuple[int, int]]],
               warmup: float, duration: float, on_warm: Callable[[], None] = lambda: None,
               on_end: Callable[[], None] = lambda: None) -> tuple[dict[str, Tally], EncodedCounter, tuple]:
    """Run each role's clients (count, request sizes) together; one :class:`Tally` per role."""
    tallies, counter = {role: Tally() for role in roles}, EncodedCounter()
    start = time.monotonic() + warmup
    window = (start, start + duration)
    n_clients = sum(count for count, _ in roles.values())
    limits = httpx.Limits(max_connections=n_clients, max_keepalive_connections=n_clients)
    async with httpx.AsyncClient(timeout=None, limits=limits) as http, httpx.AsyncClient() as monitor:
        async def warm_marker() -> None:
            await asyncio.sleep(warmup)
            on_warm()

        seeds = iter(range(10**6))
        clients = [asyncio.ensure_future(client_loop(http, url, pool, expected, next(seeds), window, sizes,
                                                     tallies[role]))
                   for role, (count, sizes) in roles.items() for _ in range(count)]
        await asyncio.gather(warm_marker(), counter.poll(monitor, url, window[1]))
        on_end()
        for client in clients:  # requests still waiting: hang up (the server drops their inputs)
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    return tallies, counter, window


def offline_rate(encoder: MetaEOL, pool: list[str], batch_size: int) -> tuple[float, np.ndarray, EngineStats]:
    """Offline ``encode`` sentences/s on the pool, its normalized vectors and what its passes computed."""
    before, started = encoder.engine_stats(), time.perf_counter()
    vectors = encoder.encode(pool, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return len(pool) / (time.perf_counter() - started), vectors, encoder.engine_stats() - before


def pass_profile(stats: EngineStats, sentences: float) -> dict[str, float]:
    """Where the engine's time went: per pass, per padded token, padding, passes per sentence."""
    return {"passes": stats.passes, "ms_per_pass": 1000 * stats.seconds / stats.passes,
            "ms_per_padded_token": 1000 * stats.seconds / stats.padded_tokens, "padding": stats.padding,
            "passes_per_sentence": stats.passes / sentences,
            "padded_tokens_per_sentence": stats.padded_tokens / sentences}


def percentiles(tally: Tally) -> dict[str, float]:
    lat = np.array(tally.latencies) if tally.latencies else np.array([np.nan])
    return {f"latency_p{q}_s": float(np.percentile(lat, q)) for q in (50, 95, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=300, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=30, help="seconds of load before measuring")
    parser.add_argument("--min-size", type=int, default=1)
    parser.add_argument("--max-size", type=int, default=64)
    parser.add_argument("--pool", type=int, default=1024, help="distinct STS-B test sentences used")
    parser.add_argument("--data", default=None, help="SentEval data root (default: ../shared/data/senteval)")
    parser.add_argument("--serve-args", default="", help="extra `metaeol serve` options, e.g. '--max-wait-ms 10'")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for the server and the offline run (default: torch's choice)")
    parser.add_argument("--stop-timeout", type=float, default=600, help="seconds the server may take to stop")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--scenario", choices=["uniform", "mixed"], default="uniform",
                        help="uniform: --clients clients with --min-size..--max-size sentences per request; mixed: "
                             "one client sends --big-size-sentence requests back to back while --small-clients "
                             "send one sentence each (their latency is also measured on the idle server first)")
    parser.add_argument("--big-size", type=int, default=256)
    parser.add_argument("--small-clients", type=int, default=4)
    parser.add_argument("--idle-duration", type=float, default=20, help="mixed: seconds of small clients alone")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    pool = stsb_pool(args.data, args.pool)
    log = Path(tempfile.mkstemp(suffix=".log", prefix="serve_load_")[1])
    process, url = start_server(args, log)
    try:
        rss = {"start": rss_mib(process.pid)}
        encoder = MetaEOL(args.model, dtype=args.dtype)
        encoder.encode(pool[:4], show_progress_bar=False)  # builds the prefix states, as the server's probe did
        offline_before, expected, offline_stats = offline_rate(encoder, pool, args.batch_size)
        if args.scenario == "mixed":
            idle, _, _ = asyncio.run(load(url, pool, expected, {"small": (args.small_clients, (1, 1))},
                                          warmup=2, duration=args.idle_duration))
            roles = {"big": (1, (args.big_size, args.big_size)), "small": (args.small_clients, (1, 1))}
        else:
            roles = {"all": (args.clients, (args.min_size, args.max_size))}
        cpu, wall = time.process_time(), time.perf_counter()
        tallies, counter, window = asyncio.run(load(
            url, pool, expected, roles, args.warmup, args.duration,
            on_warm=lambda: rss.__setitem__("warm", rss_mib(process.pid)),
            on_end=lambda: rss.__setitem__("end", rss_mib(process.pid))))
        client_cpu = (time.process_time() - cpu) / (time.perf_counter() - wall)  # cores the load clients used
        tally = Tally()
        for part in tallies.values():
            tally.latencies += part.latencies
            tally.sentences += part.sentences
            tally.errors += part.errors
            tally.rejected += part.rejected
            tally.mismatches += part.mismatches
            tally.error_samples += part.error_samples
    finally:
        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        exit_code = process.wait(args.stop_timeout)
        stop_s = time.monotonic() - stopping
    offline_after, _, _ = offline_rate(encoder, pool, args.batch_size)  # the machine drifts: measure on both sides
    offline = (offline_before + offline_after) / 2
    if exit_code == 0:
        log.unlink()
    else:
        print(f"server log: {log}")
    seconds, moved, batches = counter.window(*window)
    served, busy = moved[0] / seconds, moved[1] / seconds
    counted = dict(zip(_POLLED, moved))
    served_stats = EngineStats(passes=int(counted["metaeol_engine_passes_total"]),
                               tokens=int(counted["metaeol_engine_tokens_total"]),
                               padded_tokens=int(counted["metaeol_engine_padded_tokens_total"]),
                               seconds=float(counted["metaeol_engine_seconds_total"]))
    engine = {"served": pass_profile(served_stats, moved[0]) if batches else {},
              "offline": pass_profile(offline_stats, len(pool)),
              "served_engine_share_of_batch_time": moved[5] / moved[1]}
    results = {
        "model": args.model, "dtype": args.dtype, "clients": args.clients, "duration_s": args.duration,
        "warmup_s": args.warmup, "request_sizes": [args.min_size, args.max_size], "pool": len(pool),
        "serve_args": args.serve_args, "threads": args.threads, "requests_ok": len(tally.latencies),
        "requests_per_s": len(tally.latencies) / args.duration, "sentences_per_s": served,
        "sentences_answered_in_window": tally.sentences, "batches_in_window": batches, "model_busy_fraction": busy,
        **percentiles(tally), "errors": tally.errors, "rejected_429": tally.rejected,
        "vector_mismatches": tally.mismatches, "offline_sentences_per_s": offline,
        "offline_sentences_per_s_before_after": [offline_before, offline_after], "ratio": served / offline,
        "load_clients_cpu_cores": client_cpu,
        "server_rss_mib": rss, "server_exit_code": exit_code, "server_stop_s": stop_s,
        "error_samples": tally.error_samples, "scenario": args.scenario, "engine": engine,
    }
    if args.scenario == "mixed":
        results["small_requests"] = {"idle": {"requests": len(idle["small"].latencies), **percentiles(idle["small"])},
                                     "under_load": {"requests": len(tallies["small"].latencies),
                                                    **percentiles(tallies["small"])}}
        results["big_requests"] = {"requests": len(tallies["big"].latencies), **percentiles(tallies["big"])}
    rows = [
        ("requests answered in the window", f"{results['requests_ok']} ({results['requests_per_s']:.2f}/s), "
                                            f"{tally.sentences} sentences"),
        ("sentences/s served (server count, {} batches)".format(batches), f"{served:.2f}"),
        ("model busy", f"{busy:.1%}"),
        ("sentences/s offline encode (before / after the load)",
         f"{offline:.2f} ({offline_before:.2f} / {offline_after:.2f})"),
        ("CPU cores the load clients used", f"{client_cpu:.2f}"),
        ("served / offline", f"{results['ratio']:.1%}"),
        ("latency p50 / p95 / p99", f"{results['latency_p50_s']:.2f} / {results['latency_p95_s']:.2f} / "
                                    f"{results['latency_p99_s']:.2f} s"),
        ("errors / 429 / vector mismatches", f"{tally.errors} / {tally.rejected} / {tally.mismatches}"),
        ("server RSS start / warm / end", f"{rss['start']:.0f} / {rss.get('warm', float('nan')):.0f} / "
                                          f"{rss['end']:.0f} MiB"),
        ("server exit code after SIGTERM", f"{exit_code} (stopped in {stop_s:.1f} s)"),
    ]
    if engine["served"]:
        side = [engine["served"], engine["offline"]]
        rows += [
            ("engine: ms per pass, served / offline", " / ".join(f"{p['ms_per_pass']:.1f}" for p in side)),
            ("engine: ms per padded token, served / offline",
             " / ".join(f"{p['ms_per_padded_token']:.3f}" for p in side)),
            ("engine: padded tokens per sentence, served / offline",
             " / ".join(f"{p['padded_tokens_per_sentence']:.0f}" for p in side)),
            ("engine: padding, served / offline", " / ".join(f"{p['padding']:.1%}" for p in side)),
            ("engine: passes per sentence, served / offline",
             " / ".join(f"{p['passes_per_sentence']:.3f}" for p in side)),
            ("engine seconds / batch seconds (served)", f"{engine['served_engine_share_of_batch_time']:.1%}"),
        ]
    if args.scenario == "mixed":
        small = results["small_requests"]
        rows.insert(0, ("1-sentence requests p50 / p95: idle -> under load",
                        f"{small['idle']['latency_p50_s']:.2f} / {small['idle']['latency_p95_s']:.2f} s -> "
                        f"{small['under_load']['latency_p50_s']:.2f} / {small['under_load']['latency_p95_s']:.2f} s "
                        f"({small['under_load']['requests']} requests)"))
        rows.insert(1, (f"{args.big_size}-sentence requests answered, p50", f"{results['big_requests']['requests']}, "
                                                                          f"{results['big_requests']['latency_p50_s']:.1f} s"))
        print(f"\nmixed: 1 client of {args.big_size}-sentence requests + {args.small_clients} clients of 1 sentence, "
              f"{args.duration:.0f} s (+{args.warmup:.0f} s warm-up), {args.model} {args.dtype}, {len(pool)} STS-B sentences")
    else:
        print(f"\n{args.clients} clients, {args.duration:.0f} s (+{args.warmup:.0f} s warm-up), {args.model} "
              f"{args.dtype}, requests of {args.min_size}-{args.max_size} sentences from {len(pool)} STS-B sentences")
    print("| metric | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    for sample in tally.error_samples:
        print("error:", sample)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Simulate the server's batcher under mixed load, on a simulated clock, in seconds instead of minutes.

The real :class:`metaeol.serve.batcher.Batcher` builds every batch (``run_batch``); only the model
is replaced by a time model: a forward pass costs ``--pass-ms`` plus ``--token-ms`` per token it computes
(the engine's padding-free ``packed`` passes; ``--padded``: per padded token, as in ``broadcast`` passes),
with the passes the engine would cut (:func:`metaeol.engine.plan_batches`, 512-token passes on CPU).
The row costs are the prompt rows of real sentences (the built-in benchmark sentences, or a file),
tokenized by the model's tokenizer. One client sends ``--big-size``-sentence requests back to back
while ``--small-clients`` send one sentence each, as ``bench/serve_load.py --scenario mixed`` does;
offline ``encode`` is modelled as passes over ``--batch-size``-sentence calls.

Use it to rank scheduling changes before spending model time; confirm the winner end to end with
``bench/serve_load.py``. Defaults are SmolLM2-135M fp32 on a 2-core AMD CPU: 98 ms a pass and
1.385 ms a padded token, the line through the server's and offline ``encode``'s mean passes in
one mixed run (``serve_load.py``'s engine rows: 247 padded tokens in 441 ms, 486 in 771 ms). With
them the model gives 82% served at 1 s batches where that run measured 79%; session 9's
37 ms + 1.2 ms, from offline passes alone, gave 92% and hid the cost of part-filled passes (a
pass streams all the weights, about 100 ms in fp32 here, however few its rows).

    python bench/batcher_sim.py --target-batch-ms 500,1000,1500 [--sentences FILE] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import Future
from importlib import resources
from pathlib import Path

import numpy as np

from metaeol.engine import BatchLimits, plan_batches
from metaeol.serve import batcher as batcher_module
from metaeol.serve.app import PASSES_PER_BATCH
from metaeol.serve.batcher import Batcher, BatchReport, Work


class SimulatedClock:
    """Stands in for the ``time`` module inside the batcher: the simulation moves it."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


def passes_seconds(costs: list[int], limits: BatchLimits, pass_s: float, token_s: float, packed: bool) -> float:
    """What the engine takes for rows of these costs: its passes, each a fixed cost plus its tokens
    (padded tokens unless ``packed``)."""
    return sum(pass_s + token_s * (sum(costs[i] for i in rows) if packed else len(rows) * max(costs[i] for i in rows))
               for rows in plan_batches(costs, limits, packed=packed))


def simulate(row_costs: list[list[int]], *, target_batch_s: float | None, max_batch_tokens: int, limits: BatchLimits,
             pass_s: float, token_s: float, packed: bool, big_size: int, small_clients: int, duration: float,
             client_delay_s: float, seed: int) -> dict[str, float]:
    """Served sentences per second and the 1-sentence requests' latencies, on the simulated clock."""
    rng = np.random.default_rng(seed)
    clock = SimulatedClock()
    real_time, batcher_module.time = batcher_module.time, clock
    try:
        def run(units: list[tuple[int, int]]) -> np.ndarray:
            clock.now += passes_seconds([row_costs[s][r] for s, r in units], limits, pass_s, token_s, packed)
            return np.zeros((len(units), 1), dtype=np.float32)

        def expand(texts: list[str]) -> Work:
            units = [(int(t), r) for t in texts for r in range(len(row_costs[int(t)]))]
            return Work(units, [row_costs[s][r] for s, r in units])

        served = [0.0]  # inputs' worth of work computed, as the server counts it (metaeol_batch_inputs)

        def count(report: BatchReport) -> None:
            served[0] += report.inputs

        batcher = Batcher(run, expand=expand, max_batch_tokens=max_batch_tokens, max_wait_s=0.0, max_queue=1024,
                          target_batch_s=target_batch_s, pass_tokens=limits.max_tokens, on_batch=count)
        arrivals: list[tuple[float, str]] = [(0.0, "big")] + [(0.0, "small")] * small_clients
        latencies: list[float] = []

        def send(sent: float, kind: str) -> None:
            """A request that arrived at ``sent`` (while the batch then running was computed)."""
            size = big_size if kind == "big" else 1
            texts = [str(i) for i in rng.integers(len(row_costs), size=size)]
            future: Future = batcher.submit(texts, [1] * size)

            def done(_: Future) -> None:
                if kind == "small":
                    latencies.append(clock.now - sent)
                arrivals.append((clock.now + client_delay_s, kind))

            future.add_done_callback(done)

        while clock.now < duration:
            arrivals.sort()
            while arrivals and arrivals[0][0] <= clock.now:
                send(*arrivals.pop(0))
            if not batcher.run_batch():
                clock.now = arrivals[0][0]
        return {"served_per_s": served[0] / clock.now,
                "small_p50_s": float(np.percentile(latencies, 50)), "small_p95_s": float(np.percentile(latencies, 95)),
                "small_requests": len(latencies)}
    finally:
        batcher_module.time = real_time


def offline_per_s(row_costs: list[list[int]], batch_size: int, limits: BatchLimits, pass_s: float,
                  token_s: float, packed: bool) -> float:
    """Sentences per second of ``encode`` calls of ``batch_size`` sentences under the same time model."""
    seconds = 0.0
    for start in range(0, len(row_costs), batch_size):
        seconds += passes_seconds([c for costs in row_costs[start:start + batch_size] for c in costs], limits,
                                  pass_s, token_s, packed)
    return len(row_costs) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", default=None, help="model whose tokenizer and prompts give the row costs "
                                                            "(default: the offline default model)")
    parser.add_argument("--sentences", type=Path, help="one sentence per line (default: the built-in sample)")
    parser.add_argument("--target-batch-ms", default="1000", help="comma-separated; 0 = always the cap")
    parser.add_argument("--passes-per-batch", type=int, default=PASSES_PER_BATCH, help="batch cap in engine passes")
    parser.add_argument("--pass-tokens", type=int, default=512, help="engine pass size (CPU default 512)")
    parser.add_argument("--pass-ms", type=float, default=98.0)
    parser.add_argument("--token-ms", type=float, default=1.385)
    parser.add_argument("--padded", action="store_true", help="model padded passes (prefix_attention broadcast)")
    parser.add_argument("--big-size", type=int, default=256)
    parser.add_argument("--small-clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3000.0, help="simulated seconds")
    parser.add_argument("--client-delay-ms", type=float, default=10.0, help="a client's turnaround between requests")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per offline encode call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from metaeol import MetaEOL
    from metaeol.loading import DEFAULT_MODEL

    text = (args.sentences.read_text(encoding="utf-8") if args.sentences
            else (resources.files("metaeol") / "data" / "bench_sentences.txt").read_text(encoding="utf-8"))
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    encoder = MetaEOL(args.model or DEFAULT_MODEL)
    rows = encoder.prompt_rows(sentences)
    per = len(encoder.prompt_set)
    costs = list(rows.costs)
    row_costs = [costs[i * per:(i + 1) * per] for i in range(len(sentences))]
    limits = BatchLimits(max_tokens=args.pass_tokens)
    pass_s, token_s = args.pass_ms / 1000, args.token_ms / 1000
    offline = offline_per_s(row_costs, args.batch_size, limits, pass_s, token_s, not args.padded)
    print(f"offline encode (modelled): {offline:.2f} sentences/s; {len(sentences)} sentences, {per} rows each")
    results = []
    for target in (float(t) for t in args.target_batch_ms.split(",")):
        result = simulate(row_costs, target_batch_s=target / 1000 or None,
                          max_batch_tokens=args.passes_per_batch * args.pass_tokens, limits=limits, pass_s=pass_s,
                          token_s=token_s, packed=not args.padded, big_size=args.big_size, small_clients=args.small_clients,
                          duration=args.duration, client_delay_s=args.client_delay_ms / 1000, seed=args.seed)
        result.update(target_batch_ms=target, served_fraction=result["served_per_s"] / offline)
        results.append(result)
        print(f"target {target:6.0f} ms: 1-sentence p50/p95 {result['small_p50_s']:.2f}/{result['small_p95_s']:.2f} s "
              f"({result['small_requests']} requests), served {result['served_fraction']:.1%} of offline")
    if args.json:
        args.json.write_text(json.dumps({"offline_per_s": offline, "runs": results, "args": {
            k: str(v) for k, v in vars(args).items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The server's scheduler under mixed load, in one process and without HTTP: one client sends
large requests back to back while small clients send 1-sentence requests, through
:class:`~metaeol.serve.batcher.Batcher` on the real encoder, exactly as ``metaeol serve`` wires it
(prompt rows, one pass per batch). Served sentences/s are compared with ``encode`` of the large
request's sentences in the same process (on the main thread, as a user runs it), so the ratio
measures the scheduling alone (bench/serve_load.py measures the whole server, HTTP and clients included).

    python bench/batcher_mixed.py --duration 60 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

from metaeol import MetaEOL
from metaeol.evaluation.data import load_task, resolve_data_root
from metaeol.loading import DEFAULT_MODEL
from metaeol.openmp import release_thread_pool
from metaeol.serve.app import PASSES_PER_BATCH
from metaeol.serve.batcher import Batcher
from metaeol.serve.rows import prompt_row_work, run_prompt_rows


def offline(encoder: MetaEOL, sentences: list[str]) -> float:
    """Sentences/s of one ``encode`` call, as a user runs it (on this, the main, thread)."""
    start = time.perf_counter()
    encoder.encode(sentences, show_progress_bar=False)
    return len(sentences) / (time.perf_counter() - start)


def mixed(encoder: MetaEOL, large: list[str], small_pool: list[str], clients: int, duration: float) -> dict:
    batcher = Batcher(lambda units: run_prompt_rows(encoder, units, 32),
                      expand=lambda texts: prompt_row_work(encoder, texts, False),
                      max_batch_tokens=PASSES_PER_BATCH * encoder.max_batch_tokens, max_wait_s=0.005, max_queue=64, target_batch_s=1.0)
    release_thread_pool()  # as the server's startup does: the model runs on the batcher's thread
    batcher.start()
    batcher.submit(small_pool[:3], [1] * 3).result()
    stop = threading.Event()
    latencies: list[float] = []

    def small_client(k: int) -> None:
        i = 0
        while not stop.is_set():
            sentence = small_pool[(k * 37 + i) % len(small_pool)]
            i += 1
            start = time.perf_counter()
            batcher.submit([sentence], [1]).result()
            latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=small_client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    large_done = 0
    while time.perf_counter() - start < duration:
        batcher.submit(large, [1] * len(large)).result()
        large_done += len(large)
    seconds = time.perf_counter() - start
    stop.set()
    for thread in threads:
        thread.join()
    batcher.close()
    batcher.join(5)
    return {"served_per_s": (large_done + len(latencies)) / seconds, "small_requests": len(latencies),
            "small_p50_s": float(np.percentile(latencies, 50)), "small_p95_s": float(np.percentile(latencies, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--large", type=int, default=64, help="sentences per large request")
    parser.add_argument("--clients", type=int, default=4, help="clients sending 1-sentence requests")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per measured run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=None, help="SentEval data root")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    task = load_task("STS-B", resolve_data_root(args.data), split="test")
    pool = list(dict.fromkeys(task.splits["test"].sent1))
    large, small_pool = pool[: args.large], pool[args.large : args.large + 150]
    encoder = MetaEOL(args.model, dtype=args.dtype)
    encoder.encode(pool[:4], show_progress_bar=False)
    runs = []
    for _ in range(args.repeats):
        offline_rate = offline(encoder, large)
        run = {"offline_per_s": offline_rate, **mixed(encoder, large, small_pool, args.clients, args.duration)}
        run["served_over_offline"] = run["served_per_s"] / offline_rate
        runs.append(run)
        print(f"served {run['served_per_s']:.2f} sent/s, offline {offline_rate:.2f} ({run['served_over_offline']:.1%}); "
              f"1-sentence p50/p95 {run['small_p50_s']:.2f}/{run['small_p95_s']:.2f} s "
              f"({run['small_requests']} requests)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": encoder.describe(), "args": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()

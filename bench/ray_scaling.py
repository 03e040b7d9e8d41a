"""Ray scale-out overhead on one machine: the same STS-B sentences through single-process
``encode`` and through ``metaeol.ray.embed_dataset`` with 1 actor x N threads and N actors x
1 thread (N = --cpus), in one run. Prints sentences/s, the ratio to single-process, when the
first batch came back (actor start-up and model load are inside the Ray wall time) and the
smallest cosine between Ray's and single-process embeddings.

    PYTHONPATH=. python bench/ray_scaling.py                      # 5000 sentences, SmolLM2-135M-Instruct, 2 CPUs
    PYTHONPATH=. python bench/ray_scaling.py --sentences 64 --model ../shared/models/stories260K/stories260K.gguf
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np
import torch

from metaeol import MetaEOL
from metaeol.loading import DEFAULT_MODEL
from throughput import stsb_sentences  # bench/ is the script's directory


def single_process(model: str, sentences: list[str], threads: int, batch_size: int) -> tuple[float, np.ndarray]:
    torch.set_num_threads(threads)
    encoder = MetaEOL(model)
    encoder.encode(sentences[:8], batch_size=batch_size, show_progress_bar=False)  # warm-up
    started = time.perf_counter()
    vectors = encoder.encode(sentences, batch_size=batch_size, show_progress_bar=False)
    return time.perf_counter() - started, vectors


def through_ray(model: str, sentences: list[str], actors: int, threads: int, rows_per_call: int,
                batch_size: int) -> tuple[float, float, np.ndarray]:
    """(wall seconds, seconds to the first batch, embeddings in input order)."""
    import ray.data

    from metaeol.ray import embed_dataset

    items = [{"row_id": i, "text": s} for i, s in enumerate(sentences)]
    blocks = -(-len(items) // rows_per_call)
    started = time.perf_counter()
    ds = embed_dataset(ray.data.from_items(items, override_num_blocks=blocks), model=model, num_actors=actors,
                       threads_per_actor=threads, batch_size=rows_per_call, encode_batch_size=batch_size)
    first, ids, vectors = None, [], []
    for batch in ds.select_columns(["row_id", "embedding"]).iter_batches(batch_format="pyarrow", batch_size=None):
        first = first if first is not None else time.perf_counter() - started
        ids.extend(batch.column("row_id").to_pylist())
        vectors.append(np.array(batch.column("embedding").to_pylist(), dtype=np.float32))
    wall = time.perf_counter() - started
    if sorted(ids) != list(range(len(sentences))):
        raise RuntimeError("Ray did not return every row exactly once")
    out = np.empty((len(ids), vectors[0].shape[1]), dtype=np.float32)
    out[ids] = np.concatenate(vectors)
    return wall, first, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "senteval"))
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--cpus", type=int, default=2, help="cores for every configuration")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per forward pass")
    parser.add_argument("--rows-per-call", type=int, default=500,
                        help="rows per Ray actor call (5000 / 500 = 10 calls: an even split over 1 or 2 actors)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import ray
    import ray.data

    sentences = stsb_sentences(Path(args.data), args.sentences)
    seconds, reference = single_process(args.model, sentences, args.cpus, args.batch_size)
    gc.collect()
    rows = [{"setup": f"single process, {args.cpus} threads", "seconds": seconds, "first_batch": None,
             "min_cosine": 1.0}]
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    for actors, threads in ((1, args.cpus), (args.cpus, 1)):
        wall, first, vectors = through_ray(args.model, sentences, actors, threads, args.rows_per_call,
                                           args.batch_size)
        cos = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        rows.append({"setup": f"Ray, {actors} actor(s) x {threads} thread(s)", "seconds": wall,
                     "first_batch": first, "min_cosine": float(cos.min())})
    ray.shutdown()

    print(f"model {args.model}, {len(sentences)} STS-B sentences, {args.cpus} CPUs, torch {torch.__version__}")
    print(f"{'setup':<34} {'seconds':>8} {'sent/s':>8} {'vs single':>9} {'1st batch s':>11} {'min cos':>9}")
    for row in rows:
        row["sent_per_s"] = len(sentences) / row["seconds"]
        row["ratio"] = row["sent_per_s"] / rows[0]["sent_per_s"]
        first = "" if row["first_batch"] is None else f"{row['first_batch']:.1f}"
        print(f"{row['setup']:<34} {row['seconds']:>8.1f} {row['sent_per_s']:>8.1f} {row['ratio']:>8.2f}x "
              f"{first:>11} {row['min_cosine']:>9.6f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

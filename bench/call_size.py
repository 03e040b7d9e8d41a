"""Sentences/s of `MetaEOL.encode` by the number of sentences per call, in input order and sorted by
length: what a server's short batches cost against offline batches (bench/serve_load.py).

    python bench/call_size.py --sentences 96 --sizes 32,5,3
"""

from __future__ import annotations

import argparse
import time

from metaeol import MetaEOL
from metaeol.evaluation.data import load_task, resolve_data_root
from metaeol.loading import DEFAULT_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--sentences", type=int, default=96, help="distinct STS-B test sentences")
    parser.add_argument("--sizes", default="32,5,3", help="sentences per encode call, comma-separated")
    parser.add_argument("--data", default=None, help="SentEval data root")
    args = parser.parse_args()

    task = load_task("STS-B", resolve_data_root(args.data), split="test")
    pool = list(dict.fromkeys(task.splits["test"].sent1))[: args.sentences]
    encoder = MetaEOL(args.model, dtype=args.dtype)
    encoder.encode(pool[:4], show_progress_bar=False)  # prefix states, kernels
    by_length = sorted(pool, key=lambda s: len(encoder.tokenizer(s)["input_ids"]))
    print(f"{encoder.model_key}, {len(pool)} sentences; sentences/s by sentences per call")
    print("| order | " + " | ".join(args.sizes.split(",")) + " |\n|---|" + "---|" * len(args.sizes.split(",")))
    for name, items in (("input order", pool), ("sorted by length", by_length)):
        rates = []
        for size in (int(x) for x in args.sizes.split(",")):
            start = time.perf_counter()
            for i in range(0, len(items), size):
                encoder.encode(items[i : i + size], show_progress_bar=False)
            rates.append(len(items) / (time.perf_counter() - start))
        print(f"| {name} | " + " | ".join(f"{r:.2f}" for r in rates) + " |")


if __name__ == "__main__":
    main()

"""Encode time of MetaEOL with and without the boosters, on the same STS-B dev sentences, in one process.

The settings run interleaved (best of --repeats), so a busy machine slows them alike:

    python bench/boosters.py --model HuggingFaceTB/SmolLM2-135M-Instruct --sentences 48 \\
        --token-prepending 1:7 --contrastive 4:0.5 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time

from metaeol import MetaEOL
from metaeol.boosters import ContrastivePrompting, TokenPrepending
from metaeol.evaluation.data import load_task, resolve_data_root
from metaeol.loading import DEFAULT_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--prompts", default="metaeol")
    parser.add_argument("--sentences", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--token-prepending", default="1:7", metavar="START:END")
    parser.add_argument("--contrastive", default="4:0.5", metavar="LAYER:SCALE")
    parser.add_argument("--data", default=None, help="SentEval data root")
    args = parser.parse_args()

    sentences = load_task("STS-B", resolve_data_root(args.data), split="dev").sentences()[: args.sentences]
    plain = MetaEOL(args.model, args.prompts, dtype=args.dtype)
    tp, cp = TokenPrepending.parse(args.token_prepending), ContrastivePrompting.parse(args.contrastive)
    shared = {"tokenizer": plain.tokenizer, "prompts": args.prompts}
    encoders = {
        "MetaEOL": plain,
        f"+ TP {args.token_prepending}": MetaEOL(plain.model, token_prepending=tp, **shared),
        f"+ CP {args.contrastive}": MetaEOL(plain.model, contrastive=cp, **shared),
        "+ TP + CP": MetaEOL(plain.model, token_prepending=tp, contrastive=cp, **shared),
    }
    for encoder in encoders.values():
        encoder.encode(sentences[:4])  # builds each engine's prefix states
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.repeats):
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode(sentences)
            times[name].append(time.perf_counter() - start)
    base = min(times["MetaEOL"])
    print(f"{plain.model_key}, {len(sentences)} sentences x {len(plain.prompt_set)} templates, best of {args.repeats}:")
    for name, values in times.items():
        print(f"  {name:24s} {min(values):7.2f} s   x{min(values) / base:.3f}")


if __name__ == "__main__":
    main()

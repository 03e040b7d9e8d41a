"""Encode time of MetaEOL with each booster and method, on the same STS-B dev sentences, in one process.

Every row runs at the same layer on the same sentences, interleaved, best of --repeats after a
warm-up (``metaeol.evaluation.encode_cost.time_encoders``), so a busy machine slows them alike:

    python bench/method_cost.py --dtype bfloat16 --sentences 64 --json bench/results/method_cost.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metaeol import MetaEOL
from metaeol.boosters import ContrastivePrompting, TokenPrepending
from metaeol.evaluation.data import load_task, resolve_data_root
from metaeol.evaluation.encode_cost import time_encoders
from metaeol.loading import DEFAULT_MODEL
from metaeol.versions import library_versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--layer", type=int, default=-1)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--token-prepending", default="1:4", metavar="START:END")
    parser.add_argument("--contrastive", default="4:0.5", metavar="LAYER:SCALE")
    parser.add_argument("--demonstrations", default="scaling_sentemb:opt-125m", metavar="SPEC")
    parser.add_argument("--embed-filter", type=int, default=2, metavar="RATIO")
    parser.add_argument("--data", default=None, help="SentEval data root")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    sentences = load_task("STS-B", resolve_data_root(args.data), split="dev").sentences()[: args.sentences]
    plain = MetaEOL(args.model, dtype=args.dtype, layer=args.layer)
    tp, cp = TokenPrepending.parse(args.token_prepending), ContrastivePrompting.parse(args.contrastive)
    official = TokenPrepending.parse(args.token_prepending, placement="official")

    def on_model(prompts: str = "metaeol", **options) -> MetaEOL:
        return MetaEOL(plain.model, prompts, tokenizer=plain.tokenizer, layer=args.layer, **options)

    encoders = {
        "MetaEOL": plain,
        "PromptEOL": on_model("prompteol"),
        f"+ ICL {args.demonstrations}": on_model(demonstrations=args.demonstrations),
        f"+ EmbedFilter {args.embed_filter}": on_model(embed_filter=args.embed_filter),
        f"+ TP {args.token_prepending}": on_model(token_prepending=tp),
        f"+ TP {args.token_prepending} official": on_model(token_prepending=official),
        f"+ CP {args.contrastive}": on_model(contrastive=cp),
        "+ CP + ICL": on_model(contrastive=cp, demonstrations=args.demonstrations),
        f"+ CP + ICL + EmbedFilter {args.embed_filter}": on_model(contrastive=cp, demonstrations=args.demonstrations,
                                                               embed_filter=args.embed_filter),
        "echo (last)": on_model("echo"),
        "echo (mean)": on_model("echo", pooling="mean"),
    }
    seconds = time_encoders(encoders, sentences, repeats=args.repeats)
    base = seconds["MetaEOL"]
    print(f"{plain.model_key}, layer {args.layer}, {len(sentences)} STS-B dev sentences, best of {args.repeats}:")
    print("| row | ms per sentence | relative to MetaEOL |\n|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value * 1000:.1f} | {value / base:.3f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": plain.describe(), "layer": args.layer, "sentences": len(sentences), "repeats": args.repeats,
            "seconds_per_sentence": seconds, "relative": {name: value / base for name, value in seconds.items()},
            "versions": library_versions()}, indent=1) + "\n")


if __name__ == "__main__":
    main()

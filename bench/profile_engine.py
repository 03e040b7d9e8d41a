"""Where the engine's CPU time goes: a torch-profiler breakdown of one encode run.

    python bench/profile_engine.py --sentences 64 --dtype float32

Groups operator self-time into matmuls, attention, normalisation and activations,
element-wise/copy work and the rest, and reports the wall time spent outside operators
(tokenization, batching, hooks, Python).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from metaeol import MetaEOL
from metaeol.evaluation.data import resolve_data_root
from metaeol.loading import DEFAULT_MODEL

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm", "aten::einsum"),
    "attention softmax/sdpa": ("aten::_softmax", "aten::softmax", "aten::scaled_dot_product_attention",
                               "aten::_scaled_dot_product_flash_attention_for_cpu",
                               "aten::_scaled_dot_product_attention_math"),
    "norm + activation": ("aten::rsqrt", "aten::pow", "aten::mean", "aten::silu", "aten::sigmoid"),
    "element-wise": ("aten::mul", "aten::add", "aten::add_", "aten::cat", "aten::neg", "aten::sub", "aten::div",
                     "aten::masked_fill_", "aten::where"),
    "copies/layout": ("aten::copy_", "aten::contiguous", "aten::clone", "aten::to", "aten::_to_copy",
                      "aten::index", "aten::index_select", "aten::embedding", "aten::expand", "aten::reshape",
                      "aten::view", "aten::transpose", "aten::slice", "aten::select", "aten::unsqueeze"),
}


def sentences_from_stsb(root: Path, n: int) -> list[str]:
    from metaeol.evaluation.data import load_task

    pairs = load_task("STS-B", root).splits["test"]
    return list(dict.fromkeys(pairs.sent1 + pairs.sent2))[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", default=None)
    parser.add_argument("--rows", type=int, default=25, help="Top operators listed.")
    args = parser.parse_args()
    sentences = sentences_from_stsb(resolve_data_root(args.data), args.sentences)
    encoder = MetaEOL(args.model, dtype=args.dtype)
    encoder.encode(sentences[:4], batch_size=args.batch_size)  # warm-up: prefix states, kernel choice
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        encoder.encode(sentences, batch_size=args.batch_size)
    wall = time.perf_counter() - started
    events = prof.key_averages()
    self_us: dict[str, float] = defaultdict(float)
    for event in events:
        group = next((g for g, names in GROUPS.items() if event.key in names), "other operators")
        self_us[group] += event.self_cpu_time_total
    total_ops = sum(self_us.values()) / 1e6
    print(f"model {encoder.model_name}, dtype {args.dtype}, {len(sentences)} sentences, torch threads "
          f"{torch.get_num_threads()}: wall {wall:.2f} s (profiled), operators {total_ops:.2f} s")
    print(f"{'group':<26}{'seconds':>9}{'share of wall':>15}")
    for group, us in sorted(self_us.items(), key=lambda kv: -kv[1]):
        print(f"{group:<26}{us / 1e6:9.2f}{us / 1e6 / wall:15.1%}")
    outside = wall - total_ops
    print(f"{'outside operators':<26}{outside:9.2f}{outside / wall:15.1%}   (tokenization, batching, hooks, Python)")
    print()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()

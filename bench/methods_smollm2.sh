#!/bin/bash
# The full-size method table on SmolLM2-135M-Instruct (issue 22): every step chooses its settings on
# all STS-B dev pairs (the sweeps: layers, boosters and methods; then one demonstration per template
# and a meta-task subset for the best stack), scores the seven STS test sets in full, and goes
# through one vector store, so a killed run resumes where it stopped when started again; a step
# whose results.json exists is not run again (delete it to redo the step). Hours on a 2-core CPU
# (run one job at a time: two share the cores far worse than in turn); in the background:
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

# The best stack with one demonstration per template, chosen on dev under the stack's CP 4:0.5 and
# EmbedFilter 2; then the meta-task subset of its templates, chosen on dev. These are `metaeol eval` rows.
STACK=(--dtype bfloat16 --contrastive 4:0.5 --embed-filter 2 --store "$RUNS/vectors.db" --no-progress)
if [[ ! -f "$RUNS/per-template.yaml" ]]; then
  nice -n 10 metaeol demonstrations select --pool metaeol_tasks "${STACK[@]}" -o "$RUNS/per-template.yaml" \
    > "$RUNS/per-template.log" 2>&1
fi
DEMOS="$RUNS/per-template.yaml"
evaluate() {  # NAME TASKS [eval options]: the stack with $DEMOS scored once, skipped when done
  local name=$1 tasks=$2; shift 2
  [[ -f "$RUNS/$name/results.json" ]] && return
  nice -n 10 metaeol eval --tasks "$tasks" "${STACK[@]}" --demonstrations "$DEMOS" "$@" \
    -o "$RUNS/$name" > "$RUNS/$name.log" 2>&1
}
SUBSETS=(TC SA PI IE TC,SA TC,PI TC,IE SA,PI SA,IE PI,IE TC,SA,PI TC,SA,IE TC,PI,IE SA,PI,IE)
evaluate stack-dev STS-B:dev
for subset in "${SUBSETS[@]}"; do evaluate "stack-dev-$subset" STS-B:dev --meta-tasks "$subset"; done
best=$(python - "$RUNS" "${SUBSETS[@]}" <<'PY'
import json, sys
runs, subsets = sys.argv[1], sys.argv[2:]
score = lambda name: json.load(open(f"{runs}/{name}/results.json"))["results"]["STS-B"]["score"]
print(max(subsets, key=lambda s: score(f"stack-dev-{s}")) if max(score(f"stack-dev-{s}") for s in subsets)
      > score("stack-dev") else "")
PY
)
evaluate stack-test sts
EXTRA=(--eval-row "metaeol + CP + ICL per template + EmbedFilter" "$RUNS/stack-dev/results.json" "$RUNS/stack-test/results.json")
row="metaeol + CP + ICL per template + EmbedFilter" row_dev="$RUNS/stack-dev/results.json"
if [[ -n "$best" ]]; then
  evaluate "stack-test-$best" sts --meta-tasks "$best"
  row="the same, ${best//,/+} templates" row_dev="$RUNS/stack-dev-$best/results.json"
  EXTRA+=(--eval-row "$row" "$RUNS/stack-dev-$best/results.json" "$RUNS/stack-test-$best/results.json")
  # those templates' demonstrations chosen as a set (`select --joint`); the stack when it wins on dev
  if [[ ! -f "$RUNS/joint.yaml" ]]; then
    nice -n 10 metaeol demonstrations select --pool metaeol_tasks "${STACK[@]}" --meta-tasks "$best" --joint \
      -o "$RUNS/joint.yaml.part" > "$RUNS/joint.log" 2>&1
    mv "$RUNS/joint.yaml.part" "$RUNS/joint.yaml"
  fi
  DEMOS="$RUNS/joint.yaml" evaluate "stack-dev-joint" STS-B:dev --meta-tasks "$best"
  if python - "$RUNS/stack-dev-joint/results.json" "$RUNS/stack-dev-$best/results.json" <<'PY'
import json, sys
score = lambda path: json.load(open(path))["results"]["STS-B"]["score"]
sys.exit(0 if score(sys.argv[1]) > score(sys.argv[2]) else 1)
PY
  then
    DEMOS="$RUNS/joint.yaml"
    evaluate stack-test-joint sts --meta-tasks "$best"
    row="the same, demonstrations chosen as a set" row_dev="$RUNS/stack-dev-joint/results.json"
    EXTRA+=(--eval-row "$row" "$RUNS/stack-dev-joint/results.json" "$RUNS/stack-test-joint/results.json")
  fi
fi
python "$(dirname "$0")/methods_table.py" "$RUNS/methods/results.json" "$RUNS/tp/results.json" \
  "$RUNS/echo-mean/results.json" "$RUNS/echo-last/results.json" "${EXTRA[@]}" --output "$RUNS/methods_smollm2"

# The seven transfer tasks (SentEval protocol) for the best stack, a task per folder (each finished task
# is kept; about 5 hours in bf16 on a 2-core CPU, SST2's 70k sentences half of it), then their section
# of the table. Tasks already scored in bench/results/transfer_smollm2/ by the row's encoder settings
# are taken from there.
same_settings() {  # RESULTS_A RESULTS_B: both scored with the same encoder settings
  python - "$1" "$2" <<'PY'
import json, sys
settings = lambda path: json.load(open(path))["config"]["encoder_settings"]
sys.exit(0 if settings(sys.argv[1]) == settings(sys.argv[2]) else 1)
PY
}
for task in MPQA CR TREC MR SUBJ MRPC SST2; do
  kept="$(dirname "$0")/results/transfer_smollm2/$task/results.json"
  if [[ -f "$kept" && ! -f "$RUNS/transfer-$task/results.json" ]] && same_settings "$kept" "$row_dev"; then
    mkdir -p "$RUNS/transfer-$task" && cp "$kept" "$RUNS/transfer-$task/"
  fi
  evaluate "transfer-$task" "$task" ${best:+--meta-tasks "$best"}
done
python "$(dirname "$0")/transfer_table.py" "$RUNS"/transfer-*/results.json --name "$row" --update "$RUNS/methods_smollm2"

#!/bin/bash
# session 18: one-shot agreement with the hearing 4-gram in the beam (weight 0.3) and the LLM's pick among 3, on the
# 576 template and 351 blind free questions (one thread each; code: a clone of 2a8cccd with the new bundle.json and
# hearing_lm.npz)
set -uo pipefail
cd /work/runs/v18/code
W=/work/runs
B=/work/runs/v18/code/assistant/default_model
O=$W/v18
t() { echo "[$(date +%T)] $*"; }
ev() {  # ASR_MANIFEST QUESTIONS OUT N_ASR N_QUESTIONS
  OMP_NUM_THREADS=1 /work/main/.venv/bin/python -c "import sys; from assistant.cli import main; sys.argv[0]='llasm-assistant'; sys.exit(main())" \
    evaluate --bundle $B --asr $1 --questions $2 --out $O/$3 \
    --n-asr $4 --n-questions $5 --threads 1 --no-latency > $O/$3.log 2>&1; t "$3 rc=$?"; }
t start
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v14/free2_$s/eval.jsonl evf_ng_$s 1 117 & done; wait
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v10/q200_$s/eval.jsonl ev_ng_$s 1 192 & done; wait
touch $O/ev18.done

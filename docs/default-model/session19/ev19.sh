#!/bin/bash
# session 19: one-shot agreement of bundle B on the 576 template and 351 blind held-out questions (one thread a run,
# as session 18's ev18.sh)
set -uo pipefail
cd /work/main
W=/work/runs/v19
B=$1; L=$2
t() { echo "[$(date +%T)] $*"; }
ev() {  # QUESTIONS OUT N_QUESTIONS
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $B --asr $W/asr/eval.jsonl --questions $1 --out $W/$2 \
    --n-asr 1 --n-questions $3 --threads 1 --no-latency > $W/$2.log 2>&1; t "$2 rc=$?"; }
t start
for s in unseen matched; do ev $W/q200_$s/eval.jsonl ev_${L}_$s 192 & done; wait
ev $W/q200_clean/eval.jsonl ev_${L}_clean 192 & ev $W/free2_unseen/eval.jsonl evf_${L}_unseen 117 & wait
for s in matched clean; do ev $W/free2_$s/eval.jsonl evf_${L}_$s 117 & done; wait
touch $W/ev19_$L.done

#!/bin/bash
# session 20: one-shot agreement of bundle B on the 576 template held-out questions, then the 351 blind ones
# (session 19's evaluation sets, one thread a run, as ev19.sh). ev20.sh BUNDLE LABEL [blind]
set -uo pipefail
cd /work/main
V=/work/runs/v19
W=/work/runs/v20
B=$1; L=$2
t() { echo "[$(date +%T)] $*"; }
ev() {  # QUESTIONS OUT N_QUESTIONS
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $B --asr $V/asr/eval.jsonl --questions $1 --out $W/$2 \
    --n-asr 1 --n-questions $3 --threads 1 --no-latency > $W/$2.log 2>&1; t "$2 rc=$?"; }
t start
ev $V/q200_unseen/eval.jsonl ev_${L}_unseen 192 & ev $V/q200_matched/eval.jsonl ev_${L}_matched 192 & wait
ev $V/q200_clean/eval.jsonl ev_${L}_clean 192 &
if [ "${3:-}" = blind ]; then
  ev $V/free2_unseen/eval.jsonl evf_${L}_unseen 117 & wait
  for s in matched clean; do ev $V/free2_$s/eval.jsonl evf_${L}_$s 117 & done
fi
wait
touch $W/ev20_$L.done

#!/bin/bash
# session 14: the same agreement measurement for session 13's bundle (the baseline), three splits side by side
cd /work/main
G=/work/runs/v14
t() { echo "[$(date +%T)] $*"; }
t start
ev() {  # BUNDLE TAG SPLIT
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $1 --asr /work/runs/e2e/asr/eval.jsonl \
    --questions $G/free2_$3/eval.jsonl --out $G/evf_$2_$3 --n-asr 1 --n-questions 117 --threads 1 --no-latency \
    > $G/evf_$2_$3.log 2>&1; t "evf $2 $3 rc=$?"; }
ev /work/runs/e2e_s13/bundle s13 unseen & ev /work/runs/e2e_s13/bundle s13 matched &
ev /work/runs/e2e_s13/bundle s13 clean; wait
touch $G/free_ev13.done

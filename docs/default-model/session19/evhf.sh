#!/bin/bash
# session 19: hands-free hearing (--n-best 4 --fusion 0.5; the 4-gram stands aside) on the 576 template questions,
# the shipped bundle, one thread a run
set -uo pipefail
cd /work/main
W=/work/runs/v19
B=$W/e2e/bundle
t() { echo "[$(date +%T)] $*"; }
ev() {  # SPLIT
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $B --asr $W/asr/eval.jsonl --questions $W/q200_$1/eval.jsonl \
    --out $W/evhf_$1 --n-asr 1 --n-questions 192 --threads 1 --no-latency --n-best 4 --fusion 0.5 > $W/evhf_$1.log 2>&1; t "$1 rc=$?"; }
t start
ev unseen & ev matched & ev clean & wait
touch $W/evhf.done

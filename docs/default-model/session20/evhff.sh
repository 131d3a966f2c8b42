#!/bin/bash
# session 20: hands-free agreement (--n-best 4 --fusion 0.5) on the 351 blind questions, the shipped bundle, one
# thread a run
set -uo pipefail
cd /work/main
V=/work/runs/v19
W=/work/runs/v20
B=$W/e2e/bundle
t() { echo "[$(date +%T)] $*"; }
while [ ! -f $W/post20.done ]; do sleep 20; done
ev() {  # SPLIT
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $B --asr $V/asr/eval.jsonl --questions $V/free2_$1/eval.jsonl \
    --out $W/evhff_$1 --n-asr 1 --n-questions 117 --threads 1 --no-latency --n-best 4 --fusion 0.5 > $W/evhff_$1.log 2>&1; t "$1 rc=$?"; }
t start
ev unseen & ev matched & wait
ev clean
touch $W/evhff.done

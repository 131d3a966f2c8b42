#!/bin/bash
# session 20: one-shot agreement of bundle B on the 351 blind held-out questions (session 19's sets, one thread
# a run). evf20.sh BUNDLE LABEL
set -uo pipefail
cd /work/main
V=/work/runs/v19
W=/work/runs/v20
B=$1; L=$2
t() { echo "[$(date +%T)] $*"; }
ev() {  # SPLIT
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $B --asr $V/asr/eval.jsonl --questions $V/free2_$1/eval.jsonl \
    --out $W/evf_${L}_$1 --n-asr 1 --n-questions 117 --threads 1 --no-latency > $W/evf_${L}_$1.log 2>&1; t "$1 rc=$?"; }
t start
ev unseen & ev matched & wait
ev clean
touch $W/evf20_$L.done

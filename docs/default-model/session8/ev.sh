#!/bin/bash
# session 8: the shipped bundle with --n-best 8 on session 7's 192 held-out questions a split
set -uo pipefail
cd /work/main
W=/work/runs
t() { echo "[$(date +%T)] $*"; }
ev() {  # ASR SPLIT
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --asr $W/$1/eval.jsonl --questions $W/v7/q200_$2/eval.jsonl \
    --out $W/v8/ev_nb8_$2 --n-asr 1 --n-questions 192 --threads 1 --no-latency --n-best 8 > $W/v8/ev_nb8_$2.log 2>&1; t "ev $2 rc=$?"; }
t start
ev asr8k unseen & ev asr_matched matched & ev asr_clean clean & wait
touch $W/v8/ev.done

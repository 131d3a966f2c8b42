#!/bin/bash
# session 9: the new bundle (stage 1b with 12,000 spoken questions, stage 2 again) on session 7's 192 held-out
# questions a split, greedy (with 60 ASR clips for the WER) and --n-best 8
set -uo pipefail
cd /work/main
W=/work/runs
B=$W/v9/bundle-qw
t() { echo "[$(date +%T)] $*"; }
ev() {  # ASR SPLIT TAG N_ASR N_BEST
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $B --asr $W/$1/eval.jsonl --questions $W/v7/q200_$2/eval.jsonl \
    --out $W/v9/ev_$3_$2 --n-asr $4 --n-questions 192 --threads 1 --no-latency --n-best $5 > $W/v9/ev_$3_$2.log 2>&1; t "ev $3 $2 rc=$?"; }
t start
ev asr8k unseen g 60 1 & ev asr_matched matched g 60 1 & ev asr_clean clean g 60 1 &
ev asr8k unseen nb8 1 8 & ev asr_matched matched nb8 1 8 & ev asr_clean clean nb8 1 8 & wait
touch $W/v9/ev.done

#!/bin/bash
# session 14: the everyday-questions bundle on session 7's 192 held-out questions a split (rebuilt in session 10 from
# their seed): greedy (with 60 ASR clips for the WER) and --n-best 8
set -uo pipefail
cd /work/main
W=/work/runs
B=${1:-$W/e2e/bundle}
t() { echo "[$(date +%T)] $*"; }
ev() {  # ASR SPLIT TAG N_ASR N_BEST
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $B --asr $W/e2e/$1/eval.jsonl \
    --questions $W/v10/q200_$2/eval.jsonl --out $W/v14/ev_$3_$2 --n-asr $4 --n-questions 192 --threads 1 \
    --no-latency --n-best $5 > $W/v14/ev_$3_$2.log 2>&1; t "ev $3 $2 rc=$?"; }
t start
ev asr unseen g 60 1 & ev asr-matched matched g 60 1 & ev asr-clean clean g 60 1 &
ev asr unseen nb8 1 8 & ev asr-matched matched nb8 1 8 & ev asr-clean clean nb8 1 8 & wait
touch $W/v14/ev.done

#!/bin/bash
# session 14: the shipped bundle with the LLM rescoring 16 transcripts, on the same 576 held-out questions
cd /work/main
W=/work/runs
t() { echo "[$(date +%T)] $*"; }
ev() {  # ASR SPLIT
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $W/e2e/bundle --asr $W/e2e/$1/eval.jsonl \
    --questions $W/v10/q200_$2/eval.jsonl --out $W/v14/ev_nb16_$2 --n-asr 1 --n-questions 192 --threads 1 \
    --no-latency --n-best 16 > $W/v14/ev_nb16_$2.log 2>&1; t "ev nb16 $2 rc=$?"; }
t start
ev asr unseen & ev asr-matched matched & ev asr-clean clean & wait
touch $W/v14/ev16.done

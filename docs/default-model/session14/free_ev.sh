#!/bin/bash
# session 14, after ship.sh: agreement (spoken vs typed answer) on the 351 blind free questions, greedy, the shipped
# bundle, the three splits side by side (one thread each)
cd /work/main
G=/work/runs/v14
t() { echo "[$(date +%T)] $*"; }
until [ -e $G/ship.done ]; do sleep 10; done
t start
ev() {  # BUNDLE TAG SPLIT
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $1 --asr /work/runs/e2e/asr/eval.jsonl \
    --questions $G/free2_$3/eval.jsonl --out $G/evf_$2_$3 --n-asr 1 --n-questions 117 --threads 1 --no-latency \
    > $G/evf_$2_$3.log 2>&1; t "evf $2 $3 rc=$?"; }
ev /work/main/assistant/default_model s14 unseen & ev /work/main/assistant/default_model s14 matched &
ev /work/main/assistant/default_model s14 clean; wait
touch $G/free_ev.done

#!/bin/bash
# session 14, after ship.sh: agreement (spoken vs typed answer) on the 351 blind free questions, greedy, the shipped
# bundle (session 14) and session 13's (/work/runs/e2e_s13/bundle), one core each
cd /work/main
G=/work/runs/v14
t() { echo "[$(date +%T)] $*"; }
until [ -e $G/ship.done ]; do sleep 20; done
t start
ev() {  # BUNDLE TAG SPLIT
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $1 --asr /work/runs/e2e/asr/eval.jsonl \
    --questions $G/free2_$3/eval.jsonl --out $G/evf_$2_$3 --n-asr 1 --n-questions 117 --threads 1 --no-latency \
    > $G/evf_$2_$3.log 2>&1; t "evf $2 $3 rc=$?"; }
for a in unseen matched clean; do
  ev /work/main/assistant/default_model s14 $a & ev /work/runs/e2e_s13/bundle s13 $a; wait
done
touch $G/free_ev.done

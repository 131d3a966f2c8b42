#!/bin/bash
# session 15, after the fix of the system prompt's KV (engine: decoded in a batch of its own): the shipped bundle's
# agreement again, as sessions 14's free_ev.sh, ev.sh and ev16.sh measured it (one thread each)
set -uo pipefail
cd /work/main
W=/work/runs
B=/work/main/assistant/default_model
O=$W/v15
t() { echo "[$(date +%T)] $*"; }
ev() {  # ASR_MANIFEST QUESTIONS OUT N_ASR N_QUESTIONS N_BEST
  OMP_NUM_THREADS=1 .venv/bin/llasm-assistant evaluate --bundle $B --asr $1 --questions $2 --out $O/$3 \
    --n-asr $4 --n-questions $5 --threads 1 --no-latency --n-best $6 > $O/$3.log 2>&1; t "$3 rc=$?"; }
t start
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v14/free2_$s/eval.jsonl evf_g_$s 1 117 1 & done; wait
ev $W/e2e/asr/eval.jsonl $W/v10/q200_unseen/eval.jsonl ev_g_unseen 60 192 1 &
ev $W/e2e/asr-matched/eval.jsonl $W/v10/q200_matched/eval.jsonl ev_g_matched 60 192 1 &
ev $W/e2e/asr-clean/eval.jsonl $W/v10/q200_clean/eval.jsonl ev_g_clean 60 192 1 &
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v10/q200_$s/eval.jsonl ev_nb8_$s 1 192 8 & done; wait
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v10/q200_$s/eval.jsonl ev_nb16_$s 1 192 16 & done; wait
touch $O/ev_all.done

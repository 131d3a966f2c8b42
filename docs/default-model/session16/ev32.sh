#!/bin/bash
# session 16: agreement when the LLM rescores 32 transcripts (prefix-tree scoring, commit 2551b52), against 16,
# on the 576 template questions and the 351 blind free questions (one thread each, code from a clone of 2551b52)
set -uo pipefail
cd /work/runs/v16/code
W=/work/runs
B=/work/runs/v16/code/assistant/default_model
O=$W/v16
t() { echo "[$(date +%T)] $*"; }
ev() {  # ASR_MANIFEST QUESTIONS OUT N_ASR N_QUESTIONS N_BEST
  OMP_NUM_THREADS=1 /work/main/.venv/bin/python -c "import sys; from assistant.cli import main; sys.argv[0]='llasm-assistant'; sys.exit(main())" \
    evaluate --bundle $B --asr $1 --questions $2 --out $O/$3 \
    --n-asr $4 --n-questions $5 --threads 1 --no-latency --n-best $6 > $O/$3.log 2>&1; t "$3 rc=$?"; }
t start
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v10/q200_$s/eval.jsonl ev_nb32_$s 1 192 32 & done; wait
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v14/free2_$s/eval.jsonl evf_nb32_$s 1 117 32 & done; wait
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v14/free2_$s/eval.jsonl evf_nb16_$s 1 117 16 & done; wait
touch $O/ev32.done

#!/bin/bash
# session 16: one-shot agreement if the LLM rescored 3 transcripts (first token 139 ms median, bench4.txt), on the
# 576 template and 351 blind free questions (one thread each, code from a clone of the session's last commit)
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
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v14/free2_$s/eval.jsonl evf_nb3_$s 1 117 3 & done; wait
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v10/q200_$s/eval.jsonl ev_nb3_$s 1 192 3 & done; wait
touch $O/ev3.done

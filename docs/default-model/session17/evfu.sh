#!/bin/bash
# session 17 (code: a clone of the commit that makes hands-free fuse): hands-free latency alone, then agreement
# with fusion 0.5 + 4 transcripts on the 576 template and 351 blind free questions (one thread each)
set -uo pipefail
cd /work/runs/v17/code
W=/work/runs
B=/work/runs/v17/code/assistant/default_model
O=$W/v17
py=/work/main/.venv/bin/python
t() { echo "[$(date +%T)] $*"; }
t start
$py scripts/handsfree_ab.py /work/runs/v14/talk.wav --threads 2 --repeats 1 --n-best 4 --fusion 0.5 > $O/hf_fu4.log 2>&1; t "handsfree fusion nb4 rc=$?"
ev() {  # ASR_MANIFEST QUESTIONS OUT N_ASR N_QUESTIONS
  OMP_NUM_THREADS=1 $py -c "import sys; from assistant.cli import main; sys.argv[0]='llasm-assistant'; sys.exit(main())" \
    evaluate --bundle $B --asr $1 --questions $2 --out $O/$3 \
    --n-asr $4 --n-questions $5 --threads 1 --no-latency --n-best 4 --fusion 0.5 > $O/$3.log 2>&1; t "$3 rc=$?"; }
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v14/free2_$s/eval.jsonl evf_fu4_$s 1 117 & done; wait
for s in unseen matched clean; do ev $W/e2e/asr/eval.jsonl $W/v10/q200_$s/eval.jsonl ev_fu4_$s 1 192 & done; wait
touch $O/evfu.done

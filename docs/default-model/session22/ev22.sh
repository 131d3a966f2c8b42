#!/bin/bash
# session 22: merge_spellings (fff2aba) on the held-out sets, the shipped bundle, one thread a run: one-shot and
# hands-free (--n-best 4 --fusion 0.5) on the 576 template questions and the 351 blind ones; two runs at a time
set -uo pipefail
cd WORKTREE
export PYTHONPATH=WORKTREE
V=/work/runs/v19
W=/work/runs/v22
B=assistant/default_model
t() { echo "[$(date +%T)] $*"; }
ev() {  # QUESTIONS OUT N_QUESTIONS [ARGS]
  q=$1; o=$2; n=$3; shift 3
  OMP_NUM_THREADS=1 .venv/bin/python -m assistant.cli evaluate --bundle $B --asr $V/asr/eval.jsonl --questions $q --out $W/$o \
    --n-asr 1 --n-questions $n --threads 1 --no-latency "$@" > $W/$o.log 2>&1; t "$o rc=$?"; }
HF="--n-best 4 --fusion 0.5"
t start
ev $V/q200_unseen/eval.jsonl ev_unseen 192 & ev $V/q200_matched/eval.jsonl ev_matched 192 & wait
ev $V/q200_clean/eval.jsonl ev_clean 192 & ev $V/q200_unseen/eval.jsonl evhf_unseen 192 $HF & wait
ev $V/q200_matched/eval.jsonl evhf_matched 192 $HF & ev $V/q200_clean/eval.jsonl evhf_clean 192 $HF & wait
touch $W/ev22_templates.done
for s in unseen matched clean; do ev $V/free2_$s/eval.jsonl evf_$s 117 & ev $V/free2_$s/eval.jsonl evhff_$s 117 $HF & wait; done
touch $W/ev22.done
